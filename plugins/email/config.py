"""The ``email`` destination's options (:class:`EmailConfig`), and Apprise's ``mailto://`` and
``mailtos://`` URLs read as those options (:func:`from_mailto_url`)."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from email.utils import formataddr
from typing import Annotated, Any, Literal
from urllib.parse import unquote

from pydantic import ConfigDict, Field, field_validator, model_validator

from armor_notify import DestinationConfig, Secret, StrictModel, is_loopback_host
from armor_notify.templates import Template, TemplateText

from ..apprise_urls import apprise_bool, read_apprise_url
from .addresses import FORBIDDEN_IN_ADDRESS, EmailAddress, header_text, parse_address

__all__ = ["DEFAULT_SUBJECT_PREFIX", "EmailConfig", "Security", "from_mailto_url", "host_port"]

Security = Literal["starttls", "ssl", "none"]

DEFAULT_PORTS: Mapping[str, int] = {
    "starttls": 587,
    "ssl": 465,  # smtplib.SMTP_SSL_PORT (smtplib is imported only to send)
    "none": 25,  # smtplib.SMTP_PORT
}
DEFAULT_SUBJECT_PREFIX = "[AnomalyArmor]"


SUBJECT_MAX_CHARS = 200
"""Long titles are cut here: mail clients show about 80 characters of a subject anyway."""


def escape_html(text: str) -> str:
    """HTML escaping for the values an HTML template prints (quotes too: they may sit in an
    attribute)."""
    return html.escape(text, quote=True)


class EmailTemplate(StrictModel):
    """``template:`` of an email destination (see docs/templates.md): any of the subject (one
    line), the text part and the HTML part; what is not given stays built in."""

    subject: Annotated[Template, TemplateText(single_line=True,
                                              max_length=SUBJECT_MAX_CHARS)] | None = None
    text: Annotated[Template, TemplateText()] | None = None
    html: Annotated[Template, TemplateText(escape=escape_html)] | None = None


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
    template: EmailTemplate | None = None
    """The subject and the text and HTML parts, from templates of the alert's fields."""
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
        if not host or FORBIDDEN_IN_ADDRESS.search(host) or any(c in host for c in " /@"):
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
        return header_text(value)

    @field_validator("ca_file")
    @classmethod
    def _readable_ca_file(cls, value: str | None) -> str | None:
        if value is None:
            return None
        import ssl

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
        text = f"email via {host_port(self.host, self.port)} ({security}) to {to}"
        if self.cc:
            text += " cc " + ", ".join(parse_address(a).addr_spec for a in self.cc)
        return text


def host_port(host: str, port: int) -> str:
    """``smtp.example.com:587``, ``[::1]:25``: the server as reasons and warnings name it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- Apprise's email URLs ----------------------------------------------------------------------

_APPRISE_MODES: Mapping[str, Security] = {"starttls": "starttls", "ssl": "ssl", "insecure": "none"}
_APPRISE_PARAMS = frozenset({"to", "cc", "from", "name", "smtp", "mode", "verify", "user", "pass",
                             "password"})
_ADDRESS_LIST = re.compile(r"[\s,;]+")


def _addresses(text: str) -> list[str]:
    return [a for a in _ADDRESS_LIST.split(text) if a]


def from_mailto_url(url: str) -> dict[str, Any]:
    """Apprise's ``mailto://`` and ``mailtos://`` URLs → the native config.

    ``mailto[s]://[user[:password]@]host[:port][/to…]?to=&cc=&from=&name=&smtp=&mode=&verify=``.
    ``host`` is the SMTP server unless ``smtp=`` names one (then ``host`` is only the sender's
    domain); ``mailtos`` is TLS (``starttls`` unless ``mode=ssl``), ``mailto`` unencrypted unless
    ``mode=starttls|ssl``. The sender is ``from=`` (with ``name=``), else ``user@host``; without
    recipients the mail goes to the sender, as Apprise does. Apprise's provider shortcuts
    (``mailto://me:pw@gmail.com`` choosing smtp.gmail.com) are not applied: give ``smtp=``.
    """
    parts, params = read_apprise_url(
        url, takes=_APPRISE_PARAMS,
        unknown=lambda name: f"parameter '{name}' has no equivalent in the email destination "
        "(it takes to, cc, from, name, smtp, mode, verify, user and pass); use type: apprise "
        "to send through Apprise instead",
    )
    scheme = parts.scheme.lower()
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
        sender = formataddr((header_text(name), sender))

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
        config["verify"] = apprise_bool(params["verify"])
    return config
