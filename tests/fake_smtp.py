"""Real SMTP servers on 127.0.0.1 for tests: aiosmtpd Controllers that record what they receive.

Three variants, as mail providers run them:

- :func:`starttls_server`: submission on a plain connection upgraded with STARTTLS, AUTH
  required and offered only after TLS (``require_starttls=True``, ``auth_required=True``);
- :func:`implicit_tls_server`: TLS from the first byte (port 465 style), AUTH required;
- :func:`plain_server`: no TLS and no AUTH, like a loopback relay.

TLS servers present a certificate for ``127.0.0.1``/``localhost`` issued by a throwaway
``trustme`` CA; :attr:`FakeSMTPServer.ca_file` is that CA in PEM form for the client to trust.

:class:`RecordingHandler` records every accepted message with its envelope and the login that
sent it, and can be told to answer MAIL, RCPT or DATA with any reply (``451 4.3.0 …``) or to refuse
chosen recipients.

aiosmtpd warns in its server thread, where pytest's ``filterwarnings = error`` would turn the
warning into a broken SMTP session. Call :func:`ignore_known_aiosmtpd_warnings` from a
function-scoped fixture: it ignores exactly the two expected warnings, for that test only.
"""

from __future__ import annotations

import socket
import ssl
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

HOST = "127.0.0.1"


def ignore_known_aiosmtpd_warnings() -> None:
    """Ignore the warnings aiosmtpd 1.4 emits by design, and nothing else.

    - ``Session.login_data is deprecated``: aiosmtpd itself sets the legacy attribute on every
      successful AUTH (a ``DeprecationWarning`` in some releases, a log line in others);
    - ``Requiring AUTH while not requiring TLS``: a ``UserWarning`` for ``auth_require_tls=False``,
      which implicit TLS needs because aiosmtpd counts only STARTTLS as TLS.

    Call it inside a test (or a function-scoped fixture): pytest restores the filters afterwards.
    """
    warnings.filterwarnings(
        "ignore",
        message=r"Session\.login_data is deprecated",
        category=DeprecationWarning,
    )
    warnings.filterwarnings(
        "ignore",
        message=r"Requiring AUTH while not requiring TLS",
        category=UserWarning,
        module=r"aiosmtpd\.smtp",
    )


def free_port() -> int:
    """A port that was free a moment ago (aiosmtpd cannot start on port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def closed_port() -> int:
    """A port where nothing listens, so connecting is refused."""
    return free_port()


@dataclass
class Received:
    """One message the server accepted, with its SMTP envelope."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    peer: Any
    """The client's (host, port): one value per TCP connection."""
    login: str | None
    """The user name that authenticated this session, if any."""
    tls: bool
    """True when the session ran over STARTTLS (implicit TLS is not visible to handlers)."""

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.content, policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class RecordingHandler:
    """Accepts everything unless told otherwise, and records what it accepted.

    Set ``mail_reply``, ``rcpt_replies[address]``, ``rcpt_reply`` (every recipient) or
    ``data_reply`` to a full SMTP reply such as ``"550 5.1.1 <x@y>: Recipient address rejected"``
    to answer that command with it.
    """

    mail_reply: str | None = None
    rcpt_reply: str | None = None
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    received: list[Received] = field(default_factory=list)
    peers: list[Any] = field(default_factory=list)
    """The peer of every EHLO/HELO, so tests can count connections."""
    rcpt_seen: list[str] = field(default_factory=list)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        if session.peer not in self.peers:
            self.peers.append(session.peer)
        session.host_name = hostname
        return responses

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        self.rcpt_seen.append(address)
        reply = self.rcpt_replies.get(address) or self.rcpt_reply
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply:
            return self.data_reply
        auth = session.auth_data
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        self.received.append(
            Received(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                content=content,
                peer=session.peer,
                login=auth.login.decode() if isinstance(auth, LoginPassword) else None,
                tls=session.ssl is not None,
            )
        )
        return "250 2.0.0 Message accepted for delivery"


@dataclass
class FakeSMTPServer:
    """A running server: where it listens, what it received, and the CA that signed its cert."""

    controller: Controller
    handler: RecordingHandler
    port: int
    ca_file: Path | None = None
    username: str | None = None
    password: str | None = None
    host: str = HOST
    auth_attempts: list[str] = field(default_factory=list)
    """The mechanism of every AUTH command the server judged (``PLAIN``, ``LOGIN``), in order."""

    def config(self, **overrides: Any) -> dict[str, Any]:
        """An ``email`` destination config (without ``type``) that reaches this server."""
        base: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "from": "AnomalyArmor <alerts@example.com>",
            "to": ["data-eng@example.com"],
            "timeout": 5,
        }
        if self.ca_file is not None:
            base["ca_file"] = str(self.ca_file)
        if self.username is not None:
            base["username"] = self.username
            base["password"] = self.password
        base.update(overrides)
        return base


def _authenticator(username: str, password: str, attempts: list[str] | None = None,
                   echo_password: bool = False) -> Any:
    """Accepts ``username``/``password``; appends each AUTH's mechanism to ``attempts``."""
    attempts = [] if attempts is None else attempts

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        attempts.append(mechanism)
        accepted = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == username.encode()
            and auth_data.password == password.encode()
        )
        message = None
        if echo_password and not accepted and isinstance(auth_data, LoginPassword):
            sent = auth_data.password.decode(errors="replace")
            message = f"535 5.7.8 Authentication credentials invalid (password {sent!r})"
        # handled=False lets aiosmtpd send its own "535 5.7.8 Authentication credentials invalid".
        return AuthResult(success=accepted, handled=False, message=message, auth_data=auth_data)

    return authenticate


def _server_tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    ca = trustme.CA()
    certificate = ca.issue_cert(HOST, "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(context)
    ca_file = tmp_path / "fake-smtp-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return context, ca_file


@contextmanager
def _running(server: FakeSMTPServer) -> Iterator[FakeSMTPServer]:
    server.controller.start()
    try:
        yield server
    finally:
        server.controller.stop()


@contextmanager
def starttls_server(
    tmp_path: Path, *, username: str = "alerts@example.com", password: str = "s3cret-app-password",
    without_mechanisms: tuple[str, ...] = (), echo_password: bool = False,
) -> Iterator[FakeSMTPServer]:
    """Port-587 style: STARTTLS required before anything else, then AUTH required (offering
    ``LOGIN PLAIN``, less ``without_mechanisms``). ``echo_password``: a refused login's 535
    reply quotes the password the client sent."""
    context, ca_file = _server_tls(tmp_path)
    handler = RecordingHandler()
    port = free_port()
    attempts: list[str] = []
    controller = Controller(
        handler,
        hostname=HOST,
        port=port,
        server_hostname="fake-smtp.test",
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        auth_exclude_mechanism=without_mechanisms,
        authenticator=_authenticator(username, password, attempts, echo_password),
    )
    server = FakeSMTPServer(controller, handler, port, ca_file, username, password,
                            auth_attempts=attempts)
    with _running(server):
        yield server


@contextmanager
def implicit_tls_server(
    tmp_path: Path, *, username: str = "alerts@example.com", password: str = "s3cret-app-password"
) -> Iterator[FakeSMTPServer]:
    """Port-465 style: TLS from the first byte, AUTH required."""
    context, ca_file = _server_tls(tmp_path)
    handler = RecordingHandler()
    port = free_port()
    attempts: list[str] = []
    controller = Controller(
        handler,
        hostname=HOST,
        port=port,
        server_hostname="fake-smtp.test",
        ssl_context=context,
        auth_required=True,
        # aiosmtpd does not count implicit TLS as TLS: without this it never offers AUTH.
        auth_require_tls=False,
        authenticator=_authenticator(username, password, attempts),
    )
    server = FakeSMTPServer(controller, handler, port, ca_file, username, password,
                            auth_attempts=attempts)
    with _running(server):
        yield server


@contextmanager
def plain_server() -> Iterator[FakeSMTPServer]:
    """A loopback relay: no TLS, no AUTH."""
    handler = RecordingHandler()
    port = free_port()
    controller = Controller(handler, hostname=HOST, port=port, server_hostname="fake-smtp.test")
    server = FakeSMTPServer(controller, handler, port)
    with _running(server):
        yield server
