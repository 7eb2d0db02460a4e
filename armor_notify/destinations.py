"""What a destination plugin provides: a config model, a sender, and how they are described.

A plugin registers :class:`DestinationType` objects through the ``register_destination_types``
hook. The core validates each configured destination with the type's ``config_model``, builds
one sender per destination with ``sender(config)``, and calls ``sender.send(notification)`` once
per attempt, inside its own error handling, timeout and retry policy.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, field_validator

from .alert import Alert
from .durations import Duration, DurationOrZero
from .noise import Digest
from .outcome import Outcome
from .secrets import SecretUrl
from .validation import StrictModel

Action = Literal["trigger", "acknowledge", "resolve"]

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour)s?\s*$")
_PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}
DEFAULT_BURST = 10
"""A rate limit's default burst is ``min(count, DEFAULT_BURST)``."""


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1``: the hosts allowed to skip TLS."""
    if not host:
        return False
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_HTTPS_RULE = ("must be an https:// URL (plain http:// is allowed only for loopback hosts: "
               "localhost, 127.0.0.0/8, ::1)")
_SCHEME = re.compile(r"^(https?)://", re.IGNORECASE)


def destination_url(value: str) -> str:
    """Check a destination URL as the HTTP client will read it; return it unchanged.

    The forms that URL parsers read differently are refused first: a backslash
    (``http://a\\@127.0.0.1/`` connects to ``a`` with urllib3, to 127.0.0.1 with others),
    whitespace and control characters, non-ASCII text, a user name or password before the host,
    and percent-encoded hosts. What is left reads the same in every parser (the standard
    library's is used here; :class:`armor_notify.http.HttpClient` connects with urllib3's, and
    ``tests/hostile/test_url_forms.py`` checks that both find the same host), and the host it will
    connect to must be https-reachable or loopback. Messages never quote the URL: its path may
    be the secret.
    """
    if not value.isascii():
        raise ValueError("contains non-ASCII characters: write the host in its ASCII form "
                         "(xn--…) and percent-encode the rest of the URL")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError("contains a space, line break or control character")
    if "\\" in value:
        raise ValueError("contains a backslash, which URL parsers read differently (as part of "
                         "the path or as a /): write / or %5C")
    scheme = _SCHEME.match(value)
    if scheme is None:
        raise ValueError(_HTTPS_RULE)
    authority = re.split(r"[/?#]", value[scheme.end():], maxsplit=1)[0]
    if "@" in authority:
        raise ValueError("must not hold a user name or password before the host (user:pass@): "
                         "give a credential as a header or an option instead")
    if "%" in authority:
        raise ValueError("has a percent-encoded host: write the host as it is")
    try:
        parsed = urlsplit(value)
        port = parsed.port
    except ValueError:
        raise ValueError("has a host or port that cannot be read") from None
    host = parsed.hostname or ""
    if not host:
        raise ValueError(f"has no host: it {_HTTPS_RULE}")
    if port is not None and not 0 < port < 65536:
        raise ValueError("has a port outside 1-65535")
    written = (authority[: authority.find("]") + 1] if authority.startswith("[")
               else authority.rsplit(":", 1)[0])
    shown = f"[{host}]" if ":" in host else host
    if shown.lower() != written.lower():  # belt and braces: what was written is what connects
        raise ValueError("has a host that URL parsers read differently")
    if parsed.scheme.lower() == "http" and not is_loopback_host(host):
        raise ValueError(_HTTPS_RULE)
    return value


def _https_or_loopback(value: str) -> str:
    return destination_url(value)


def _secret_https_or_loopback(value: SecretUrl) -> SecretUrl:
    _https_or_loopback(value.get_secret_value())
    return value


HttpsUrl = Annotated[str, AfterValidator(_https_or_loopback)]
"""A URL that must be https, except on loopback hosts where local receivers and tests run."""

SecretHttpsUrl = Annotated[SecretUrl, AfterValidator(_secret_https_or_loopback)]
"""A secret URL (a webhook) with the same rule; it is masked everywhere and never quoted."""


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` notifications per ``period`` seconds, ``burst`` of them at once.

    Enforced with GCRA (the generic cell rate algorithm): up to ``burst`` notifications go out at
    once, the rest are spaced ``period / count`` apart. The exact guarantee: in any span shorter
    than ``period`` at most ``count + burst - 1`` go out, and over a long run ``count`` per
    ``period``. ``burst=1`` spaces every notification, so no span of ``period`` ever holds more
    than ``count``. ``burst`` left at 0 means the default, ``min(count, 10)``.
    """

    count: int
    period: float
    burst: int = 0

    def __post_init__(self) -> None:
        if self.burst < 0:
            raise ValueError("a rate limit's burst must be at least 1")
        if self.burst == 0:
            object.__setattr__(self, "burst", min(self.count, DEFAULT_BURST))

    @property
    def interval(self) -> float:
        """Seconds between two notifications once the burst is spent."""
        return self.period / self.count

    @classmethod
    def parse(cls, text: str, burst: int | None = None) -> RateLimit | None:
        """``"120/minute"``, ``"1/second"``, ``"10/hour"``; ``"none"`` gives ``None``.
        ``burst`` ``None`` takes the default, ``min(count, 10)``."""
        if text.strip().lower() == "none":
            return None
        match = _RATE.match(text.lower())
        if not match or int(match.group(1)) < 1:
            raise ValueError(
                "not a rate limit: write COUNT/second, COUNT/minute or COUNT/hour "
                "(e.g. 120/minute), or none"
            )
        return cls(int(match.group(1)), _PERIODS[match.group(2)], burst or 0)

    def __str__(self) -> str:
        unit = {1.0: "second", 60.0: "minute", 3600.0: "hour"}.get(self.period)
        return f"{self.count}/{unit}" if unit else f"{self.count}/{self.period:g}s"

    def describe(self) -> str:
        """The limit and its burst, as ``validate`` shows them: ``120/minute, burst 10``."""
        return f"{self}, burst {self.burst}"


class DestinationConfig(StrictModel):
    """Options every destination accepts (SPEC §5). Plugins subclass it and add their own.

    Declare secrets as :class:`armor_notify.Secret` or :class:`armor_notify.SecretUrl` so that
    they are masked everywhere, and override :meth:`describe` to say where notifications go.
    """

    timeout: Annotated[Duration, Field(le=600)] = 10.0
    """Seconds one attempt may take."""
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 5
    """Attempts before a retryable failure becomes final."""
    retry_deadline: Duration = 120.0
    """Seconds after the first attempt after which no new attempt starts."""
    retry_backoff: Annotated[DurationOrZero, Field(le=3600)] = 1.0
    """The first retry's delay in seconds; it doubles each attempt (with jitter), up to 60 s."""
    send_resolved: bool | None = None
    """Send acknowledged/resolved alerts too; ``None`` takes the type's default."""
    rate_limit: str = "default"
    """``120/minute``, ``1/second``, ``none``, or ``default`` (the type's documented limit)."""
    rate_burst: Annotated[int, Field(ge=1, le=100_000)] | None = None
    """How many notifications may go out at once under ``rate_limit`` before the rest are spaced
    at the rate; ``None``: ``min(count, 10)``. ``1`` spaces every one."""
    digest: Digest | None = None
    """Collect alerts into one summary per window (types that support digests only)."""
    daily_limit: Annotated[int, Field(ge=1)] | None = None
    """At most this many notifications a day to this destination; the rest are suppressed (or,
    with a digest, counted into the next one)."""

    @field_validator("rate_limit")
    @classmethod
    def _valid_rate_limit(cls, value: str) -> str:
        if value != "default":
            RateLimit.parse(value)
        return value

    def describe(self) -> str:
        """Where notifications go, with every secret masked (shown by ``route`` and ``validate``)."""
        return ""

    def target_key(self) -> str | None:
        """Identifies where notifications land (a PagerDuty integration key, a Slack webhook).

        When two configured destinations have the same target key, an alert that matches both is
        delivered once, by the first, so overlapping rules never open two incidents for one alert
        on one integration. ``None`` (the default) means every destination is distinct. The key is
        used only in memory and is never printed.
        """
        return None

    def rate_limit_key(self) -> str | None:
        """What a rate limit is counted against; destinations that share it share the limit.

        Defaults to :meth:`target_key`; ``None`` counts per destination name. Never printed.
        """
        return self.target_key()


@dataclass(frozen=True)
class Notification:
    """One attempt's input: the alert and everything the core decided about it."""

    alert: Alert
    destination: str
    """The destination's name in the config."""
    rule: str
    """The owning rule's name (the first matching rule in file order)."""
    dedup_key: str
    """The dedup key (SPEC §4): the same for trigger, acknowledge and resolve."""
    source: str
    """``defaults.source``: PagerDuty's ``payload.source`` and the product name in messages."""
    link_text: str
    """``defaults.link_text``: the text of the link to the alert."""
    timeout: float
    """Seconds this attempt may take: use it for every network call."""
    attempt: int = 1
    test: bool = False
    """True for ``armor-notify test``."""
    digest: tuple[Alert, ...] = ()
    """For a digest: every alert it summarises (``alert`` is then a synthetic summary alert)."""
    thread: Mapping[str, Any] | None = None
    """Where this incident's message is on this destination: what the sender returned as
    ``Outcome.delivered(message={...})`` for an earlier delivery with the same dedup key (Slack's
    channel and ts), so that it can update that message or reply in its thread. ``None``: no
    message yet, or the incident was resolved since (a new trigger starts a new message). Given
    only to senders that set ``threads = True``, never for tests; a digest has one only when
    all its alerts belong to one incident."""

    @property
    def action(self) -> Action:
        """``trigger``, ``acknowledge`` or ``resolve``, from the alert's status."""
        return {"triggered": "trigger", "acknowledged": "acknowledge", "resolved": "resolve"}[
            self.alert.status
        ]  # type: ignore[return-value]


@runtime_checkable
class Sender(Protocol):
    """Sends notifications to one configured destination. Built once per destination.

    ``send`` is called from worker threads, once per attempt, possibly for several alerts at
    once; it must classify every outcome and not retry or sleep on its own.

    A sender may also set ``bounded_waits = True`` (a class attribute) to promise that every
    blocking call in ``send`` is bounded by ``notification.timeout`` (as
    :class:`armor_notify.http.HttpClient` bounds a whole post; no unbounded locks, queues or
    sleeps). A
    ``send`` with a single delivery to make then runs it on the calling thread, sparing two
    thread switches; without the promise every attempt runs on an I/O thread, where the hard
    timeout can write off a sender that hangs.

    A sender that can update what it posted sets ``threads = True``: each notification then
    carries :attr:`Notification.thread`, the ``message`` it reported for the same incident
    before. Deliveries of one dedup key to one destination are sent in order, so a resolve's
    attempt starts after its trigger's ended.
    """

    def send(self, notification: Notification) -> Outcome: ...


@dataclass(frozen=True)
class DestinationType:
    """A kind of destination a plugin provides, registered through ``register_destination_types``."""

    name: str
    """The ``type:`` value in the config, e.g. ``pagerduty``."""
    config_model: type[DestinationConfig]
    """Validates the destination's config (the ``type`` key removed)."""
    sender: Callable[[Any], Sender]
    """Builds a sender from a validated ``config_model`` instance."""
    display_name: str = ""
    """The human name, e.g. ``PagerDuty``; defaults to ``name``."""
    send_resolved_default: bool = True
    """Whether acknowledged/resolved alerts are sent when the config does not say."""
    default_rate_limit: str = "none"
    """The provider's documented limit, e.g. ``120/minute``."""
    url_schemes: tuple[str, ...] = ()
    """URL schemes (``pagerduty``, ``slack``…) that a bare-URL destination may use for this type."""
    from_url: Callable[[str], Mapping[str, Any] | None] | None = None
    """Turns such a URL into this type's config mapping. Raise ``ValueError`` for a URL of this
    type that is wrong (the message is shown); return ``None`` for a URL that is not this type's
    after all (an ``https`` URL of another host), so that the next candidate type is asked."""
    url_fallback: bool = False
    """Also offered bare URLs that no type's ``url_schemes`` claims, or that every claiming type
    declined: the catch-all for a bridge such as Apprise. At most one installed type may set it."""
    test_reminder: str = ""
    """Printed after a successful ``armor-notify test`` (e.g. resolve the test incident)."""
    supports_digest: bool = False
    """The sender can render ``Notification.digest`` (several alerts in one message)."""

    @property
    def title(self) -> str:
        return self.display_name or self.name
