"""What a sender says about one attempt: delivered, retry later, or failed for good.

Senders classify; the core retries. A sender never sleeps or loops on its own.
"""

from __future__ import annotations

import email.utils
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
        header; the core waits at least that long before the next attempt.
        """
        return cls("retry", reason=reason, hint=hint, retry_after=retry_after, details=details)

    @classmethod
    def failed(cls, reason: str, *, hint: str | None = None, **details: Any) -> Outcome:
        """A permanent failure (400-class answer, bad credentials, archived channel): never retried."""
        return cls("failed", reason=reason, hint=hint, details=details)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` header (delta-seconds or an HTTP date).

    Returns ``None`` when the header is absent or unreadable.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)
