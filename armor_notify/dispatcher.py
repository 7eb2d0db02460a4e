"""The dispatcher: claims deliveries from the outbox and runs them concurrently, one attempt at a
time each, with the shared retry policy and per-destination timeouts, isolating every plugin
failure to its delivery. Rate limits and leases live in the outbox, so they hold across processes.

All record changes happen on the calling thread; I/O threads only run ``sender.send`` (and when
the caller waits for one delivery alone and its sender promises bounded waits, the calling thread
runs that too).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import random
import socket
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field

from .alert import Alert
from .config import Config, Destination
from .delivery import Attempt, Delivery, State
from .destinations import Notification, Sender
from .outbox import ClaimRules, Outbox
from .outcome import Outcome
from .pool import IOPool, Job
from .retry import RetryPolicy
from .secrets import redact, secret_values

# Extra time a sender gets beyond its own timeout before the attempt counts as hung: libraries
# apply a timeout per connect and per read, so a well-behaved sender can overrun it slightly.
GRACE_FRACTION = 0.25
GRACE_MAX = 5.0
# A lease outlives two hard timeouts by this much, so only a dead worker's lease expires.
LEASE_MARGIN = 1.0
# How long to wait before looking again at deliveries that are due but cannot be claimed yet.
MIN_IDLE = 0.05


def hard_timeout(timeout: float) -> float:
    return timeout + min(GRACE_MAX, max(0.2, timeout * GRACE_FRACTION))


@dataclass
class _Running:
    delivery: Delivery
    started: float
    hard_deadline: float
    notification: Notification


@dataclass
class Dispatcher:
    """Delivers planned deliveries for one config."""

    config: Config
    max_workers: int = 32
    clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:"
                                               f"{uuid.uuid4().hex[:8]}")
    """Who holds the leases this dispatcher takes."""
    _senders: dict[str, Sender | Exception] = field(default_factory=dict, init=False)
    _pool: IOPool | None = field(default=None, init=False)
    _secrets: dict[str, list[str]] = field(default_factory=dict, init=False)

    # -- planning ---------------------------------------------------------------------------------
    def plan(self, alerts: Iterable[Alert]) -> list[Delivery]:
        """One delivery per (alert, routed destination); suppressed ones are marked at once."""
        deliveries = []
        for alert in alerts:
            targets: dict[tuple[str, str], str] = {}
            for route in self.config.router.route(alert):
                dest = self.config.destinations[route.destination]
                delivery = Delivery(
                    alert=alert,
                    destination=dest.name,
                    destination_type=dest.type.name,
                    rule=route.rule,
                    dedup_key=route.dedup_key,
                    also_matched=route.also_matched,
                )
                target = dest.config.target_key()
                first = targets.setdefault((dest.type.name, target), dest.name) if target else None
                if first is not None and first != dest.name:
                    delivery.finish(State.suppressed,
                                    f"'{first}' sends to the same {dest.type.title} target and "
                                    "already delivers this alert")
                elif alert.status != "triggered" and not dest.send_resolved:
                    delivery.finish(State.suppressed,
                                    f"send_resolved is off for this destination "
                                    f"({alert.status} alerts are not sent)")
                deliveries.append(delivery)
        return deliveries

    # -- delivering -------------------------------------------------------------------------------
    def rules_for(self, destination: str) -> ClaimRules | None:
        """How the outbox claims this destination's deliveries (``None``: no longer configured)."""
        dest = self.config.destinations.get(destination)
        if dest is None:
            return None
        return ClaimRules(
            lease=2 * hard_timeout(dest.config.timeout) + LEASE_MARGIN,
            max_attempts=dest.config.max_attempts,
            rate_key=self._rate_key(dest),
            rate_limit=dest.rate_limit,
        )

    @staticmethod
    def _rate_key(dest: Destination) -> str:
        # Rate keys are often secrets (an integration key, a webhook URL) and are written to the
        # outbox file, so only a digest of them is kept.
        identity = dest.config.rate_limit_key() or f"name:{dest.name}"
        return f"{dest.type.name}:{hashlib.sha256(identity.encode()).hexdigest()[:32]}"

    def deliver(
        self,
        outbox: Outbox,
        *,
        ids: Collection[str] | None = None,
        wait_seconds: float | None = None,
        stop_when_idle: bool = True,
        on_final: Callable[[Delivery], None] | None = None,
        poll: float = 1.0,
        leased: Sequence[Delivery] = (),
    ) -> None:
        """Claim and deliver due deliveries from ``outbox`` (only ``ids``, if given).

        Returns when nothing is left to do (``stop_when_idle``) or after ``wait_seconds``;
        deliveries still waiting for a retry then stay queued in the outbox. A worker passes
        ``stop_when_idle=False`` and polls for new work every ``poll`` seconds. ``leased`` are
        deliveries already leased to this dispatcher (at intake): they start at once.
        """
        start = self.clock()
        pool = self._io_pool()
        running: dict[Job[Outcome], _Running] = {}
        finished: queue.SimpleQueue[Job[Outcome]] = queue.SimpleQueue()
        # With ``ids``, the ones not yet final: once every one of them is running, there is
        # nothing to claim or look up until an attempt ends (the common single-alert send).
        open_ids = set(ids) if ids is not None else None

        def launch(batch: Iterable[Delivery], now: float) -> int:
            count = 0
            for delivery in batch:
                count += 1
                # The caller waits for this one delivery alone: a sender whose waits are
                # bounded by its timeout can run right here (see Sender.bounded_waits).
                alone = open_ids is not None and len(open_ids) == 1 and not running
                started = self._start(delivery, pool, finished, now, alone)
                if started is not None:
                    running[started[0]] = started[1]
                    continue
                self._finish(outbox, [delivery], now, on_final)
                if open_ids is not None:
                    open_ids.discard(delivery.id)
            return count

        launch(leased, start)
        # The pool outlives this call: its threads keep their senders' connections.
        while True:
            now = self.clock()
            out_of_time = wait_seconds is not None and now - start >= wait_seconds
            claimed = 0
            if open_ids is not None and not open_ids:
                break
            waiting = open_ids is None or bool(
                open_ids - {r.delivery.id for r in running.values()})
            if waiting and not out_of_time and len(running) < self.max_workers:
                claimed = launch(outbox.claim(self.owner, now, self.max_workers - len(running),
                                              self.rules_for, ids), now)
            # With every I/O thread busy nothing can start before an attempt ends, and the
            # loop wakes for that anyway: when the next delivery is due does not matter yet.
            busy = len(running) >= self.max_workers
            due = None if out_of_time or not waiting or busy else outbox.next_due(ids)
            if due is not None and not claimed:
                due = max(due, now + MIN_IDLE)  # due but not claimable yet (order, leases)
            if not running:
                if out_of_time or (due is None and stop_when_idle):
                    break
                until = min(due if due is not None else now + poll, now + poll)
                if wait_seconds is not None:
                    until = min(until, start + wait_seconds)
                time.sleep(max(0.0, until - self.clock()))
                continue
            timers = [r.hard_deadline for r in running.values()]
            timers += [t for t in (due, start + wait_seconds if wait_seconds else None)
                       if t is not None]
            timeout = max(0.0, min(timers) - self.clock())
            done = set()
            with contextlib.suppress(queue.Empty):
                done.add(finished.get(timeout=timeout))
                while True:  # and whatever else finished meanwhile
                    done.add(finished.get_nowait())
            now = self.clock()
            ended = []
            for job in list(running):
                run = running[job]
                if job in done:
                    outcome = self._outcome_of(job)
                elif now >= run.hard_deadline:
                    pool.abandon(job)
                    outcome = Outcome.retry(
                        f"no answer within {run.notification.timeout:g}s (timed out)")
                else:
                    continue
                del running[job]
                self._record(run, outcome, now)
                if outcome.retry_after:
                    dest = self.config.destinations[run.delivery.destination]
                    if dest.rate_limit is not None:  # the provider asked everyone to wait
                        outbox.hold_key(self._rate_key(dest), now + outcome.retry_after)
                ended.append(run.delivery)
            # Every attempt that ended meanwhile is recorded in one transaction (one sync).
            self._finish(outbox, ended, now, on_final)
            if open_ids is not None:
                open_ids.difference_update(d.id for d in ended if d.state.final)

    def _io_pool(self) -> IOPool:
        # One pool for the dispatcher's life, so its threads are reused (a pool per call started
        # new threads, and new connections, for every send).
        if self._pool is None:
            self._pool = IOPool(self.max_workers)
        return self._pool

    def _finish(self, outbox: Outbox, deliveries: Sequence[Delivery], now: float,
                on_final: Callable[[Delivery], None] | None) -> None:
        if not deliveries:
            return
        # A lost lease means another worker took the delivery over: its answer is the one kept.
        kept = outbox.complete(deliveries, self.owner, now)
        for delivery, ok in zip(deliveries, kept, strict=True):
            if ok and on_final is not None and delivery.state.final:
                on_final(delivery)

    def sender_for(self, dest: Destination) -> Sender | Exception:
        """The destination's sender, built once; a plugin that cannot build one yields the error."""
        if dest.name not in self._senders:
            try:
                sender = dest.type.sender(dest.config)
                if not callable(getattr(sender, "send", None)):
                    raise TypeError(f"{type(sender).__name__} has no send(notification) method")
                self._senders[dest.name] = sender
            except Exception as exc:
                self._senders[dest.name] = exc
        return self._senders[dest.name]

    def close(self) -> None:
        """Stop the I/O threads and close every sender that has a ``close()`` (kept-alive
        connections, sessions)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        for sender in self._senders.values():
            close = getattr(sender, "close", None)
            if callable(close):
                # Closing is best effort: the deliveries are already final.
                with contextlib.suppress(Exception):
                    close()
        self._senders.clear()

    def _start(self, delivery: Delivery, pool: IOPool, finished: queue.SimpleQueue[Job[Outcome]],
               now: float, alone: bool = False) -> tuple[Job[Outcome], _Running] | None:
        dest = self.config.destinations[delivery.destination]
        sender = self.sender_for(dest)
        if isinstance(sender, Exception):
            reason = self._clean(dest, f"plugin for type '{dest.type.name}' could not set up "
                                       f"this destination: {type(sender).__name__}: {sender}")
            delivery.attempts.append(Attempt(delivery.attempt_count + 1, now, 0.0, "failed", reason))
            delivery.finish(State.failed, reason)
            return None
        if delivery.first_attempt_at is None:
            delivery.first_attempt_at = now
        notification = Notification(
            alert=delivery.alert,
            destination=dest.name,
            rule=delivery.rule,
            dedup_key=delivery.dedup_key,
            source=self.config.defaults.source,
            link_text=self.config.defaults.link_text,
            timeout=dest.config.timeout,
            attempt=delivery.attempt_count + 1,
            test=delivery.test,
            digest=delivery.digest,
        )
        inline = alone and getattr(sender, "bounded_waits", False) is True
        start = IOPool.run_here if inline else pool.submit
        job = start(lambda: sender.send(notification), finished)
        return job, _Running(delivery, now, now + hard_timeout(dest.config.timeout), notification)

    @staticmethod
    def _outcome_of(job: Job[Outcome]) -> Outcome:
        exc = job.error
        if exc is not None:
            name = type(exc).__name__
            if isinstance(exc, OSError):  # network trouble the plugin did not classify
                return Outcome.retry(f"{name}: {exc}")
            return Outcome.failed(f"the plugin raised {name}: {exc}",
                                  hint="this is a bug in the destination plugin: report it to "
                                       "its authors")
        result = job.result
        if not isinstance(result, Outcome) or result.status not in ("delivered", "retry",
                                                                    "failed"):
            return Outcome.failed(
                f"the plugin returned {type(result).__name__!s} instead of an Outcome",
                hint="this is a bug in the destination plugin: report it to its authors")
        return result

    def _clean(self, dest: Destination, text: str) -> str:
        if not text:
            return text
        secrets = self._secrets.get(dest.name)
        if secrets is None:  # configs are frozen: collect each destination's secrets once
            secrets = self._secrets[dest.name] = secret_values(dest.config)
        return redact(text, secrets)

    def _record(self, run: _Running, outcome: Outcome, now: float) -> bool:
        """Apply an attempt's outcome; True when the delivery goes back on the queue."""
        delivery = run.delivery
        dest = self.config.destinations[delivery.destination]
        reason = self._clean(dest, outcome.reason)
        hint = self._clean(dest, outcome.hint) if outcome.hint else None
        delivery.attempts.append(Attempt(run.notification.attempt, run.started,
                                         max(0.0, now - run.started), outcome.status, reason))
        delivery.details.update(outcome.details)
        if outcome.status == "delivered":
            delivery.finish(State.delivered, reason, hint)
            return False
        if outcome.status == "failed":
            delivery.finish(State.failed, reason, hint)
            return False
        policy = RetryPolicy.for_destination(dest.config)
        at, why = policy.next_attempt(delivery.attempt_count, delivery.first_attempt_at or now,
                                      now, outcome.retry_after, self.rng)
        if at is None:
            delivery.finish(State.dead, f"{why}; last: {reason}", hint)
            return False
        delivery.state = State.queued
        delivery.reason, delivery.hint = reason, hint
        delivery.next_attempt_at = at
        return True

    # -- test events ------------------------------------------------------------------------------
    def test_delivery(self, destination: str, alert: Alert, dedup_key: str) -> Delivery:
        dest = self.config.destinations[destination]
        return Delivery(alert=alert, destination=dest.name, destination_type=dest.type.name,
                        rule="armor-notify test", dedup_key=dedup_key, test=True)


def resolved_copy(alert: Alert) -> Alert:
    """The same alert, resolved (for ``test --resolve``)."""
    return alert.model_copy(update={"status": "resolved"})

