"""The shared retry policy: exponential backoff with jitter, Retry-After honoured, capped."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .destinations import DestinationConfig

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
        destination's own ``Retry-After``."""
        base = min(MAX_BACKOFF, self.backoff * 2 ** (attempts - 1))
        jittered = base * (0.5 + rng.random() / 2)
        return float(max(jittered, retry_after or 0.0))

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
        at = now + self.delay(attempts, retry_after, rng)
        if at - first_attempt_at > self.deadline:
            wait = f" (asked to wait {retry_after:g}s)" if retry_after else ""
            return None, (f"gave up after {attempts} attempt{'s' if attempts != 1 else ''}: "
                          f"the next would pass the {self.deadline:g}s retry deadline{wait}")
        return at, ""
