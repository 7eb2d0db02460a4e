"""The shared retry policy: exponential backoff with jitter, Retry-After honoured, capped.

A destination's requested wait (``Retry-After``) is bounded: at most one day
(:data:`~armor_notify.outcome.MAX_RETRY_AFTER`), and a wait that would pass the retry deadline
ends the delivery at once, saying so, instead of holding it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .destinations import DestinationConfig
from .outcome import MAX_RETRY_AFTER, bounded_wait

MAX_BACKOFF = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again after a retryable outcome, and when to stop."""

    max_attempts: int = 5
    deadline: float = 120.0
    """Seconds after the first attempt; no attempt starts later than this."""
    backoff: float = 1.0
    """Delay before the first retry; doubles each attempt, up to ``MAX_BACKOFF``."""

    @classmethod
    def for_destination(cls, config: DestinationConfig) -> RetryPolicy:
        return cls(config.max_attempts, config.retry_deadline, config.retry_backoff)

    def delay(self, attempts: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after ``attempts`` attempts: ``backoff·2^(n-1)``, jittered to between
        half and all of it (so retries from many alerts spread out), and never less than the
        destination's own ``Retry-After`` (bounded to one day)."""
        base = min(MAX_BACKOFF, self.backoff * 2 ** min(attempts - 1, 64))
        jittered = base * (0.5 + rng.random() / 2)
        return float(max(jittered, bounded_wait(retry_after) or 0.0))

    def hold(self, retry_after: float | None) -> float:
        """How long a destination's ``Retry-After`` should pause its whole rate key: what it
        asked (bounded to one day), but never longer than the retry deadline, past which no
        delivery waiting for it could be attempted anyway."""
        return min(bounded_wait(retry_after) or 0.0, self.deadline)

    def next_attempt(
        self,
        attempts: int,
        first_attempt_at: float,
        now: float,
        retry_after: float | None,
        rng: random.Random,
    ) -> tuple[float | None, str]:
        """The time of the next attempt, or ``None`` and why there is none."""
        if attempts >= self.max_attempts:
            return None, f"gave up after {attempts} attempt{'s' if attempts != 1 else ''}"
        wait = bounded_wait(retry_after)
        at = now + self.delay(attempts, wait, rng)
        if at - first_attempt_at > self.deadline:
            tried = f"gave up after {attempts} attempt{'s' if attempts != 1 else ''}"
            if wait and now + wait - first_attempt_at > self.deadline:
                more = " or more (the longest wait armor-notify honours)" if (
                    wait >= MAX_RETRY_AFTER) else ""
                return None, (f"{tried}: the destination asked to wait {wait:g}s{more}, "
                              f"longer than the {self.deadline:g}s retry deadline allows")
            return None, f"{tried}: the next would pass the {self.deadline:g}s retry deadline"
        return at, ""
