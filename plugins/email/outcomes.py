"""What happened in an SMTP session, as an :class:`~armor_notify.Outcome`: the server's own reply,
where, and a hint at what to do.

4xx replies, timeouts and network errors are retried; 5xx replies, TLS and certificate problems
and refused logins are not. Every reply is masked for the password before it is shown.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from typing import Any

from armor_notify import Outcome
from armor_notify.secrets import redact

from .config import EmailConfig, host_port
from .transport import NoLoginMechanism, StartTLSUnavailable

__all__ = ["SmtpOutcomes"]


class SmtpOutcomes:
    """The outcomes of sessions with one configured server."""

    def __init__(self, config: EmailConfig, secrets: list[str]) -> None:
        self.config = config
        self.where = host_port(config.host, config.port)
        self._secrets = secrets

    def delivered(
        self, message_id: str, recipients: list[str], refused: dict[str, tuple[int, bytes]]
    ) -> Outcome:
        """The server took the message for ``recipients`` except those in ``refused``."""
        details: dict[str, Any] = {
            "message_id": message_id,
            "recipients": [r for r in recipients if r not in refused],
        }
        if not refused:
            return Outcome.delivered(**details)
        details["refused_recipients"] = {
            address: self.reply(code, text) for address, (code, text) in refused.items()
        }
        listing = "; ".join(f"{a} ({r})" for a, r in details["refused_recipients"].items())
        return Outcome.delivered(
            f"delivered to {len(details['recipients'])} of {len(recipients)} recipients; "
            f"{self.where} refused {listing}",
            **details,
        )

    def reply(self, code: int, text: bytes | str) -> str:
        """An SMTP reply as the server wrote it: ``535 5.7.8 Authentication credentials invalid``."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        joined = " ".join(line.strip() for line in text.splitlines() if line.strip())
        return redact(f"{code} {joined}".strip(), self._secrets)

    def timed_out(self, timeout: float) -> Outcome:
        """No (complete) answer within ``timeout`` seconds: retried."""
        hint = None
        if self.config.security != "ssl" and self.config.port == smtplib.SMTP_SSL_PORT:
            hint = "port 465 expects TLS from the first byte: use security: ssl"
        return Outcome.retry(f"no answer from {self.where} within {timeout:g} s", hint=hint)

    def of_error(self, exc: BaseException, timeout: float) -> Outcome | None:
        """The outcome ``exc`` stands for, or ``None`` for an exception that is not the
        session's (a bug, to be raised)."""
        # In this order: TLS and SMTP errors are OSErrors too.
        return (self._unusable_server(exc) or self._tls(exc) or self._smtp(exc, timeout)
                or self._network(exc, timeout))

    def _unusable_server(self, exc: BaseException) -> Outcome | None:
        where = self.where
        if isinstance(exc, StartTLSUnavailable):
            offered = ", ".join(str(e).upper() for e in exc.args[0]) or "nothing"
            return Outcome.failed(
                f"{where} does not offer STARTTLS (its EHLO lists: {offered}), and "
                "security: starttls never sends mail unencrypted",
                hint="check host and port with your mail provider: port 465 needs "
                "security: ssl; security: none is only for a trusted relay",
            )
        if isinstance(exc, NoLoginMechanism):
            offered = ", ".join(exc.args[0]) or "nothing"
            return Outcome.failed(
                f"{where} offers no login armor-notify uses (its AUTH lists: {offered}); "
                "armor-notify logs in with PLAIN or LOGIN over TLS",
                hint="ask the mail provider for SMTP AUTH PLAIN or LOGIN, or leave out username "
                "and password for a relay that needs no login",
            )
        return None

    def _tls(self, exc: BaseException) -> Outcome | None:
        where = self.where
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
        return None

    def _smtp(self, exc: BaseException, timeout: float) -> Outcome | None:
        where = self.where
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            reply = self.reply(exc.smtp_code, exc.smtp_error)
            return _by_code(
                exc.smtp_code,
                f"{where} refused the login for {self.config.username}: {reply}",
                "check username and password; providers that use two-factor sign-in "
                "(Gmail, Microsoft 365) need an app password or SMTP AUTH enabled for the account",
            )
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            replies = {a: self.reply(c, t) for a, (c, t) in exc.recipients.items()}
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
            reply = self.reply(exc.smtp_code, exc.smtp_error)
            sender_hint = None
            if exc.smtp_code in (550, 551, 553):
                sender_hint = "check that the account may send as the 'from' address"
            return _by_code(
                exc.smtp_code,
                f"{where} answered MAIL FROM:<{_decoded(exc.sender)}> with {reply}",
                sender_hint or _reply_hint(exc.smtp_code, reply),
            )
        if isinstance(exc, smtplib.SMTPResponseException):
            reply = self.reply(exc.smtp_code, exc.smtp_error)
            return _by_code(
                exc.smtp_code, f"{where} answered {reply}", _reply_hint(exc.smtp_code, reply)
            )
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            # smtplib reports a reply that never came as a disconnection; say what happened.
            if isinstance(exc.__context__, TimeoutError):
                return self.timed_out(timeout)
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
        return None

    def _network(self, exc: BaseException, timeout: float) -> Outcome | None:
        where = self.where
        if isinstance(exc, TimeoutError):
            return self.timed_out(timeout)
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


def _by_code(code: int, reason: str, hint: str | None) -> Outcome:
    if 400 <= code < 500 or code < 0:
        return Outcome.retry(reason, hint=hint)
    return Outcome.failed(reason, hint=hint)


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
