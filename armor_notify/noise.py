"""Noise control (issue: digests, cooldowns, daily limits, schedules, blackouts).

The product suppresses alerts in this order: operating schedule (per rule), blackout window
(company-wide), cooldown (per rule and asset), daily limit (per rule or destination). A
suppressed alert is still written to the outbox, with its reason; with ``hold: true`` an alert
outside the schedule or inside a blackout waits for the window to open instead. Digest
destinations collect alerts and send one summary when the window closes or fills.

This module holds what noise control is made of, and nothing that reads a config: the models
the config file is validated with (:class:`Window`, :class:`Schedule`, :class:`Blackout`,
:class:`Digest`) and the vocabulary of an intake decision (:class:`Decision`; what the outbox
answers a decision from is :class:`armor_notify.history.History`). It imports only the leaves
(durations, validation), and the config, the destinations, the rules and the outbox all import
it. The gate that applies a config's noise controls is :class:`armor_notify.gate.Gate`; the
outbox calls it inside its intake transaction, with its own history, so the decisions hold
across processes.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BeforeValidator, Field, model_validator

from .durations import DATE_RANGE, Base60, Duration
from .times import zone
from .validation import StrictModel

_DAYS = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}
_DAY_GROUPS = {"weekdays": (1, 2, 3, 4, 5), "weekends": (6, 7), "daily": (1, 2, 3, 4, 5, 6, 7)}


def valid_zone(value: str) -> str:
    zone(value)
    return value


def _clock(value: Any) -> Any:
    if isinstance(value, Base60):
        hour, minute = divmod(int(value), 60)
        quoted = f"{hour:02d}:{minute:02d}" if 0 <= hour <= 24 else value.text
        raise ValueError(f"YAML reads an unquoted {value.text} as the number {int(value)} (a "
                         f"base-60 number): put the time in quotes, '{quoted}'")
    if isinstance(value, str) and re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d|24:00", value.strip()):
        hours, minutes = value.strip().split(":")
        return int(hours) * 60 + int(minutes)
    raise ValueError("write times as HH:MM on a 24-hour clock, e.g. 09:00 or 17:30")


def _days(value: Any) -> Any:
    items = [value] if isinstance(value, (str, int)) else value
    if not isinstance(items, list) or not items:
        raise ValueError("days is a list such as [mon, tue, wed, thu, fri], or weekdays, "
                         "weekends or daily")
    full = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    out: list[int] = []
    for item in items:
        text = item.strip().lower() if isinstance(item, str) else None
        if isinstance(item, int) and not isinstance(item, bool) and 1 <= item <= 7:
            out.append(item)
        elif text in _DAYS or text in full:
            out.append(_DAYS[text[:3]])
        elif text in _DAY_GROUPS:
            out.extend(_DAY_GROUPS[text])
        else:
            raise ValueError(f"'{item}' is not a day: use mon…sun (or 1=Mon…7=Sun), weekdays, "
                             "weekends or daily")
    return tuple(sorted(set(out)))


class Window(StrictModel):
    """Open on these days from ``start`` to ``end`` (local time); ``end`` before ``start`` wraps
    past midnight into the next day."""

    days: Annotated[tuple[int, ...], BeforeValidator(_days)] = (1, 2, 3, 4, 5, 6, 7)
    start: Annotated[int, BeforeValidator(_clock)]
    end: Annotated[int, BeforeValidator(_clock)]

    @model_validator(mode="after")
    def _not_empty(self) -> Window:
        if self.start == self.end:
            raise ValueError("start and end are equal: the window would be empty (use 00:00 to "
                             "24:00 for a whole day)")
        return self

    def minutes_of_week(self) -> list[tuple[int, int]]:
        """The window as [start, end) minute ranges of the week (Monday 00:00 = 0)."""
        week = 7 * 1440
        out = []
        for day in self.days:
            begin = (day - 1) * 1440 + self.start
            length = (self.end - self.start) % 1440 or 1440
            end = begin + length
            if end <= week:
                out.append((begin, end))
            else:
                out += [(begin, week), (0, end - week)]
        return out


class Schedule(StrictModel):
    """A rule's operating hours: alerts outside them are suppressed (or held)."""

    timezone: Annotated[str, BeforeValidator(valid_zone)] = "UTC"
    windows: Annotated[tuple[Window, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _no_overlap(self) -> Schedule:
        ranges = [(r, i) for i, w in enumerate(self.windows) for r in w.minutes_of_week()]
        ranges.sort()
        for (a, i), (b, j) in itertools.pairwise(ranges):
            if i != j and b[0] < a[1]:
                raise ValueError(f"windows[{i}] and windows[{j}] overlap on "
                                 f"{_week_minute(b[0])}: merge them into one window")
        return self

    def is_open(self, at: datetime) -> bool:
        local = at.astimezone(zone(self.timezone))
        minute = (local.isoweekday() - 1) * 1440 + local.hour * 60 + local.minute
        return any(a <= minute < b for w in self.windows for a, b in w.minutes_of_week())

    def next_open(self, at: datetime) -> datetime:
        """The next moment the schedule opens (``at`` itself when it is open)."""
        if self.is_open(at):
            return at
        tz = zone(self.timezone)
        local = at.astimezone(tz)
        best: datetime | None = None
        for offset in range(8):
            day = local.date() + timedelta(days=offset)
            for w in self.windows:
                if day.isoweekday() in w.days:
                    opens = _local(day, w.start, tz)
                    if opens > at and (best is None or opens < best):
                        best = opens
        assert best is not None  # a schedule has at least one window, so it opens within 8 days
        return best


def _week_minute(minute: int) -> str:
    day = next(k for k, v in _DAYS.items() if v == minute // 1440 + 1)
    return f"{day} {minute % 1440 // 60:02d}:{minute % 60:02d}"


def _local(day: date, minute: int, tz: ZoneInfo) -> datetime:
    extra, minute = divmod(minute, 1440)
    return datetime.combine(day + timedelta(days=extra), time(minute // 60, minute % 60),
                            tzinfo=tz)


def _local_datetime(value: Any) -> Any:
    if isinstance(value, Base60):
        raise ValueError(f"YAML reads an unquoted {value.text} as the number {int(value)} (a "
                         "base-60 number): write a date and time in quotes, such as "
                         f"'2026-12-24 {value.text}'")
    if isinstance(value, datetime):
        return _in_range(value.replace(tzinfo=None))
    if isinstance(value, date):
        return _in_range(datetime.combine(value, time()))
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError("write dates as YYYY-MM-DD or YYYY-MM-DD HH:MM (local time in the "
                             "blackout's time zone)") from None
        if parsed.tzinfo is not None:
            raise ValueError("leave the UTC offset out: a blackout is in local time; set its "
                             "timezone instead")
        return _in_range(parsed)
    raise ValueError("write dates as YYYY-MM-DD or YYYY-MM-DD HH:MM")


def _in_range(moment: datetime) -> datetime:
    if not 1970 <= moment.year <= 2999:
        raise ValueError(f"the date must be {DATE_RANGE}")
    return moment


class Blackout(StrictModel):
    """A company-wide quiet period: alerts are suppressed (or held) while it lasts."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    start: Annotated[datetime, BeforeValidator(_local_datetime)]
    end: Annotated[datetime, BeforeValidator(_local_datetime)]
    timezone: Annotated[str, BeforeValidator(valid_zone)] | None = None
    """Defaults to ``defaults.timezone``."""
    yearly: bool = False
    """Repeat every year on the same dates (e.g. a year-end freeze)."""
    enabled: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> Blackout:
        if self.end <= self.start and not self.yearly:
            raise ValueError("end must be after start")
        if self.yearly and (self.end - self.start) > timedelta(days=366):
            raise ValueError("a yearly blackout must be shorter than a year")
        return self

    def active_until(self, at: datetime, default_zone: str) -> datetime | None:
        """When this blackout ends, if it is active at ``at``; else ``None``."""
        if not self.enabled:
            return None
        tz = zone(self.timezone or default_zone)
        if not self.yearly:
            start, end = self.start.replace(tzinfo=tz), self.end.replace(tzinfo=tz)
            return end if start <= at < end else None
        local_year = at.astimezone(tz).year
        for year in (local_year - 1, local_year):
            start = _in_year(self.start, year).replace(tzinfo=tz)
            end = _in_year(self.end, year if self.end > self.start.replace(year=self.end.year)
                           else year + 1).replace(tzinfo=tz)
            if start <= at < end:
                return end
        return None


def _in_year(moment: datetime, year: int) -> datetime:
    try:
        return moment.replace(year=year)
    except ValueError:  # 29 February in a year without it
        return moment.replace(year=year, day=28)


def check_blackouts(blackouts: Sequence[Blackout]) -> list[tuple[int, str]]:
    """(index, message) for one-off blackouts that overlap an earlier one."""
    problems = []
    for j, b in enumerate(blackouts):
        for i, a in enumerate(blackouts[:j]):
            if a.yearly or b.yearly or (a.timezone or "") != (b.timezone or ""):
                continue
            if a.start < b.end and b.start < a.end:
                problems.append((j, f"overlaps blackouts[{i}] ('{a.name}'): merge them into one"))
    return problems


class Digest(StrictModel):
    """Collect alerts for ``window`` and send one summary (or sooner, at ``max_items``)."""

    window: Duration
    max_items: Annotated[int, Field(ge=2, le=200)] = 50


# -- decisions ------------------------------------------------------------------------------------

Action = Literal["send", "suppress", "hold", "digest"]


@dataclass(frozen=True)
class Decision:
    """What intake does with a delivery: send it, suppress it (written, with the reason), hold
    it until ``until``, or collect it into ``digest``."""

    action: Action
    reason: str = ""
    until: float | None = None
    """For ``hold``: when to send; for ``digest``: when the digest window closes."""
    digest: Digest | None = None
    mute: int | None = None
    """For ``hold``: the mute holding it (``armor-notify mute``), if it is one."""


SEND = Decision("send")


def start_of_day(at: datetime, zone_name: str) -> float:
    local = at.astimezone(zone(zone_name))
    return datetime.combine(local.date(), time(), tzinfo=local.tzinfo).timestamp()


def batch_key(destination: str) -> str:
    """Alerts to one destination share one digest at a time."""
    return f"digest:{destination}"

