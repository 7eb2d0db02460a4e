"""Deliveries: one record per (alert, destination), with a state, attempts and a result.

The dispatcher moves records through these states; a durable store can later persist exactly
these fields without the dispatcher changing shape.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from .times import iso

if TYPE_CHECKING:
    from .alert import Alert


class State(str, Enum):
    """Where a delivery is (SPEC §4 outcomes)."""

    queued = "queued"
    """Waiting for its first attempt or for a retry (``next_attempt_at``)."""
    in_flight = "in_flight"
    """An attempt is running."""
    delivered = "delivered"
    failed = "failed"
    """A permanent failure: the destination refused it (never retried)."""
    dead = "dead"
    """Retries exhausted: attempts or the retry deadline ran out on retryable failures."""
    batched = "batched"
    """Collected for a digest that has not been sent yet."""
    digested = "digested"
    """Sent as one item of a digest (the digest delivery has the outcome)."""
    suppressed = "suppressed"
    """Deliberately not sent (e.g. a resolved alert to a destination with send_resolved off)."""
    skipped = "skipped"
    """Not sent because of --dry-run."""

    @property
    def final(self) -> bool:
        return self not in (State.queued, State.in_flight, State.batched)


@dataclass
class Attempt:
    """One try: when, how long, and what the sender said."""

    number: int
    started_at: float
    duration: float
    status: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "started_at": iso(self.started_at),
            "duration_ms": round(self.duration * 1000, 1),
            "status": self.status,
            "reason": self.reason,
        }


@dataclass
class Delivery:
    """One alert to one destination."""

    alert: Alert
    destination: str
    destination_type: str
    rule: str
    dedup_key: str
    also_matched: tuple[str, ...] = ()
    id: str = field(default_factory=lambda: os.urandom(16).hex())
    state: State = State.queued
    attempts: list[Attempt] = field(default_factory=list)
    next_attempt_at: float = 0.0
    first_attempt_at: float | None = None
    reason: str = ""
    """The destination's own words about the last attempt (or why it was not sent)."""
    hint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    test: bool = False
    created_at: float = 0.0
    """When the delivery was accepted (written to the outbox)."""
    repeat: bool = False
    """True when this alert was already accepted within the repeat window: not sent again."""
    digest: tuple[Alert, ...] = ()
    """For a digest delivery: the alerts it summarises."""
    mute_id: int | None = None
    """The mute holding it (``armor-notify mute``), until the mute ends."""
    held: bool = False
    """Written to wait (a mute, a schedule's hold) rather than to be sent now (set at intake;
    not stored)."""
    checked: bool = False
    """Decided by the check ledger, which recognises repeats itself: the repeat window does not
    apply (a check may fail, pass and fail again within it)."""

    @property
    def attempt_count(self) -> int:
        return len(self.attempts)

    def finish(self, state: State, reason: str = "", hint: str | None = None) -> None:
        self.state = state
        self.reason = reason
        self.hint = hint

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "alert_id": self.alert.id,
            "alert_title": self.alert.title,
            "status": self.alert.status,
            "destination": self.destination,
            "destination_type": self.destination_type,
            "rule": self.rule,
            "also_matched": list(self.also_matched),
            "dedup_key": self.dedup_key,
            "state": self.state.value,
            "attempts": self.attempt_count,
            "reason": self.reason,
            "hint": self.hint,
            "details": self.details,
            "next_attempt_at": iso(self.next_attempt_at) if self.state is State.queued else None,
            "accepted_at": iso(self.created_at) if self.created_at else None,
            "repeat": self.repeat,
            "history": [a.as_dict() for a in self.attempts],
            "digest_items": [a.id for a in self.digest],
            "muted_by": self.mute_id,
        }


