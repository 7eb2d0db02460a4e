"""The ``apprise`` destination: every service Apprise supports, through one bridge.

A destination is ``type: apprise`` with ``url: <Apprise URL>``, or a bare URL string whose scheme
no native type claims (``msteams://…``, ``discord://…``, ``json://…``): the type is registered as
the URL fallback (``url_fallback=True``), so bare ``pagerduty://``, ``slack://``, ``mailto://`` and
``https://hooks.slack.com/services/…`` URLs still become the native destinations.

Apprise is optional (``pip install 'armor-notify[apprise]'``) and imported only inside the
functions that need it, so ``import armor_notify`` and ``armor-notify plugins`` never import it.
A config that uses the bridge imports it while it is validated.

Every Apprise service object the bridge builds gets these settings, so that Apprise adds no
hidden seconds and the core alone decides about retries:

* ``request_rate_per_sec = 0``: Apprise's per-instance throttle (5.5 s between two sends of one
  instance by default, 1.2 s for Slack) is off; use the destination's ``rate_limit`` instead;
* ``retry = 0`` and ``wait = 0``: no Apprise-level retries (``?retry=``/``?wait=`` in the URL are
  overridden); armor-notify retries with backoff, jitter and its deadline;
* ``socket_connect_timeout`` and ``socket_read_timeout`` (Apprise's ``cto``/``rto``) = the
  destination's ``timeout`` (``cto``/``rto`` in the URL are overridden);
* on Apprise 2.x the asset's ``service_timeout = 0`` (no second, 60 s budget of Apprise's own: the
  service runs in the calling worker thread, which the core times) and ``storage_mode = memory``.

Results: one destination is one Apprise service, so the call's result is that service's result.
Apprise gives only success or failure; its reason is what it logs. The bridge collects the
``apprise`` logger's warnings and errors emitted during the call (a handler that records only for
the call running in the current context, so concurrent deliveries never mix their reasons) and
classifies: delivered on success; **failed** (permanent) when every HTTP status Apprise reports
(its ``error=NNN`` convention) is a 4xx other than 408, 425 and 429; otherwise **retry**
(5xx, 429, timeouts, connection errors, and failures whose reason gives no status).
"""

from __future__ import annotations

import contextvars
import difflib
import functools
import hashlib
import inspect
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import ConfigDict, SecretStr, field_validator

from armor_notify import (
    DestinationConfig,
    DestinationType,
    Notification,
    Outcome,
    hookimpl,
    is_loopback_host,
)
from armor_notify.secrets import ELLIPSIS, redact

if TYPE_CHECKING:
    import logging

    from armor_notify.message import Message

__all__ = [
    "APPRISE",
    "APPRISE_MISSING",
    "AppriseConfig",
    "AppriseSender",
    "AppriseUrl",
    "check_url",
    "classify",
    "render_markdown",
    "render_text",
]


APPRISE_MISSING = (
    "the apprise destination needs the apprise package: pip install 'armor-notify[apprise]'"
)
APPRISE_LOGGER = "apprise"

# 4xx answers that say "later", not "never".
RETRYABLE_4XX = frozenset({408, 425, 429})
# Apprise's plugins end a failure warning with "error=<HTTP status>".
_STATUS = re.compile(r"\berror=(\d{3})\b")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
# Apprise services that speak plain http to a host named in the URL; their secure twins end in s.
_PLAIN_HTTP = frozenset({"json", "form", "xml"})
_MAX_REASON = 500
_NO_SERVICE = "Apprise has no service for"
# Schemes that Apprise releases dropped, with what replaced them.
_RETIRED = {
    "msteams": "Microsoft retired Office 365 connectors (recent Apprise releases have no "
    "msteams://); post to Teams through a Power Automate workflow with workflows:// instead",
}

_HINTS = {
    401: "the service refused the credentials in the Apprise URL: check its token or password",
    403: "the service refused the credentials in the Apprise URL: check its token or password",
    404: "the service does not know this endpoint: check the ids in the Apprise URL "
    "(a deleted webhook answers 404)",
}


class AppriseMissing(ValueError):
    """The apprise package is not installed."""


_loaded = False
_load_lock = threading.Lock()


def _apprise() -> Any:
    """The apprise package, imported now (and only now), with its service plugins loaded."""
    global _loaded
    try:
        import apprise
    except ImportError:
        raise AppriseMissing(APPRISE_MISSING) from None
    with _load_lock:
        if not _loaded:
            # Apprise loads its ~190 service modules on first use; its email module imports
            # imghdr for PGPy, which warns (deprecated since Python 3.11). Loading them once,
            # here, keeps that warning, which no user can act on, out of every later call.
            manager = getattr(apprise, "NotificationManager", None)
            load = getattr(manager(), "load_modules", None) if manager is not None else None
            if callable(load):
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="'imghdr' is deprecated",
                                            category=DeprecationWarning)
                    load()
            _loaded = True
    return apprise


# -- URLs and secrets ----------------------------------------------------------------------------


def url_scheme(url: str) -> str:
    match = _SCHEME.match(url)
    return match.group(1).lower() if match else ""


def mask_apprise_url(url: str) -> str:
    """``scheme://…``: Apprise URLs carry tokens in any part (host, user, path), so only the
    scheme is shown."""
    scheme = url_scheme(url)
    return f"{scheme}://{ELLIPSIS}" if scheme else ELLIPSIS


class AppriseUrl(SecretStr):
    """An Apprise URL: shown everywhere as ``scheme://…``."""

    def _display(self) -> str:
        return mask_apprise_url(self.get_secret_value())


def secret_parts(url: str) -> list[str]:
    """The pieces of an Apprise URL that may be secret, to mask wherever Apprise's words quote them.

    Everything but the scheme may be a token; a host with a dot (a domain, an IP address) or
    ``localhost`` is kept, so that reasons still say where a connection failed.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    userinfo, _, hostport = parts.netloc.rpartition("@")
    short = [userinfo, userinfo.partition(":")[2]]  # the password, and the user with it
    long = [*parts.path.split("/")]
    long += [pair.partition("=")[2] for pair in parts.query.split("&")]  # as written
    long += [value for _, value in parse_qsl(parts.query, keep_blank_values=True)]  # decoded
    for host in {hostport, hostport.split(":")[0]}:
        if "." not in host and host.lower() != "localhost" and not host.startswith("["):
            long.append(host)
    found = {url} | {p for p in short if len(p) >= 4} | {p for p in long if len(p) >= 8}
    found |= {unquote(p) for p in found}
    return sorted(found, key=len, reverse=True)


# -- what Apprise logs during one call -----------------------------------------------------------

_CALL_LOG: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "armor_notify_apprise_call_log", default=None
)


class _CallLog:
    """Takes the ``apprise`` logger's records emitted by armor-notify's own calls into Apprise.

    One filter on the ``apprise`` logger serves every thread: each call sets its own list in a
    context variable (Apprise copies the context into the worker threads it uses). A record from
    such a call is kept (warnings and errors: Apprise's reasons) and stops there, because the
    delivery reports it, masked; Apprise's own messages may quote a URL in full ("Unparseable
    URL …"). Records from any other context (unrelated Apprise use) pass through untouched.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        import logging

        sink = _CALL_LOG.get()
        if sink is None:
            return True
        # Apprise marks messages that must stay out of captured results (apprise_capture=False).
        if record.levelno >= logging.WARNING and getattr(record, "apprise_capture", True):
            try:
                sink.append(record.getMessage())
            except Exception:  # a malformed log call must not break the delivery
                sink.append(str(record.msg))
        return False


_FILTER = _CallLog()


@contextmanager
def captured_log() -> Iterator[list[str]]:
    """The ``apprise`` logger's warnings and errors from this context while inside; none of its
    records from this context reach the application's log handlers."""
    import logging  # here, not at import: checking a config needs no logging (Apprise loads it)

    # addFilter is idempotent.
    logging.getLogger(APPRISE_LOGGER).addFilter(_FILTER)
    messages: list[str] = []
    token = _CALL_LOG.set(messages)
    try:
        yield messages
    finally:
        _CALL_LOG.reset(token)


# -- checking a URL ------------------------------------------------------------------------------


def _asset(apprise: Any) -> Any:
    """An asset with no time budget of Apprise's own and no persistent store on disk."""
    params = inspect.signature(apprise.AppriseAsset).parameters
    options: dict[str, Any] = {}
    if "service_timeout" in params:  # Apprise 2.x
        options["service_timeout"] = 0
    if "storage_mode" in params:
        options["storage_mode"] = "memory"
    return apprise.AppriseAsset(**options)


def _schemes(apprise: Any) -> list[str]:
    manager = getattr(apprise, "NotificationManager", None)
    try:
        return sorted(str(s) for s in manager().schemas()) if manager is not None else []
    except Exception:  # an older Apprise without the manager API: no suggestions
        return []


def _setup_url(apprise: Any, scheme: str) -> str | None:
    manager = getattr(apprise, "NotificationManager", None)
    try:
        url = getattr(manager()[scheme], "setup_url", None) if manager is not None else None
    except Exception:
        return None
    return url if isinstance(url, str) else None


def instantiate(url: str) -> Any:
    """The Apprise service object for ``url``; a ``ValueError`` that shows only the scheme when
    Apprise cannot read it (Apprise's own complaint may quote the URL's tokens)."""
    apprise = _apprise()
    scheme = url_scheme(url)
    with captured_log():  # Apprise's complaints quote the URL: never let them through
        service = apprise.Apprise.instantiate(url, asset=_asset(apprise))
    if service is not None:
        return service
    schemes = _schemes(apprise)
    if scheme in ("http", "https"):
        raise ValueError(
            f"Apprise does not recognise this {scheme}:// URL: Apprise reads the https:// URLs of "
            "a few services (such as Discord webhooks); otherwise write the service's own "
            "scheme, e.g. json:// or jsons:// for any JSON webhook"
        )
    if scheme in schemes:
        where = _setup_url(apprise, scheme)
        raise ValueError(
            f"Apprise could not read this {scheme}:// URL: check it against the service's URL "
            f"forms{f' ({where})' if where else ''}"
        )
    if scheme in _RETIRED:
        raise ValueError(f"{_NO_SERVICE} '{scheme}://' URLs: {_RETIRED[scheme]}")
    close = difflib.get_close_matches(scheme, schemes, n=1, cutoff=0.6)
    raise ValueError(
        f"{_NO_SERVICE} '{scheme}://' URLs" + (f" (did you mean '{close[0]}://'?)" if close else "")
    )


def check_url(url: str) -> Any:
    """Check that Apprise understands ``url`` and that it may carry alerts; return the service."""
    service = instantiate(url)
    scheme = url_scheme(url)
    host = getattr(service, "host", None)
    if scheme in _PLAIN_HTTP and not is_loopback_host(host if isinstance(host, str) else None):
        raise ValueError(
            f"{scheme}:// sends alerts over plain http: use {scheme}s:// (https); plain "
            f"{scheme}:// is allowed only for loopback hosts (localhost, 127.0.0.0/8, ::1)"
        )
    return service


@functools.lru_cache(maxsize=256)
def service_name(url: str) -> str:
    """Apprise's name for the service of ``url`` (``JSON``, ``Discord``…), or its scheme."""
    try:
        name = getattr(instantiate(url), "service_name", None)
    except ValueError:
        name = None
    return str(name) if name else url_scheme(url)


# -- config ---------------------------------------------------------------------------------------


class AppriseConfig(DestinationConfig):
    """``type: apprise``: one Apprise URL (one Apprise service)."""

    # The URL is the credential: keep it out of pydantic's error messages too.
    model_config = ConfigDict(hide_input_in_errors=True)

    url: AppriseUrl
    """Any Apprise URL (``discord://…``, ``workflows://…``, ``jsons://…``); keep it in ``${VAR}``."""

    @field_validator("url")
    @classmethod
    def _apprise_understands_it(cls, value: AppriseUrl) -> AppriseUrl:
        check_url(value.get_secret_value())
        return value

    def describe(self) -> str:
        url = self.url.get_secret_value()
        return f"Apprise {service_name(url)} ({mask_apprise_url(url)})"

    def target_key(self) -> str | None:
        # One URL is one target. A digest, not the URL: the outbox keeps rate-limit keys on disk.
        return "sha256:" + hashlib.sha256(self.url.get_secret_value().encode()).hexdigest()


def from_url(url: str) -> dict[str, Any]:
    """A bare URL no native type took: Apprise's, if Apprise understands it."""
    scheme = url_scheme(url)
    try:
        check_url(url)
    except AppriseMissing:
        raise ValueError(
            f"no installed destination type handles '{scheme}://' URLs, and {APPRISE_MISSING}"
        ) from None
    except ValueError as exc:
        if str(exc).startswith(_NO_SERVICE):
            raise ValueError(f"no installed destination type handles '{scheme}://' URLs, and "
                             f"{exc}") from None
        raise
    return {"url": url}


# -- content --------------------------------------------------------------------------------------

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~&])")


def md_escape(text: str) -> str:
    """Alert text as literal Markdown: every character Markdown (or HTML inside it) could read as
    markup is backslash-escaped."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _md_link_target(url: str) -> str:
    return url.replace(" ", "%20").replace("(", "%28").replace(")", "%29").replace("<", "%3C") \
        .replace(">", "%3E")


def _footer(message: Message, source: str) -> str:
    return f"{message.time_text} · alert {message.alert_id} · from {source} via armor-notify"


def render_text(message: Message, source: str) -> str:
    """The plain-text body; the title (``message.summary``) travels as Apprise's title."""
    lines: list[str] = []
    if message.test_notice:
        lines += [message.test_notice, ""]
    lines += [f"{field.label}: {field.value}" for field in message.fields]
    if message.state == "triggered":  # the resolved and acknowledged forms are short
        if message.description:
            lines += ["", *(line.rstrip() for line in message.description.splitlines())]
        if message.freshness:
            lines += ["", message.freshness]
        if message.changes or message.more_changes:
            lines += ["", f"Changes: {message.changes_summary}" if message.changes_summary
                      else "Changes:"]
            lines += [f"- {line}" for line in message.change_lines()]
    if message.link:
        lines += ["", f"{message.link_text}: {message.link}"]
    lines += ["", _footer(message, source)]
    return "\n".join(lines)


def render_markdown(message: Message, source: str) -> str:
    """The Markdown body, for services whose native format is Markdown. All alert text is
    escaped, so it can never become a link, a heading or HTML."""
    lines: list[str] = []
    if message.test_notice:
        lines += [f"_{md_escape(message.test_notice)}_", ""]
    lines += [f"**{md_escape(field.label)}:** {md_escape(field.value)}  "
              for field in message.fields]
    if message.state == "triggered":
        if message.description:
            lines += ["", *(md_escape(line.rstrip()) + "  "
                            for line in message.description.splitlines())]
        if message.freshness:
            lines += ["", md_escape(message.freshness)]
        if message.changes or message.more_changes:
            head = "**Changes**"
            if message.changes_summary:
                head += f" · {md_escape(message.changes_summary)}"
            lines += ["", head]
            lines += [f"- {md_escape(line)}" for line in message.change_lines()]
    if message.link:
        lines += ["", f"[{md_escape(message.link_text)}]({_md_link_target(message.link)})"]
    lines += ["", md_escape(_footer(message, source))]
    return "\n".join(lines)


NotifyType = Literal["info", "success", "warning", "failure"]


def notify_type(message: Message) -> NotifyType:
    """Apprise's notification type (its colour or icon): resolved is success, critical failure."""
    if message.state == "resolved":
        return "success"
    if message.state == "triggered" and message.severity == "critical":
        return "failure"
    if message.state == "triggered" and message.severity == "warning":
        return "warning"
    return "info"


def _prefers_markdown(service: Any) -> bool:
    override = getattr(service, "_format_override", None)
    formats = override or getattr(service, "notify_format", "text")
    first = formats[0] if isinstance(formats, (list, tuple)) and formats else formats
    return str(getattr(first, "value", first)).lower() == "markdown"


# -- results --------------------------------------------------------------------------------------


def classify(ok: bool, said: list[str], name: str, *, timed_out: bool = False,
             timeout: float | None = None) -> Outcome:
    """An Outcome from Apprise's answer for one service and what it logged (already masked).

    ``timed_out``: Apprise reported a timeout, or the call took the whole ``timeout``.

    Delivered when Apprise says so. Failed (never retried) when every HTTP status in the reason
    (``error=NNN``) is a 4xx other than 408, 425 and 429. Retried otherwise: 5xx, 429, timeouts,
    connection errors, and a failure whose reason gives no status.
    """
    if ok:
        return Outcome.delivered(apprise_service=name)
    reason = "; ".join(dict.fromkeys(m.strip() for m in said if m.strip()))
    if len(reason) > _MAX_REASON:
        reason = reason[: _MAX_REASON - 1] + ELLIPSIS
    reason = f"Apprise {name}: {reason or 'the service reported a failure without a reason'}"
    codes = [int(code) for code in _STATUS.findall(reason)]
    if timed_out and not codes:
        within = f" within {timeout:g} s" if timeout else ""
        return Outcome.retry(f"{reason} (no answer{within}: timed out)", apprise_service=name)
    details: dict[str, Any] = {"apprise_service": name}
    if codes:
        details["status"] = codes[-1]
    if codes and all(400 <= c < 500 and c not in RETRYABLE_4XX for c in codes):
        return Outcome.failed(reason, hint=_HINTS.get(codes[-1]), **details)
    return Outcome.retry(reason, **details)


# -- sending --------------------------------------------------------------------------------------


def configure(service: Any, timeout: float) -> Any:
    """Apply armor-notify's settings to an Apprise service object (see the module docstring)."""
    service.request_rate_per_sec = 0
    service.retry = 0
    service.wait = 0.0
    service.socket_connect_timeout = float(timeout)
    service.socket_read_timeout = float(timeout)
    return service


class AppriseSender:
    """Sends through one Apprise service. Each worker thread gets its own Apprise objects."""

    def __init__(self, config: AppriseConfig) -> None:
        self._apprise = _apprise()
        self.config = config
        self._url = config.url.get_secret_value()
        self._secrets = secret_parts(self._url)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._services: list[Any] = []
        first = self.service()  # fails here, at set-up, if Apprise cannot read the URL
        self.name = str(getattr(first, "service_name", None) or url_scheme(self._url))
        self._markdown = _prefers_markdown(first)
        if getattr(first, "verify_certificate", True) is False:
            import logging

            logging.getLogger(__name__).warning(
                "%s: TLS certificate verification is OFF (verify=no in the Apprise URL)",
                config.describe())

    def __repr__(self) -> str:
        return f"AppriseSender({self.config.describe()})"

    def service(self) -> Any:
        """This thread's Apprise service object, built with armor-notify's settings."""
        return self._objects()[1]

    def services(self) -> list[Any]:
        """Every Apprise service object built so far (one per worker thread)."""
        with self._lock:
            return list(self._services)

    def _objects(self) -> tuple[Any, Any]:
        built: tuple[Any, Any] | None = getattr(self._local, "objects", None)
        if built is None:
            service = configure(instantiate(self._url), self.config.timeout)
            apobj = self._apprise.Apprise(asset=service.asset)
            apobj.add(service)
            built = (apobj, service)
            self._local.objects = built
            with self._lock:
                self._services.append(service)
        return built

    def _content(self, notification: Notification) -> tuple[Message, str, str]:
        """The message, and its body and body format as this service prefers."""
        from armor_notify.message import build_message

        message = build_message(notification)
        if self._markdown:
            return message, render_markdown(message, notification.source), "markdown"
        return message, render_text(message, notification.source), "text"

    def preview(self, notification: Notification) -> dict[str, Any]:
        """What ``send`` would hand Apprise (which formats it for the service)."""
        message, body, body_format = self._content(notification)
        return {"request": f"Apprise {self.name} ({self.config.describe()})",
                "title": message.summary, "body": body, "body_format": body_format,
                "notify_type": notify_type(message)}

    def send(self, notification: Notification) -> Outcome:
        apobj, service = self._objects()
        service.socket_connect_timeout = service.socket_read_timeout = float(notification.timeout)
        message, body, body_format = self._content(notification)
        started = time.monotonic()
        with captured_log() as said:
            try:
                result = apobj.notify(body=body, title=message.summary,
                                      notify_type=notify_type(message), body_format=body_format)
            except Exception as exc:  # Apprise catches its plugins' errors; this is Apprise's own
                return Outcome.failed(
                    self._scrub(f"Apprise {self.name}: Apprise raised {type(exc).__name__}: {exc}"),
                    hint="this looks like a bug in Apprise or in armor-notify's bridge to it: "
                    "please report it",
                    apprise_service=self.name,
                )
        took = time.monotonic() - started
        try:
            status = getattr(getattr(result, "status", None), "name", "")
            timed_out = status == "TIMEOUT" or took >= 0.9 * notification.timeout
            return classify(bool(result), [self._scrub(m) for m in said], self.name,
                            timed_out=timed_out, timeout=notification.timeout)
        finally:
            close: Callable[[], None] | None = getattr(result, "close", None)
            if callable(close):
                close()

    def _scrub(self, text: str) -> str:
        return redact(text.replace(self._url, mask_apprise_url(self._url)), self._secrets)


APPRISE = DestinationType(
    name="apprise",
    config_model=AppriseConfig,
    sender=AppriseSender,
    display_name="Apprise",
    send_resolved_default=True,
    default_rate_limit="none",
    url_fallback=True,
    from_url=from_url,
    test_reminder="",
)


@hookimpl
def register_destination_types(register: Callable[[DestinationType], None]) -> None:
    """Register the ``apprise`` destination type (Apprise itself is not imported here)."""
    register(APPRISE)
