"""The words people read about an alert, shared by every destination: part of the plugin API.

A destination plugin that shows alerts to people (chat, mail, a ticket) can use this module so that
its messages say the same thing, in the same words, as the built-in Slack, email and Apprise
destinations. Everything listed in ``__all__`` is public and kept stable; the rest is internal.

:func:`build_message` turns a :class:`~armor_notify.Notification` into a :class:`Message`: plain
strings and small records, with no markup and **no escaping**. Each destination escapes for its
own format (Slack: ``&``, ``<``, ``>``; HTML: :func:`html.escape`) and decides its own layout, so
the words people read are the same whichever tool they arrive in. :func:`build_digest` does the
same for a digest (many alerts in one notification). :func:`one_line` makes any text fit a
subject, a header or a title: line breaks and runs of spaces become one space.

Example::

    from armor_notify.message import build_message

    message = build_message(notification)
    message.headline        # "CRITICAL · Schema change"
    message.title           # "3 columns removed from orders"
    [f"{f.label}: {f.value}" for f in message.fields]
    message.change_lines()  # ["Column removed: email (varchar)", …, "and 12 more"]
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from .alert import one_line
from .times import readable

if TYPE_CHECKING:
    from .alert import Change, Freshness
    from .destinations import Notification

__all__ = [
    "DEFAULT_MAX_CHANGES",
    "DIGEST_MAX_ITEMS",
    "ChangeLine",
    "DigestGroup",
    "DigestItem",
    "DigestMessage",
    "Field",
    "Message",
    "and_more",
    "build_digest",
    "build_message",
    "event_label",
    "event_noun",
    "format_time",
    "one_line",
]

DEFAULT_MAX_CHANGES = 10
"""Schema changes listed before the rest are summed up as "and N more"."""

State = Literal["triggered", "acknowledged", "resolved"]

# Each event type in words: as a label ("Schema change"), and as a noun for one and for many
# (a digest's "3 schema changes in 2 tables"). Plugin event types are worded from their name.
_EVENT_WORDS: dict[str, tuple[str, str, str]] = {
    "schema_change": ("Schema change", "schema change", "schema changes"),
    "freshness_violation": ("Freshness violation", "freshness violation", "freshness violations"),
    "metric_anomaly": ("Metric anomaly", "metric anomaly", "metric anomalies"),
    "validity_failure": ("Validity failure", "validity failure", "validity failures"),
    "discovery_failed": ("Discovery failed", "discovery failure", "discovery failures"),
    "asset_removed": ("Asset removed", "removed asset", "removed assets"),
    "asset_discovered": ("New asset discovered", "new asset", "new assets"),
    "check_missing": ("Check missing", "missing check", "missing checks"),
}


@dataclass(frozen=True)
class Field:
    """One labelled fact shown next to the others: ``Rule: Production Breaking Changes``."""

    label: str
    value: str


@dataclass(frozen=True)
class ChangeLine:
    """One schema change, ready to show. ``text`` is the whole line in plain words."""

    kind: str
    """``Column removed``, ``Type changed``… (the change type in words)."""
    column: str | None
    detail: str | None
    """``varchar → text``, ``was customer_email``…, or ``None``."""
    breaking: bool

    @property
    def text(self) -> str:
        """``Column removed: email (varchar) — breaking``."""
        line = f"{self.kind}: {self.column}" if self.column else self.kind
        if self.detail:
            line += f" ({self.detail})"
        return f"{line} — breaking" if self.breaking else line


@dataclass(frozen=True)
class Message:
    """Everything a person should read about one notification, as plain unescaped text."""

    state: State
    """``triggered``, ``acknowledged`` or ``resolved``: destinations pick their form by it."""
    test: bool
    """Sent by ``armor-notify test``: show :attr:`test_notice` prominently."""
    severity: str
    """``info``, ``warning`` or ``critical``."""
    event: str
    """The event type in words: ``Schema change``."""
    headline: str
    """``CRITICAL · Schema change``, ``Resolved · Schema change``, ``[Test] WARNING · …``."""
    title: str
    """The alert's title (one line)."""
    summary: str
    """One line for previews, fallbacks and subjects: ``CRITICAL · Schema change: <title>``."""
    fields: tuple[Field, ...]
    """Rule, Event type, Asset, Severity, then Data source and Environment when known."""
    description: str | None
    """The alert's description (may hold several lines), or ``None``."""
    changes: tuple[ChangeLine, ...]
    """The first ``max_changes`` schema changes (breaking ones first)."""
    changes_summary: str | None
    """``3 changes (2 breaking)``, or ``None`` without changes."""
    more_changes: int
    """How many changes were left out of :attr:`changes`."""
    freshness: str | None
    """``Data is 5 hours late (threshold 2 hours); last updated 2024-05-01 07:00 UTC``."""
    link: str | None
    """The alert's https link in the monitoring product."""
    link_text: str
    """``View in AnomalyArmor`` (``defaults.link_text``)."""
    occurred_at: datetime
    """When the alert happened (as the alert says; :attr:`time_text` is it in words)."""
    time_text: str
    """``2024-05-01 12:00 UTC`` (:func:`format_time`)."""
    alert_id: str
    """The alert's ``id``."""
    test_notice: str | None
    """Set for test notifications: says this is a test and needs no action."""

    def change_lines(self) -> list[str]:
        """The listed changes as plain lines, ending with ``and N more`` when some were left out."""
        lines = [change.text for change in self.changes]
        if self.more_changes:
            lines.append(and_more(self.more_changes))
        return lines


def and_more(count: int) -> str:
    """``and 12 more``: the line that stands for changes that were not listed."""
    return f"and {count} more"


def event_label(event_type: str) -> str:
    """``schema_change`` → ``Schema change``; plugin event types get the same treatment."""
    words = _EVENT_WORDS.get(event_type)
    return words[0] if words else event_type.replace("_", " ").strip().capitalize()


def event_noun(event_type: str, count: int) -> str:
    """The event type as a noun for ``count`` alerts: ``schema change``, ``schema changes``.

    A plugin event type is its name with spaces (``row_count_drop`` → ``row count drop``), for
    any count.
    """
    words = _EVENT_WORDS.get(event_type)
    if words is None:
        return event_type.replace("_", " ")
    return words[1] if count == 1 else words[2]


def format_time(moment: datetime) -> str:
    """``2024-05-01 12:00 UTC``: one unambiguous form for every reader."""
    return readable(moment)


def build_message(notification: Notification, *, max_changes: int = DEFAULT_MAX_CHANGES) -> Message:
    """The content of ``notification``, with at most ``max_changes`` schema changes listed."""
    alert = notification.alert
    state: State = alert.status
    severity = alert.severity.value
    event = event_label(alert.event_type)
    status_word = severity.upper() if state == "triggered" else state.capitalize()
    headline = f"{status_word} · {event}"
    if notification.test:
        headline = f"[Test] {headline}"

    fields = [
        Field("Rule", notification.rule),
        Field("Event type", alert.event_type),
        Field("Asset", alert.asset.name),
        Field("Severity", severity),
    ]
    if alert.asset.data_source:
        fields.append(Field("Data source", alert.asset.data_source))
    if alert.asset.environment:
        fields.append(Field("Environment", alert.asset.environment))

    # Breaking changes first: they are what someone must act on when the list is cut short.
    ordered = sorted(alert.changes, key=lambda change: not change.breaking)
    limit = max(0, max_changes)
    listed = tuple(_change_line(change) for change in ordered[:limit])

    test_notice = None
    if notification.test:
        test_notice = (
            f"This is a test notification from armor-notify for destination "
            f"'{notification.destination}'. No action is needed."
        )

    return Message(
        state=state,
        test=notification.test,
        severity=severity,
        event=event,
        headline=headline,
        title=alert.title,
        summary=f"{headline}: {alert.title}",
        fields=tuple(fields),
        description=alert.description or None,
        changes=listed,
        changes_summary=_changes_summary(alert.changes),
        more_changes=len(ordered) - len(listed),
        freshness=_freshness_line(alert.freshness) if alert.freshness else None,
        link=alert.link,
        link_text=notification.link_text,
        occurred_at=alert.occurred_at,
        time_text=format_time(alert.occurred_at),
        alert_id=alert.id,
        test_notice=test_notice,
    )


def _change_line(change: Change) -> ChangeLine:
    kind = change.type.replace("_", " ").capitalize()
    if change.from_ and change.to:
        detail: str | None = f"{change.from_} → {change.to}"
    elif change.to:
        detail = change.to
    elif change.from_:
        detail = f"was {change.from_}"
    else:
        detail = None
    return ChangeLine(kind=kind, column=change.column, detail=detail, breaking=change.breaking)


def _changes_summary(changes: tuple[Change, ...]) -> str | None:
    if not changes:
        return None
    count = len(changes)
    breaking = sum(1 for change in changes if change.breaking)
    text = f"{count} change{'s' if count != 1 else ''}"
    return f"{text} ({breaking} breaking)" if breaking else text


def _hours(value: float) -> str:
    if value < 1:
        minutes = round(value * 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    rounded = round(value, 1)
    return f"{rounded:g} hour{'s' if rounded != 1 else ''}"


def _freshness_line(freshness: Freshness) -> str:
    line = f"Data is {_hours(freshness.delay_hours)} late"
    if freshness.threshold_hours is not None:
        line += f" (threshold {_hours(freshness.threshold_hours)})"
    if freshness.last_updated_at is not None:
        line += f"; last updated {format_time(freshness.last_updated_at)}"
    return line


# -- digests --------------------------------------------------------------------------------------

DIGEST_MAX_ITEMS = 50
"""Alerts listed in one digest message; the rest are counted ("and N more")."""


@dataclass(frozen=True)
class DigestItem:
    """One alert inside a digest."""

    title: str
    status: str
    """``triggered``, ``acknowledged`` or ``resolved``."""
    severity: str
    event: str
    """The event type in words."""
    breaking: bool
    """The alert lists at least one breaking schema change."""
    link: str | None

    @property
    def text(self) -> str:
        """``Column removed from orders — breaking, resolved``."""
        notes = [n for n, on in (("breaking", self.breaking),
                                 (self.status, self.status != "triggered")) if on]
        return f"{self.title} — {', '.join(notes)}" if notes else self.title


@dataclass(frozen=True)
class DigestGroup:
    """The digest's alerts about one asset."""

    asset: str
    """The asset's name."""
    items: tuple[DigestItem, ...]


@dataclass(frozen=True)
class DigestMessage:
    """A digest: many alerts in one message, grouped by asset."""

    headline: str
    """``3 schema changes in 2 tables (2 breaking)``."""
    groups: tuple[DigestGroup, ...]
    """The listed alerts, one group per asset, in the order the alerts came."""
    total: int
    """How many alerts the digest holds, listed or not."""
    left_out: int
    """Alerts not listed (beyond ``DIGEST_MAX_ITEMS``), still counted in the headline."""
    link_text: str
    """The label for each alert's link: ``View in AnomalyArmor`` (``defaults.link_text``)."""
    time_text: str
    """When the digest was made (``2024-05-01 12:00 UTC``, :func:`format_time`)."""


def build_digest(notification: Notification, *,
                 max_items: int = DIGEST_MAX_ITEMS) -> DigestMessage:
    """The content of a digest notification (``notification.digest`` holds its alerts)."""
    alerts = notification.digest
    groups: dict[str, list[DigestItem]] = {}
    for alert in alerts[:max_items]:
        groups.setdefault(alert.asset.name, []).append(DigestItem(
            title=alert.title, status=alert.status, severity=alert.severity.value,
            event=event_label(alert.event_type), breaking=bool(alert.breaking_changes),
            link=alert.link))
    return DigestMessage(
        headline=notification.alert.title,
        groups=tuple(DigestGroup(asset, tuple(items)) for asset, items in groups.items()),
        total=len(alerts),
        left_out=max(0, len(alerts) - max_items),
        link_text=notification.link_text,
        time_text=format_time(notification.alert.occurred_at),
    )
