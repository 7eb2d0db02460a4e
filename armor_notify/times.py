"""Moments in time as armor-notify writes them: one module, so every reader sees the same forms.

- :func:`readable` for people (messages, explanations, listings): ``2024-05-01 12:00 UTC``, in a
  named IANA zone when a schedule has one (``2024-05-01 14:00 CEST``), with seconds on request.
- :func:`iso` for machines (JSON output): ISO 8601 in UTC with milliseconds.
- :func:`zone` turns a zone name into a :class:`~zoneinfo.ZoneInfo`, or a plain error.

Timestamps are seconds since the epoch (what the outbox stores) or aware datetimes; a naive
datetime is read as UTC.
"""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

__all__ = ["iso", "readable", "zone"]


def zone(name: str) -> ZoneInfo:
    """The IANA time zone *name*; ``ValueError`` with a hint when there is none."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # not at import: `--help` stays fast

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone '{name}': use an IANA name such as UTC, "
                         "Europe/Paris or America/New_York") from None


def _moment(at: datetime | float) -> datetime:
    if isinstance(at, datetime):
        return at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(at, timezone.utc)


def readable(at: datetime | float, zone_name: str = "UTC", *, seconds: bool = False) -> str:
    """``2024-05-01 12:00 UTC`` (``12:00:07`` with *seconds*), in the zone *zone_name*."""
    where: tzinfo = timezone.utc if zone_name == "UTC" else zone(zone_name)
    return _moment(at).astimezone(where).strftime(
        "%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z")


def iso(at: datetime | float) -> str:
    """``2024-05-01T12:00:07.250+00:00``: ISO 8601, UTC, milliseconds."""
    return _moment(at).astimezone(timezone.utc).isoformat(timespec="milliseconds")
