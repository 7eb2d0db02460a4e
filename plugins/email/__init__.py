"""The ``email`` destination: alerts as multipart text + HTML mail over SMTP (SPEC §5 "email").

One SMTP session per delivery carries the message to every To and Cc address. TLS is verified
by default (the system trust store, ``SSL_CERT_FILE`` and ``ca_file``); ``security: none`` is
allowed only towards loopback relays unless ``allow_insecure: true`` says otherwise.

Header injection is impossible by construction: every address is parsed and checked when the
config is loaded, text that goes into a header is collapsed to one line, and the message is an
:class:`email.message.EmailMessage` with the strict default policy, which refuses any header value
that still holds a line break.

The package, in the order a delivery uses it:

* :mod:`.addresses`: mail addresses and header text, checked;
* :mod:`.config`: the options (:class:`EmailConfig`), and Apprise's ``mailto://`` URLs read as them;
* :mod:`.compose`: the message: subject, text and HTML parts, headers;
* :mod:`.transport`: the SMTP session: TLS, the one-AUTH login, the attempt's deadline;
* :mod:`.outcomes`: what the session's end means (delivered, retry or failed, with a hint);
* :mod:`.sender`: :class:`EmailSender`, which puts them together for each notification.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from armor_notify import DestinationType, Sender, hookimpl

from .addresses import parse_address
from .config import EmailConfig, from_mailto_url

if TYPE_CHECKING:
    from .compose import build_email as build_email
    from .compose import email_subject as email_subject
    from .sender import EmailSender as EmailSender

# Checking a config needs only the models; composing and sending (smtplib, ssl, email.message)
# are imported when the first sender is made, so `armor-notify route` and `validate` skip them.
_LATER = {"EmailSender": "sender", "build_email": "compose", "email_subject": "compose"}


def __getattr__(name: str) -> Any:
    if name not in _LATER:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LATER[name]}", __name__), name)


def _sender(config: EmailConfig) -> Sender:
    from .sender import EmailSender

    return EmailSender(config)

__all__ = [
    "EMAIL",
    "EmailConfig",
    "EmailSender",
    "build_email",
    "email_subject",
    "parse_address",
    "register_destination_types",
]

EMAIL = DestinationType(
    name="email",
    config_model=EmailConfig,
    sender=_sender,
    display_name="email",
    send_resolved_default=False,
    default_rate_limit="none",
    url_schemes=("mailto", "mailtos"),
    from_url=from_mailto_url,
    test_reminder="Check the recipients' inboxes (and spam folders) for the test email.",
    supports_digest=True,
)


@hookimpl
def register_destination_types(register: Callable[[DestinationType], None]) -> None:
    """Register the ``email`` destination type."""
    register(EMAIL)
