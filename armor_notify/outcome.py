"""What a sender says about one attempt: delivered, retry later, or failed for good.

Senders classify; the core retries. A sender never sleeps or loops on its own.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

OutcomeStatus = Literal["delivered", "retry", "failed"]


@dataclass(frozen=True)
class Outcome:
    """The classified result of one delivery attempt.

    ``reason`` is the destination's own words, verbatim (PagerDuty's ``errors`` list, Slack's error
    code, the SMTP reply); ``hint`` says what the user can do about it; ``details`` are small
    JSON-able facts shown in results (PagerDuty's returned ``dedup_key``, refused recipients).
    """

    status: OutcomeStatus
    reason: str = ""
    hint: str | None = None
    retry_after: float | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A plugin may pass any number (inf, 1e15, NaN, a negative one): bound it here, so no
        # later sum overflows or lands in year 31 million.
        if self.retry_after is not None:
            object.__setattr__(self, "retry_after", bounded_wait(self.retry_after))

    @classmethod
    def delivered(cls, reason: str = "", **details: Any) -> Outcome:
        """The destination accepted the notification."""
        return cls("delivered", reason=reason, details=details)

    @classmethod
    def retry(
        cls,
        reason: str,
        *,
        retry_after: float | None = None,
        hint: str | None = None,
        **details: Any,
    ) -> Outcome:
        """A temporary failure (network error, timeout, 429, 5xx, SMTP 4xx): try again later.

        ``retry_after`` is the destination's own request (seconds), e.g. from a ``Retry-After``
        header; the core waits at least that long before the next attempt. It is bounded to
        between 0 and one day (:data:`MAX_RETRY_AFTER`); NaN counts as not given.
        """
        return cls("retry", reason=reason, hint=hint, retry_after=retry_after, details=details)

    @classmethod
    def failed(cls, reason: str, *, hint: str | None = None, **details: Any) -> Outcome:
        """A permanent failure (400-class answer, bad credentials, archived channel): never retried."""
        return cls("failed", reason=reason, hint=hint, details=details)


MAX_RETRY_AFTER = 86_400.0
"""The longest wait a destination may ask for (one day): a longer ``Retry-After`` (``inf``,
``1e15``, a date in year 9999) counts as this long."""


def bounded_wait(seconds: float | None) -> float | None:
    """A destination's requested wait made safe: ``None`` for NaN, else between 0 and
    :data:`MAX_RETRY_AFTER` (``inf`` and huge values become the cap)."""
    if seconds is None or seconds != seconds:  # NaN
        return None
    return min(max(0.0, float(seconds)), MAX_RETRY_AFTER)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` header (delta-seconds or an HTTP date).

    Returns ``None`` when the header is absent or unreadable (``nan``, garbage); otherwise a
    finite number between 0 and :data:`MAX_RETRY_AFTER` (one day): ``inf``, ``1e15`` or a date
    in year 9999 give one day.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        import email.utils  # an HTTP date is rare: its parser is imported when one comes

        try:
            when = email.utils.parsedate_to_datetime(value)
            seconds = when.timestamp() - (time.time() if now is None else now)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return bounded_wait(seconds)
