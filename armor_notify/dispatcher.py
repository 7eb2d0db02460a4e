"""The dispatcher: runs deliveries concurrently, one attempt at a time each, with the shared retry
policy, per-destination timeouts and rate limits, isolating every plugin failure to its delivery.

All record changes happen on the calling thread; worker threads only run ``sender.send``.
"""

from __future__ import annotations

import contextlib
import heapq
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field

from .alert import Alert
from .config import Config, Destination
from .delivery import Attempt, Delivery, State
from .destinations import Notification, RateLimit, Sender
from .outcome import Outcome
from .pool import IOPool
from .retry import RetryPolicy
from .secrets import redact, secret_values

# Extra time a sender gets beyond its own timeout before the attempt counts as hung: libraries
# apply a timeout per connect and per read, so a well-behaved sender can overrun it slightly.
GRACE_FRACTION = 0.25
GRACE_MAX = 5.0


def hard_timeout(timeout: float) -> float:
    return timeout + min(GRACE_MAX, max(0.2, timeout * GRACE_FRACTION))


class RateLimiter:
    """A sliding-window limit per key, in memory: a storm is delayed, never dropped."""

    def __init__(self) -> None:
        self._sent: dict[str, deque[float]] = {}

    def next_free(self, key: str, limit: RateLimit, now: float) -> float:
        """The earliest time another notification may go out under ``key``."""
        sent = self._sent.setdefault(key, deque())
        while sent and sent[0] <= now - limit.period:
            sent.popleft()
        return now if len(sent) < limit.count else sent[0] + limit.period

    def record(self, key: str, now: float) -> None:
        self._sent.setdefault(key, deque()).append(now)


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
    _senders: dict[str, Sender | Exception] = field(default_factory=dict, init=False)
    _limiter: RateLimiter = field(default_factory=RateLimiter, init=False)

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

    # -- running ----------------------------------------------------------------------------------
    def run(
        self,
        deliveries: Sequence[Delivery],
        *,
        dry_run: bool = False,
        wait_seconds: float | None = None,
    ) -> Sequence[Delivery]:
        """Deliver every queued delivery; return when all are final or ``wait_seconds`` passed.

        Deliveries still waiting for a retry after ``wait_seconds`` stay ``queued``.
        """
        start = self.clock()
        due: list[tuple[float, int, Delivery]] = []
        for n, d in enumerate(deliveries):
            if d.state is State.queued:
                if dry_run:
                    d.finish(State.skipped, "dry run: nothing was sent")
                else:
                    heapq.heappush(due, (d.next_attempt_at, n, d))
        if not due:
            return deliveries
        pool = IOPool(self.max_workers)
        running: dict[Future[Outcome], _Running] = {}
        seq = len(deliveries)
        try:
            while due or running:
                now = self.clock()
                out_of_time = wait_seconds is not None and now - start >= wait_seconds
                while due and due[0][0] <= now and not out_of_time:
                    _, _, delivery = heapq.heappop(due)
                    later = self._rate_limited_until(delivery, now)
                    if later > now:
                        delivery.next_attempt_at = later
                        seq += 1
                        heapq.heappush(due, (later, seq, delivery))
                        continue
                    started = self._start(delivery, pool, now)
                    if started is not None:
                        running[started[0]] = started[1]
                if out_of_time and not running:
                    break
                timers = [r.hard_deadline for r in running.values()]
                if due and not out_of_time:
                    timers.append(due[0][0])
                if wait_seconds is not None:
                    timers.append(start + wait_seconds)
                timeout = max(0.0, min(timers) - self.clock()) if timers else None
                if running:
                    done, _ = wait(list(running), timeout=timeout, return_when=FIRST_COMPLETED)
                else:
                    time.sleep(timeout or 0.0)
                    done = set()
                now = self.clock()
                for future in list(running):
                    run = running[future]
                    if future in done:
                        outcome = self._outcome_of(future, run)
                    elif now >= run.hard_deadline:
                        pool.abandon(future)
                        outcome = Outcome.retry(
                            f"no answer within {run.notification.timeout:g}s (timed out)")
                    else:
                        continue
                    del running[future]
                    if self._record(run, outcome, now):
                        seq += 1
                        heapq.heappush(due, (run.delivery.next_attempt_at, seq, run.delivery))
        finally:
            pool.close()
        return deliveries

    def _rate_limited_until(self, delivery: Delivery, now: float) -> float:
        dest = self.config.destinations[delivery.destination]
        limit = dest.rate_limit
        if limit is None:
            return now
        return self._limiter.next_free(self._limit_key(dest), limit, now)

    @staticmethod
    def _limit_key(dest: Destination) -> str:
        return f"{dest.type.name}:{dest.config.rate_limit_key() or 'name:' + dest.name}"

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
        """Close every sender that has a ``close()`` (kept-alive connections, sessions)."""
        for sender in self._senders.values():
            close = getattr(sender, "close", None)
            if callable(close):
                # Closing is best effort: the deliveries are already final.
                with contextlib.suppress(Exception):
                    close()
        self._senders.clear()

    def _start(self, delivery: Delivery, pool: IOPool,
               now: float) -> tuple[Future[Outcome], _Running] | None:
        dest = self.config.destinations[delivery.destination]
        sender = self.sender_for(dest)
        if isinstance(sender, Exception):
            delivery.finish(State.failed, self._clean(
                dest, f"plugin for type '{dest.type.name}' could not set up this destination: "
                      f"{type(sender).__name__}: {sender}"))
            return None
        if dest.rate_limit is not None:
            self._limiter.record(self._limit_key(dest), now)
        if delivery.first_attempt_at is None:
            delivery.first_attempt_at = now
        delivery.state = State.in_flight
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
        )
        future = pool.submit(lambda: sender.send(notification))
        return future, _Running(delivery, now, now + hard_timeout(dest.config.timeout),
                                notification)

    @staticmethod
    def _outcome_of(future: Future[Outcome], run: _Running) -> Outcome:
        exc = future.exception()
        if exc is not None:
            name = type(exc).__name__
            if isinstance(exc, OSError):  # network trouble the plugin did not classify
                return Outcome.retry(f"{name}: {exc}")
            return Outcome.failed(f"the plugin raised {name}: {exc}",
                                  hint="this is a bug in the destination plugin: report it to "
                                       "its authors")
        result = future.result()
        if not isinstance(result, Outcome) or result.status not in ("delivered", "retry",
                                                                    "failed"):
            return Outcome.failed(
                f"the plugin returned {type(result).__name__!s} instead of an Outcome",
                hint="this is a bug in the destination plugin: report it to its authors")
        return result

    def _clean(self, dest: Destination, text: str) -> str:
        return redact(text, secret_values(dest.config))

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
            delivery.finish(State.failed, f"{why}; last: {reason}", hint)
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

