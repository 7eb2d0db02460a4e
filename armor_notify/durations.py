"""The one duration parser (every config duration and ``outbox purge --older-than`` use it), and
the range of dates accepted anywhere.

A duration is a number of seconds (``90``, ``1.5``) or text with units, upper or lower case:
``30s``, ``15m``, ``2h``, ``7d``, ``1w``, and compounds such as ``1h30m`` or ``1d 12h``.
Every duration is finite and at most :data:`MAX_DURATION`, so no later date arithmetic can
overflow.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
MAX_DURATION = 3650 * 86400.0
"""Ten years: the longest duration accepted anywhere."""

_PART = r"(\d+(?:\.\d+)?)\s*([wdhms])"
_WHOLE = re.compile(rf"^(?:{_PART}\s*)+$")
_PARTS = re.compile(_PART)
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")

EXAMPLES = "30s, 15m, 2h, 7d, 1w or 1h30m"


class Base60(int):
    """An integer YAML 1.1 read from ``17:30`` (base 60: 17*60+30 = 1050), with the text as
    written, so that errors can tell the user to quote it."""

    text: str

    def __new__(cls, value: int, text: str) -> Base60:
        self = super().__new__(cls, value)
        self.text = text
        return self


def parse_duration(value: Any, *, maximum: float = MAX_DURATION) -> float:
    """Seconds from ``90``, ``"90"``, ``"15m"``, ``"7D"``, ``"1h30m"``...; :class:`ValueError`
    with a message for anything else, for a negative or non-finite number and past ``maximum``."""
    if isinstance(value, Base60):
        raise ValueError(f"YAML reads {value.text} as the base-60 number {int(value)}: write a "
                         f"duration such as {EXAMPLES} (quote it if it has a colon)")
    if isinstance(value, bool):
        raise ValueError(f"a duration is a number of seconds or text such as {EXAMPLES}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if _NUMBER.match(text):
            seconds = float(text)
        elif _WHOLE.match(text):
            seconds = sum(float(n) * UNITS[u] for n, u in _PARTS.findall(text))
        else:
            raise ValueError(f"'{value}' is not a duration: write a number of seconds or text "
                             f"such as {EXAMPLES}")
    else:
        raise ValueError(f"a duration is a number of seconds or text such as {EXAMPLES}")
    if not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number of seconds")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if seconds > maximum:
        raise ValueError(f"a duration can be at most {format_duration(maximum)} "
                         f"({maximum:,.0f} seconds)")
    return seconds


def format_duration(seconds: float) -> str:
    """``86400`` → ``1d``, ``5400`` → ``90m``, ``1.5`` → ``1.5s``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
"""A config duration: positive, finite, at most :data:`MAX_DURATION`."""

DurationOrZero = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
"""A config duration that may be 0 (off)."""


EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)
DATE_RANGE = "between 1970-01-01 and 2999-12-31 (UTC)"


def bounded_moment(value: datetime) -> datetime:
    """``value`` (aware, or naive meaning UTC) if it lies in :data:`DATE_RANGE`, so it always
    converts to UTC and to a Unix time; else :class:`ValueError`."""
    try:
        utc = value.astimezone(timezone.utc) if value.tzinfo else value.replace(
            tzinfo=timezone.utc)
    except (OverflowError, ValueError):
        utc = None
    if utc is None or not EARLIEST <= utc <= LATEST:
        raise ValueError(f"the date must be {DATE_RANGE}")
    return value
