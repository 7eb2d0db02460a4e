"""The ``email`` destination's sender: each notification composed, carried and its outcome said."""

from __future__ import annotations

import logging
from typing import Any

from armor_notify import Notification, Outcome, is_loopback_host
from armor_notify.http import Redactor
from armor_notify.templates import TemplateError, template_failed

from .addresses import parse_address
from .compose import build_email
from .config import EmailConfig, host_port
from .outcomes import SmtpOutcomes
from .transport import DeadlinePassed, build_tls_context, deliver

__all__ = ["EmailSender"]

log = logging.getLogger(__name__)


class EmailSender:
    """Sends each notification in its own SMTP session. Built once per configured destination."""

    def __init__(self, config: EmailConfig) -> None:
        self.config = config
        self.where = host_port(config.host, config.port)
        self._tls = build_tls_context(config) if config.security != "none" else None
        secrets = [config.password.get_secret_value()] if config.password else []
        self._redactor = Redactor(secrets)  # a server reply may quote the password
        self._outcomes = SmtpOutcomes(config, secrets)
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

    def preview(self, notification: Notification) -> dict[str, Any]:
        """The message ``send`` would carry: its headers (``Date`` and ``Message-ID`` are made
        when it is sent) and its text and HTML parts."""
        message = build_email(self.config, notification)
        parts = {part.get_content_type(): part.get_content() for part in message.iter_parts()}
        return {"request": f"SMTP {self.where} ({self.config.security}) to "
                           f"{', '.join(self.config.recipients())}",
                "headers": {name: str(value) for name, value in message.items()
                            if name not in ("Date", "Message-ID", "MIME-Version",
                                            "Content-Type")},
                "text": parts.get("text/plain", ""), "html": parts.get("text/html", "")}

    def _send(self, notification: Notification) -> Outcome:
        try:
            message = build_email(self.config, notification)
        except TemplateError as exc:
            return template_failed(exc, notification)
        recipients = self.config.recipients()
        sender = parse_address(self.config.from_).addr_spec
        try:
            refused = deliver(self.config, self._tls, message, sender, recipients,
                              notification.timeout)
        except DeadlinePassed:
            return self._outcomes.timed_out(notification.timeout)
        except Exception as exc:
            outcome = self._outcomes.of_error(exc, notification.timeout)
            if outcome is None:
                raise
            return outcome
        return self._outcomes.delivered(message["Message-ID"], recipients, refused)
