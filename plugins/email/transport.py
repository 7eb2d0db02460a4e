"""The SMTP session: connect, TLS, the one-AUTH login and the message, within the attempt's time.

One session per delivery carries the message to every To and Cc address. TLS is verified by
default (the system trust store, ``SSL_CERT_FILE`` and ``ca_file``). The attempt's ``timeout``
bounds the whole session, not each read as smtplib does: a server that drips its replies is cut
off when the time is up (:func:`armor_notify.http.deadline`), and :func:`deliver` then raises
:class:`DeadlinePassed`. Every other error is smtplib's, the ssl module's or the socket's, for
:mod:`.outcomes` to explain.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import smtplib
import socket
import ssl
from collections.abc import Iterator
from email.message import EmailMessage

from armor_notify.http import deadline, watch, watch_tls

from .config import EmailConfig

__all__ = [
    "DeadlinePassed",
    "NoLoginMechanism",
    "StartTLSUnavailable",
    "build_tls_context",
    "deliver",
    "login_once",
]


class DeadlinePassed(Exception):
    """The attempt's time ran out during the session; the exception it caused is the cause."""


class StartTLSUnavailable(Exception):
    """The server did not offer STARTTLS though ``security: starttls`` requires it.

    ``args[0]``: the extensions its EHLO listed.
    """


class NoLoginMechanism(Exception):
    """The server offers AUTH, but neither PLAIN nor LOGIN. ``args[0]``: what it offers."""


def build_tls_context(config: EmailConfig) -> ssl.SSLContext:
    """A client context: verified against the system store (which honours ``SSL_CERT_FILE``) and
    ``ca_file``; unverified only when ``verify: false`` says so.

    Never pass ``context=None`` to smtplib instead: that is an unverified context.
    """
    context = ssl.create_default_context()
    if config.ca_file:
        context.load_verify_locations(cafile=config.ca_file)
    if not config.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return watch_tls(context)  # TLS handshakes count against the attempt's deadline


class _SMTP(smtplib.SMTP):
    """smtplib's client with its socket under the attempt's deadline."""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return watch(super()._get_socket(host, port, timeout))  # type: ignore[misc]


class _SMTPSSL(smtplib.SMTP_SSL):
    """smtplib's implicit-TLS client with its socket under the attempt's deadline."""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return watch(super()._get_socket(host, port, timeout))  # type: ignore[misc]


@functools.cache
def _ehlo_name() -> str:
    """The name this host gives in EHLO, worked out as smtplib does but once per process.

    smtplib repeats ``socket.getfqdn()`` (a DNS lookup that no timeout bounds) on every
    connection unless it is given ``local_hostname``.
    """
    fqdn = socket.getfqdn()
    if "." in fqdn:
        return fqdn
    try:
        return f"[{socket.gethostbyname(socket.gethostname())}]"
    except OSError:
        return "[127.0.0.1]"


def login_once(smtp: smtplib.SMTP, username: str, password: str) -> None:
    """Log in with exactly one AUTH command: PLAIN when the server offers it, else LOGIN.

    ``smtplib.SMTP.login`` tries every offered mechanism in turn with the same password, so one
    wrong password costs two or three failed logins on the server, and providers that lock an
    account after a few failures count each (it also cannot send a non-ASCII password). Both
    mechanisms send the password as it is (UTF-8, base64), which is why armor-notify logs in
    only over TLS (or to a loopback relay). A refusal raises ``SMTPAuthenticationError`` as
    ``login`` does.
    """
    if not smtp.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
    offered = smtp.esmtp_features["auth"].upper().split()

    def b64(text: str) -> str:
        return base64.b64encode(text.encode("utf-8")).decode("ascii")

    if "PLAIN" in offered:  # RFC 4616, with the initial response (RFC 4954)
        code, reply = smtp.docmd("AUTH", "PLAIN " + b64(f"\0{username}\0{password}"))
    elif "LOGIN" in offered:
        code, reply = smtp.docmd("AUTH", "LOGIN " + b64(username))
        if code == 334:
            code, reply = smtp.docmd(b64(password))
    else:
        raise NoLoginMechanism(offered)
    if code not in (235, 503):  # 503: already logged in
        raise smtplib.SMTPAuthenticationError(code, reply)


def deliver(
    config: EmailConfig,
    tls: ssl.SSLContext | None,
    message: EmailMessage,
    sender: str,
    recipients: list[str],
    timeout: float,
) -> dict[str, tuple[int, bytes]]:
    """Carry ``message`` from ``sender`` to ``recipients`` in one session of at most ``timeout``
    seconds; the recipients the server refused (when it took at least one), with its replies.

    ``tls`` is :func:`build_tls_context`'s context (``None`` for ``security: none``).
    """
    try:
        with deadline(timeout) as cut, _session(config, tls, timeout) as smtp:
            if config.username and config.password:
                login_once(smtp, config.username, config.password.get_secret_value())
            return smtp.send_message(message, from_addr=sender, to_addrs=recipients)
    except Exception as exc:
        if cut.passed:
            raise DeadlinePassed from exc
        raise


@contextlib.contextmanager
def _session(
    config: EmailConfig, tls: ssl.SSLContext | None, timeout: float
) -> Iterator[smtplib.SMTP]:
    """A connection past EHLO, secured as ``security`` says; closed (QUIT) on the way out."""
    smtp: smtplib.SMTP
    host, port, name = config.host, config.port, _ehlo_name()
    if config.security == "ssl":
        smtp = _SMTPSSL(host, port, local_hostname=name, timeout=timeout, context=tls)
    else:
        smtp = _SMTP(host, port, local_hostname=name, timeout=timeout)
    try:
        smtp.ehlo_or_helo_if_needed()
        if config.security == "starttls":
            if not smtp.has_extn("starttls"):
                raise StartTLSUnavailable(sorted(smtp.esmtp_features))
            smtp.starttls(context=tls)
            smtp.ehlo_or_helo_if_needed()
        yield smtp
    finally:
        _close_quietly(smtp)


def _close_quietly(smtp: smtplib.SMTP) -> None:
    # smtplib's context manager raises when QUIT fails, which would turn a delivered message
    # into an error; and a QUIT on a broken connection must not hide the original exception.
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()
