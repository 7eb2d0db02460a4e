"""Mail addresses and header text, checked so that no config value or alert text can add a
recipient or a header.

Every address is parsed when the config is loaded (:func:`parse_address`), and text that goes
into a header is collapsed to one line (:func:`header_text`); the message itself is an
:class:`email.message.EmailMessage` with the strict default policy, which refuses any header value
that still holds a line break.
"""

from __future__ import annotations

import re
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.policy import default as default_policy
from typing import Annotated

from pydantic import AfterValidator

from armor_notify.message import one_line

__all__ = ["FORBIDDEN_IN_ADDRESS", "EmailAddress", "header_text", "parse_address"]

# Every character str.splitlines() breaks on, plus the other C0 controls and DEL: none of them
# belongs in an address, and \u2028 would otherwise slip through the address parser unnoticed.
FORBIDDEN_IN_ADDRESS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_DOMAIN_LABEL = re.compile(r"^[^\W_](?:[\w-]*[^\W_])?$")


def parse_address(text: str) -> Address:
    """One mailbox (``a@example.com`` or ``Name <a@example.com>``) or a :class:`ValueError`.

    The standard library's RFC 5322 parser does the parsing; what it tolerates as a "defect"
    (a missing ``>``, a second address after a comma or semicolon, a group) is refused here, so
    that a config value can never add recipients or headers. Internationalised domains are
    stored in their ASCII (IDNA) form so that no server needs SMTPUTF8 for them.
    """
    if FORBIDDEN_IN_ADDRESS.search(text):
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


def header_text(text: str) -> str:
    """Text safe for a header: one line, no control characters.

    The Alert model already collapses line breaks in titles and names; doing it again here keeps
    the guarantee for any text, including plugin-provided event types and config values.
    """
    return _CONTROL_CHARACTERS.sub("", one_line(text))
