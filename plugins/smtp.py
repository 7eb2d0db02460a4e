"""The ``email`` destination: alerts as multipart text + HTML mail over SMTP (SPEC §5 "email").

One SMTP session per delivery carries the message to every To and Cc address. TLS is verified
by default (the system trust store, ``SSL_CERT_FILE`` and ``ca_file``); ``security: none`` is
allowed only towards loopback relays unless ``allow_insecure: true`` says otherwise.

Header injection is impossible by construction: every address is parsed and checked when the
config is loaded, text that goes into a header is collapsed to one line, and the message is an
:class:`email.message.EmailMessage` with the strict default policy, which refuses any header value
that still holds a line break.

The module is called ``smtp`` so that it never shadows the standard library's ``email`` package;
the destination type it registers is ``email``.
"""

from __future__ import annotations

import base64
import functools
import html
import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime, formataddr, make_msgid
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import AfterValidator, ConfigDict, Field, field_validator, model_validator

from armor_notify import (
    DestinationConfig,
    DestinationType,
    Notification,
    Outcome,
    Secret,
    hookimpl,
    is_loopback_host,
)
from armor_notify.alert import one_line
from armor_notify.http import Redactor, deadline, watch, watch_tls
from armor_notify.message import DigestMessage, Message, and_more, build_digest, build_message
from armor_notify.secrets import redact

__all__ = ["EmailConfig", "EmailSender", "build_email", "parse_address"]

log = logging.getLogger(__name__)

Security = Literal["starttls", "ssl", "none"]

DEFAULT_PORTS: Mapping[str, int] = {
    "starttls": 587,
    "ssl": smtplib.SMTP_SSL_PORT,
    "none": smtplib.SMTP_PORT,
}
DEFAULT_SUBJECT_PREFIX = "[AnomalyArmor]"
SUBJECT_MAX_CHARS = 200
"""Long titles are cut here: mail clients show about 80 characters of a subject anyway."""

# Every character str.splitlines() breaks on, plus the other C0 controls and DEL: none of them
# belongs in an address, and \u2028 would otherwise slip through the address parser unnoticed.
_FORBIDDEN_IN_ADDRESS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_DOMAIN_LABEL = re.compile(r"^[^\W_](?:[\w-]*[^\W_])?$")


# -- addresses -------------------------------------------------------------------------------


def parse_address(text: str) -> Address:
    """One mailbox (``a@example.com`` or ``Name <a@example.com>``) or a :class:`ValueError`.

    The standard library's RFC 5322 parser does the parsing; what it tolerates as a "defect"
    (a missing ``>``, a second address after a comma or semicolon, a group) is refused here, so
    that a config value can never add recipients or headers. Internationalised domains are
    stored in their ASCII (IDNA) form so that no server needs SMTPUTF8 for them.
    """
    if _FORBIDDEN_IN_ADDRESS.search(text):
        raise ValueError(f"{text!r} contains a line break or control character")
    stripped = text.strip()
    if not stripped:
        raise ValueError("an empty string is not an email address")
    try:
        header = default_policy.header_factory("To", stripped)
    except (HeaderParseError, IndexError, ValueError) as exc:
        raise ValueError(f"{text!r} is not an email address ({exc})") from None
    if header.defects:
        raise ValueError(f"{text!r} is not an email address ({header.defects[0]})")
    if len(header.addresses) != 1 or len(header.groups) != 1 or header.groups[0].display_name:
        raise ValueError(
            f"{text!r} holds more than one address (or a group): write one address per list item"
        )
    mailbox = header.addresses[0]
    if not mailbox.username or not mailbox.domain:
        raise ValueError(f"{text!r} is not an email address (write user@domain)")
    domain = _ascii_domain(text, mailbox.domain)
    try:
        return Address(display_name=mailbox.display_name, username=mailbox.username, domain=domain)
    except (HeaderParseError, ValueError) as exc:
        raise ValueError(f"{text!r} is not an email address ({exc})") from None


def _ascii_domain(text: str, domain: str) -> str:
    if domain.startswith("["):  # an address literal such as [127.0.0.1]
        return domain
    labels = domain.rstrip(".").split(".")
    if not all(_DOMAIN_LABEL.match(label) for label in labels):
        raise ValueError(f"{text!r} has an invalid domain {domain!r}")
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"{text!r} has an invalid domain {domain!r}") from None


def _normalised_address(text: str) -> str:
    return str(parse_address(text))


EmailAddress = Annotated[str, AfterValidator(_normalised_address)]
"""An address checked with :func:`parse_address` and stored in its normal form."""


# -- config ----------------------------------------------------------------------------------


class EmailConfig(DestinationConfig):
    """The ``email`` destination's options (SPEC §5 "email")."""

    model_config = ConfigDict(populate_by_name=True)

    host: Annotated[str, Field(min_length=1, max_length=253)]
    """The SMTP server (a relay or the provider's submission host)."""
    port: Annotated[int, Field(ge=1, le=65535)]
    """Defaults to 587 for ``starttls``, 465 for ``ssl`` and 25 for ``none``."""
    security: Security = "starttls"
    """``starttls`` (upgrade a plain connection, port 587), ``ssl`` (TLS from the first byte,
    port 465) or ``none`` (no encryption: loopback relays only unless ``allow_insecure``)."""
    username: Annotated[str, Field(min_length=1)] | None = None
    password: Secret | None = None
    from_: Annotated[EmailAddress, Field(alias="from")]
    """The sender, optionally with a display name: ``AnomalyArmor <alerts@example.com>``."""
    to: tuple[EmailAddress, ...]
    cc: tuple[EmailAddress, ...] = ()
    subject_prefix: Annotated[str, Field(max_length=100)] = DEFAULT_SUBJECT_PREFIX
    verify: bool = True
    """Check the server's certificate and host name. Turning it off is logged as a warning."""
    ca_file: str | None = None
    """A PEM file of extra CA certificates to trust (a private CA), besides the system store."""
    allow_insecure: bool = False
    """Allow ``security: none`` towards a host that is not a loopback address."""

    @model_validator(mode="before")
    @classmethod
    def _default_port(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("port") is None:
            security = data.get("security", "starttls")
            default = DEFAULT_PORTS.get(security if isinstance(security, str) else "starttls")
            data = {**data, "port": default or DEFAULT_PORTS["starttls"]}
        return data

    @field_validator("host")
    @classmethod
    def _plain_host(cls, value: str) -> str:
        host = value.strip()
        if not host or _FORBIDDEN_IN_ADDRESS.search(host) or any(c in host for c in " /@"):
            raise ValueError(
                f"{value!r} is not a host name: write only the server's name or IP address "
                "(e.g. smtp.example.com) and put the port in 'port'"
            )
        return host.strip("[]")

    @field_validator("to", "cc", mode="before")
    @classmethod
    def _one_address_as_list(cls, value: Any) -> Any:
        # `to: a@example.com` means a list of one; "a@x, b@y" stays one item and is refused.
        return [value] if isinstance(value, str) else value

    @field_validator("to")
    @classmethod
    def _someone(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Checked after the items (not with Field(min_length=1)) so that one bad address does
        # not also produce a confusing "at least 1 item" error.
        if not value:
            raise ValueError("list at least one recipient address")
        return value

    @field_validator("subject_prefix")
    @classmethod
    def _one_line_prefix(cls, value: str) -> str:
        return _header_text(value)

    @field_validator("ca_file")
    @classmethod
    def _readable_ca_file(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ssl.create_default_context(cafile=value)
        except FileNotFoundError:
            raise ValueError(f"no such file: {value}") from None
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ValueError(
                f"cannot load CA certificates from {value}: {exc}; it must be a PEM file "
                "holding one or more certificates"
            ) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EmailConfig:
        if (self.username is None) != (self.password is None):
            missing = "password" if self.password is None else "username"
            raise ValueError(
                f"username and password go together: {missing} is missing (leave both out "
                "for a relay that needs no login)"
            )
        if self.password is not None and not self.password.get_secret_value():
            raise ValueError("password is empty: leave out username and password, or set both")
        if self.security == "none" and not is_loopback_host(self.host) and not self.allow_insecure:
            raise ValueError(
                f"security: none would send alerts{' and the password' if self.password else ''} "
                f"to {self.host} unencrypted; it is allowed only for loopback relays "
                "(localhost, 127.0.0.0/8, ::1). Use security: starttls (port 587) or ssl "
                "(port 465), or set allow_insecure: true if the network path is trusted"
            )
        return self

    def recipients(self) -> list[str]:
        """Every To and Cc address (``user@domain`` only), each once, in order."""
        seen: dict[str, None] = {}
        for text in (*self.to, *self.cc):
            seen.setdefault(parse_address(text).addr_spec, None)
        return list(seen)

    def describe(self) -> str:
        """``email via smtp.example.com:587 (starttls) to a@x, b@y``: never the password."""
        security: str = self.security
        if self.security == "none":
            security = "none, unencrypted"
        elif not self.verify:
            security += ", certificate NOT verified"
        to = ", ".join(parse_address(a).addr_spec for a in self.to)
        text = f"email via {_host_port(self.host, self.port)} ({security}) to {to}"
        if self.cc:
            text += " cc " + ", ".join(parse_address(a).addr_spec for a in self.cc)
        return text


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- the message -----------------------------------------------------------------------------


def _header_text(text: str) -> str:
    """Text safe for a header: one line, no control characters.

    The Alert model already collapses line breaks in titles and names; doing it again here keeps
    the guarantee for any text, including plugin-provided event types and config values.
    """
    return _CONTROL_CHARACTERS.sub("", one_line(text))


def email_subject(notification: Notification, prefix: str = DEFAULT_SUBJECT_PREFIX) -> str:
    """``[AnomalyArmor] CRITICAL: <title> (<asset>)``; ``RESOLVED:`` and ``Test Alert:`` forms."""
    alert = notification.alert
    if alert.status == "triggered":
        label = "Test Alert" if notification.test else alert.severity.value.upper()
    else:
        label = alert.status.upper() + (" Test Alert" if notification.test else "")
    title = _header_text(alert.title)
    asset = _header_text(alert.asset.name)
    subject = f"{_header_text(prefix)} {label}: {title} ({asset})".strip()
    if len(subject) > SUBJECT_MAX_CHARS:
        subject = subject[: SUBJECT_MAX_CHARS - 1].rstrip() + "…"
    return subject


def _paragraphs(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def render_text(message: Message) -> str:
    """The text/plain part: the same content as the Slack message, as plain lines."""
    lines: list[str] = []
    if message.test_notice:
        lines += [message.test_notice, ""]
    lines += [message.headline, message.title, ""]
    lines += [f"{field.label}: {field.value}" for field in message.fields]
    if message.description:
        lines += ["", *_paragraphs(message.description)]
    if message.freshness:
        lines += ["", message.freshness]
    if message.changes or message.more_changes:
        lines += ["", f"Changes: {message.changes_summary}" if message.changes_summary else ""]
        lines += [f"- {line}" for line in message.change_lines()]
    if message.link:
        lines += ["", f"{message.link_text}: {message.link}"]
    lines += ["", f"Occurred: {message.time_text} · Alert ID: {message.alert_id}"]
    return "\n".join(lines) + "\n"


_STATE_COLOURS = {"critical": "#d32f2f", "warning": "#f9a825", "info": "#1976d2"}
_RESOLVED_COLOUR = "#2e7d32"
_ACKNOWLEDGED_COLOUR = "#757575"


def render_html(message: Message) -> str:
    """The text/html part. Every piece of alert text goes through :func:`html.escape`."""

    def esc(text: str) -> str:
        return html.escape(text, quote=True)

    def block(text: str) -> str:
        return "<br>\n".join(esc(line) for line in _paragraphs(text))

    if message.state == "resolved":
        colour = _RESOLVED_COLOUR
    elif message.state == "acknowledged":
        colour = _ACKNOWLEDGED_COLOUR
    else:
        colour = _STATE_COLOURS.get(message.severity, _STATE_COLOURS["warning"])

    parts: list[str] = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"><title>' + esc(message.summary) + "</title></head>",
        '<body style="font-family:Helvetica,Arial,sans-serif;font-size:14px;color:#212121">',
        f'<div style="border-left:6px solid {colour};padding:4px 12px">',
    ]
    if message.test_notice:
        parts.append(
            '<p style="background:#fff8e1;padding:8px;margin:0 0 8px 0">'
            f"{esc(message.test_notice)}</p>"
        )
    parts += [
        f'<p style="margin:0;color:{colour};font-weight:bold">{esc(message.headline)}</p>',
        f'<h2 style="margin:4px 0 12px 0;font-size:18px">{esc(message.title)}</h2>',
        '<table style="border-collapse:collapse;margin-bottom:12px">',
    ]
    parts += [
        f'<tr><td style="padding:2px 12px 2px 0;color:#616161">{esc(field.label)}</td>'
        f"<td>{esc(field.value)}</td></tr>"
        for field in message.fields
    ]
    parts.append("</table>")
    if message.description:
        parts.append(f"<p>{block(message.description)}</p>")
    if message.freshness:
        parts.append(f"<p>{esc(message.freshness)}</p>")
    if message.changes or message.more_changes:
        if message.changes_summary:
            parts.append(f"<p><b>Changes:</b> {esc(message.changes_summary)}</p>")
        parts.append("<ul>")
        parts += [f"<li>{esc(change.text)}</li>" for change in message.changes]
        if message.more_changes:
            parts.append(f"<li><i>{esc(message.change_lines()[-1])}</i></li>")
        parts.append("</ul>")
    if message.link:
        parts.append(f'<p><a href="{esc(message.link)}">{esc(message.link_text)}</a></p>')
    parts += [
        f'<p style="color:#757575;font-size:12px">Occurred: {esc(message.time_text)} · '
        f"Alert ID: {esc(message.alert_id)}</p>",
        "</div>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def render_digest_text(digest: DigestMessage) -> str:
    """A digest's text/plain part: the headline, then each asset's alerts with their links."""
    lines = [f"Digest: {digest.headline}", ""]
    for group in digest.groups:
        lines.append(group.asset)
        for item in group.items:
            lines.append(f"- {item.text}" + (f" ({item.link})" if item.link else ""))
        lines.append("")
    if digest.left_out:
        lines += [f"{and_more(digest.left_out)} not listed here", ""]
    lines.append(f"{digest.total} alerts · {digest.time_text}")
    return "\n".join(lines) + "\n"


def render_digest_html(digest: DigestMessage) -> str:
    """A digest's text/html part; every piece of alert text goes through :func:`html.escape`."""

    def esc(text: str) -> str:
        return html.escape(text, quote=True)

    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"><title>' + esc(digest.headline) + "</title></head>",
        '<body style="font-family:Helvetica,Arial,sans-serif;font-size:14px;color:#212121">',
        f'<h2 style="font-size:18px">Digest: {esc(digest.headline)}</h2>',
    ]
    for group in digest.groups:
        parts += [f"<h3 style=\"font-size:15px;margin-bottom:4px\">{esc(group.asset)}</h3>",
                  "<ul>"]
        for item in group.items:
            link = (f' · <a href="{esc(item.link)}">{esc(digest.link_text)}</a>'
                    if item.link else "")
            parts.append(f"<li>{esc(item.text)}{link}</li>")
        parts.append("</ul>")
    if digest.left_out:
        parts.append(f"<p><i>{esc(and_more(digest.left_out))} not listed here</i></p>")
    parts += [f'<p style="color:#757575;font-size:12px">{digest.total} alerts · '
              f"{esc(digest.time_text)}</p>", "</body></html>"]
    return "\n".join(parts) + "\n"


def build_email(config: EmailConfig, notification: Notification) -> EmailMessage:
    """The complete message: headers plus a multipart/alternative text + HTML body."""
    sender = parse_address(config.from_)
    msg = EmailMessage(policy=default_policy)
    if notification.digest:
        digest = build_digest(notification)
        subject = f"{_header_text(config.subject_prefix)} Digest: {_header_text(digest.headline)}"
        msg["Subject"] = subject.strip()[:SUBJECT_MAX_CHARS]
        text, html_part = render_digest_text(digest), render_digest_html(digest)
    else:
        content = build_message(notification)
        msg["Subject"] = email_subject(notification, config.subject_prefix)
        text, html_part = render_text(content), render_html(content)
    msg["From"] = sender
    msg["To"] = tuple(parse_address(a) for a in config.to)
    if config.cc:
        msg["Cc"] = tuple(parse_address(a) for a in config.cc)
    msg["Date"] = format_datetime(datetime.now(timezone.utc))
    # An explicit domain avoids make_msgid's socket.getfqdn(), a DNS lookup that can hang.
    msg["Message-ID"] = make_msgid(domain=sender.domain.strip("[]") or "localhost")
    # RFC 3834: tells vacation responders and ticket systems not to answer automatically.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text)
    msg.add_alternative(html_part, subtype="html")
    return msg


# -- sending ---------------------------------------------------------------------------------


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


class _StartTLSUnavailable(Exception):
    """The server did not offer STARTTLS though ``security: starttls`` requires it."""


class _NoLoginMechanism(Exception):
    """The server offers AUTH, but neither PLAIN nor LOGIN."""


def _login_once(smtp: smtplib.SMTP, username: str, password: str) -> None:
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
        raise _NoLoginMechanism(offered)
    if code not in (235, 503):  # 503: already logged in
        raise smtplib.SMTPAuthenticationError(code, reply)


class EmailSender:
    """Sends each notification in its own SMTP session. Built once per configured destination."""

    def __init__(self, config: EmailConfig) -> None:
        self.config = config
        self.where = _host_port(config.host, config.port)
        self._tls = build_tls_context(config) if config.security != "none" else None
        self._secrets = [config.password.get_secret_value()] if config.password else []
        self._redactor = Redactor(self._secrets)  # a server reply may quote the password
        if config.security != "none" and not config.verify:
            log.warning(
                "email via %s: TLS certificate verification is OFF (verify: false); anyone "
                "on the network path can read the alerts and the SMTP password",
                self.where,
            )
        elif config.security == "none" and not is_loopback_host(config.host):
            log.warning(
                "email via %s: security: none sends alerts unencrypted (allow_insecure: true)",
                self.where,
            )

    def send(self, notification: Notification) -> Outcome:
        return self._redactor.outcome(self._send(notification))

    def _send(self, notification: Notification) -> Outcome:
        message = build_email(self.config, notification)
        recipients = self.config.recipients()
        sender = parse_address(self.config.from_).addr_spec
        try:
            # The timeout bounds the whole session (smtplib bounds each read only): a server
            # that drips its replies is cut off when the time is up.
            with deadline(notification.timeout) as cut:
                refused = self._deliver(message, sender, recipients, notification.timeout)
        except Exception as exc:
            if cut.passed:
                return self._timed_out(notification.timeout)
            outcome = self._classify(exc, notification.timeout)
            if outcome is None:
                raise
            return outcome
        details: dict[str, Any] = {
            "message_id": message["Message-ID"],
            "recipients": [r for r in recipients if r not in refused],
        }
        if not refused:
            return Outcome.delivered(**details)
        details["refused_recipients"] = {
            address: self._reply(code, text) for address, (code, text) in refused.items()
        }
        listing = "; ".join(f"{a} ({r})" for a, r in details["refused_recipients"].items())
        return Outcome.delivered(
            f"delivered to {len(details['recipients'])} of {len(recipients)} recipients; "
            f"{self.where} refused {listing}",
            **details,
        )

    def _deliver(
        self, message: EmailMessage, sender: str, recipients: list[str], timeout: float
    ) -> dict[str, tuple[int, bytes]]:
        smtp: smtplib.SMTP
        host, port, name = self.config.host, self.config.port, _ehlo_name()
        if self.config.security == "ssl":
            smtp = _SMTPSSL(host, port, local_hostname=name, timeout=timeout, context=self._tls)
        else:
            smtp = _SMTP(host, port, local_hostname=name, timeout=timeout)
        try:
            smtp.ehlo_or_helo_if_needed()
            if self.config.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise _StartTLSUnavailable(sorted(smtp.esmtp_features))
                smtp.starttls(context=self._tls)
                smtp.ehlo_or_helo_if_needed()
            if self.config.username and self.config.password:
                _login_once(smtp, self.config.username, self.config.password.get_secret_value())
            return smtp.send_message(message, from_addr=sender, to_addrs=recipients)
        finally:
            _close_quietly(smtp)

    # -- classification ----------------------------------------------------------------------

    def _reply(self, code: int, text: bytes | str) -> str:
        """An SMTP reply as the server wrote it: ``535 5.7.8 Authentication credentials invalid``."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        joined = " ".join(line.strip() for line in text.splitlines() if line.strip())
        return redact(f"{code} {joined}".strip(), self._secrets)

    def _by_code(self, code: int, reason: str, hint: str | None) -> Outcome:
        if 400 <= code < 500 or code < 0:
            return Outcome.retry(reason, hint=hint)
        return Outcome.failed(reason, hint=hint)

    def _timed_out(self, timeout: float) -> Outcome:
        hint = None
        if self.config.security != "ssl" and self.config.port == smtplib.SMTP_SSL_PORT:
            hint = "port 465 expects TLS from the first byte: use security: ssl"
        return Outcome.retry(f"no answer from {self.where} within {timeout:g} s", hint=hint)

    def _classify(self, exc: BaseException, timeout: float) -> Outcome | None:
        where = self.where
        if isinstance(exc, _StartTLSUnavailable):
            offered = ", ".join(str(e).upper() for e in exc.args[0]) or "nothing"
            return Outcome.failed(
                f"{where} does not offer STARTTLS (its EHLO lists: {offered}), and "
                "security: starttls never sends mail unencrypted",
                hint="check host and port with your mail provider: port 465 needs "
                "security: ssl; security: none is only for a trusted relay",
            )
        if isinstance(exc, _NoLoginMechanism):
            offered = ", ".join(exc.args[0]) or "nothing"
            return Outcome.failed(
                f"{where} offers no login armor-notify uses (its AUTH lists: {offered}); "
                "armor-notify logs in with PLAIN or LOGIN over TLS",
                hint="ask the mail provider for SMTP AUTH PLAIN or LOGIN, or leave out username "
                "and password for a relay that needs no login",
            )
        if isinstance(exc, ssl.SSLCertVerificationError):
            return Outcome.failed(
                f"TLS certificate of {where} could not be verified: "
                f"{redact(exc.verify_message or str(exc), self._secrets)}",
                hint="if the server uses a private CA, set ca_file to its PEM certificate "
                "(or SSL_CERT_FILE for the whole process); check that host matches a name in "
                "the certificate; verify: false turns the check off (not recommended)",
            )
        if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)):
            return Outcome.retry(f"TLS connection to {where} closed: {exc}")
        if isinstance(exc, ssl.SSLError):
            return Outcome.failed(
                f"TLS handshake with {where} failed: {redact(str(exc), self._secrets)}",
                hint=_security_hint(self.config.security, self.config.port),
            )
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            reply = self._reply(exc.smtp_code, exc.smtp_error)
            return self._by_code(
                exc.smtp_code,
                f"{where} refused the login for {self.config.username}: {reply}",
                "check username and password; providers that use two-factor sign-in "
                "(Gmail, Microsoft 365) need an app password or SMTP AUTH enabled for the account",
            )
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            replies = {a: self._reply(c, t) for a, (c, t) in exc.recipients.items()}
            listing = "; ".join(f"{a} ({r})" for a, r in replies.items())
            reason = f"{where} refused every recipient: {listing}"
            codes = [c for c, _ in exc.recipients.values()]
            if codes and all(400 <= c < 500 for c in codes):
                return Outcome.retry(reason, refused_recipients=replies)
            return Outcome.failed(
                reason,
                hint="check the addresses in to/cc; a relay may also refuse recipients "
                "outside its own domains unless you log in",
                refused_recipients=replies,
            )
        if isinstance(exc, smtplib.SMTPSenderRefused):
            reply = self._reply(exc.smtp_code, exc.smtp_error)
            sender_hint = None
            if exc.smtp_code in (550, 551, 553):
                sender_hint = "check that the account may send as the 'from' address"
            return self._by_code(
                exc.smtp_code,
                f"{where} answered MAIL FROM:<{_decoded(exc.sender)}> with {reply}",
                sender_hint or _reply_hint(exc.smtp_code, reply),
            )
        if isinstance(exc, smtplib.SMTPResponseException):
            reply = self._reply(exc.smtp_code, exc.smtp_error)
            return self._by_code(
                exc.smtp_code, f"{where} answered {reply}", _reply_hint(exc.smtp_code, reply)
            )
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            # smtplib reports a reply that never came as a disconnection; say what happened.
            if isinstance(exc.__context__, TimeoutError):
                return self._timed_out(timeout)
            return Outcome.retry(f"{where} closed the connection: {exc}")
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return Outcome.failed(
                f"{where}: {exc}",
                hint="servers usually offer AUTH only over TLS: use security: starttls or "
                "ssl, or leave out username and password for a relay that needs no login"
                if "AUTH" in str(exc)
                else None,
            )
        if isinstance(exc, smtplib.SMTPException):
            return Outcome.failed(f"{where}: {redact(str(exc), self._secrets)}")
        if isinstance(exc, TimeoutError):
            return self._timed_out(timeout)
        if isinstance(exc, ConnectionRefusedError):
            return Outcome.retry(
                f"connection to {where} refused",
                hint="check that the SMTP server is running and listens on this host and port",
            )
        if isinstance(exc, socket.gaierror):
            return Outcome.retry(
                f"cannot resolve {self.config.host}: {exc.strerror or exc}",
                hint="check the host name",
            )
        if isinstance(exc, OSError):
            return Outcome.retry(f"network error talking to {where}: {exc}")
        return None


def _decoded(text: bytes | str) -> str:
    return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text


def _security_hint(security: str, port: int) -> str:
    if security == "ssl":
        return (
            f"security: ssl expects TLS from the first byte (usually port 465); if port {port} "
            "starts in plain text, use security: starttls"
        )
    return "check the server's TLS settings; if it needs TLS from the first byte, use security: ssl"


def _reply_hint(code: int, reply: str) -> str | None:
    lowered = reply.lower()
    if code == 530 and "starttls" in lowered:
        return "the server requires TLS: use security: starttls"
    if code in (530, 535) or "authentication required" in lowered:
        return "the server requires a login: set username and password"
    if code == 538:
        return "the server accepts logins only over TLS: use security: starttls or ssl"
    if code == 552:
        return "the message is larger than the server accepts"
    if code in (550, 553, 554):
        return "the server refused the message; its reply above says why"
    return None


def _close_quietly(smtp: smtplib.SMTP) -> None:
    # smtplib's context manager raises when QUIT fails, which would turn a delivered message
    # into an error; and a QUIT on a broken connection must not hide the original exception.
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


# -- Apprise's email URLs ----------------------------------------------------------------------

_APPRISE_MODES: Mapping[str, Security] = {"starttls": "starttls", "ssl": "ssl", "insecure": "none"}
_APPRISE_PARAMS = frozenset({"to", "cc", "from", "name", "smtp", "mode", "verify", "user", "pass",
                             "password"})
# Apprise's options for every service: meaningless here (armor-notify times and retries itself).
_APPRISE_IGNORED = frozenset({"format", "overflow", "emojis", "tz", "store", "retry", "wait",
                              "optional", "cto", "rto", "redirect"})
_ADDRESS_LIST = re.compile(r"[\s,;]+")


def _addresses(text: str) -> list[str]:
    return [a for a in _ADDRESS_LIST.split(text) if a]


def _apprise_bool(text: str) -> bool:
    # Apprise's parse_bool: no/false/off/0/never/deny/disable(d) are false, the rest true.
    return not text.lower().startswith(("de", "di", "ne", "f", "n", "of", "0"))


def _from_apprise_url(url: str) -> dict[str, Any]:
    """Apprise's ``mailto://`` and ``mailtos://`` URLs → the native config.

    ``mailto[s]://[user[:password]@]host[:port][/to…]?to=&cc=&from=&name=&smtp=&mode=&verify=``.
    ``host`` is the SMTP server unless ``smtp=`` names one (then ``host`` is only the sender's
    domain); ``mailtos`` is TLS (``starttls`` unless ``mode=ssl``), ``mailto`` unencrypted unless
    ``mode=starttls|ssl``. The sender is ``from=`` (with ``name=``), else ``user@host``; without
    recipients the mail goes to the sender, as Apprise does. Apprise's provider shortcuts
    (``mailto://me:pw@gmail.com`` choosing smtp.gmail.com) are not applied: give ``smtp=``.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    # As Apprise reads it: "+" stays a plus (a+tag@example.com), keys ignore case.
    query = parse_qsl(parts.query.replace("+", "%2B"), keep_blank_values=True)
    params = {key.lower(): value for key, value in query}
    unknown = sorted(set(params) - _APPRISE_PARAMS - _APPRISE_IGNORED)
    if unknown:
        raise ValueError(
            f"parameter '{unknown[0]}' has no equivalent in the email "
            "destination (it takes to, cc, from, name, smtp, mode, verify, user and pass); "
            "use type: apprise to send through Apprise instead"
        )
    domain = parts.hostname or ""
    if not domain:
        raise ValueError(f"write {scheme}://user:password@smtp.example.com/to@example.com")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port is not a number from 1 to 65535") from None

    url_user = unquote(parts.username or "")
    user = params.get("user") or url_user
    password = params.get("pass") or params.get("password") or unquote(parts.password or "")
    if params.get("user") and not password and url_user:
        password = url_user  # Apprise's mailtos://PASSWORD@host?user=login form

    mode = (params.get("mode") or ("starttls" if scheme == "mailtos" else "insecure")).lower()
    if mode not in _APPRISE_MODES:
        raise ValueError(f"mode must be starttls, ssl or insecure, not {mode!r}")
    security = _APPRISE_MODES[mode]
    host = params.get("smtp") or domain
    if security == "none" and not is_loopback_host(host):
        raise ValueError(
            f"{scheme}:// without mode=starttls or mode=ssl sends mail unencrypted; use mailtos:// "
            "(TLS) or add ?mode=starttls (unencrypted mail is allowed only to loopback relays)"
        )

    sender = params.get("from") or ""
    if not sender and user:
        sender = user if "@" in user else f"{user}@{domain}"
    if not sender:
        raise ValueError("no sender address: add ?from=alerts@example.com (or a user@ part)")
    name = params.get("name") or ""
    if name:
        sender = formataddr((_header_text(name), sender))

    to = [a for segment in parts.path.split("/") for a in _addresses(unquote(segment))]
    to += _addresses(params.get("to") or "")
    config: dict[str, Any] = {
        "host": host,
        "security": security,
        "from": sender,
        "to": to or [parse_address(sender).addr_spec],
    }
    if port is not None:
        config["port"] = port
    if params.get("cc"):
        config["cc"] = _addresses(params["cc"])
    if password:
        if not user:
            raise ValueError("a password needs a user name: write user:password@ or ?user=")
        config.update(username=user, password=password)
    if "verify" in params:
        config["verify"] = _apprise_bool(params["verify"])
    return config


@hookimpl
def register_destination_types(register: Callable[[DestinationType], None]) -> None:
    register(
        DestinationType(
            "email",
            EmailConfig,
            EmailSender,
            display_name="email",
            send_resolved_default=False,
            default_rate_limit="none",
            url_schemes=("mailto", "mailtos"),
            from_url=_from_apprise_url,
            test_reminder="Check the recipients' inboxes (and spam folders) for the test email.",
            supports_digest=True,
        )
    )
