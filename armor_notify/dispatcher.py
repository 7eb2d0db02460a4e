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
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .alert import Alert
from .config import Config, Destination
from .delivery import Attempt, Delivery, State
from .destinations import Notification, Sender
from .history import NO_HISTORY, History
from .outbox import ClaimRules, Outbox
from .outcome import Outcome
from .pool import IOPool, Job
from .retry import RetryPolicy
from .secrets import redact, secret_values

# Extra time a sender gets beyond its own timeout before the attempt counts as hung: HttpClient
# bounds a whole post, but other libraries a plugin uses may bound each connect and read only, so
# a well-behaved sender can overrun its timeout slightly.
GRACE_FRACTION = 0.25
GRACE_MAX = 5.0
# A lease outlives two hard timeouts by this much, so only a dead worker's lease expires.
LEASE_MARGIN = 1.0
# How long to wait before looking again at deliveries that are due but cannot be claimed yet.
MIN_IDLE = 0.05
# ... and when some are due but their destinations have their full share of the pool.
BUSY_IDLE = 0.25
# A destination that had an attempt start this recently counts as having work when the pool is
# shared out (one with more due work is claimed again well within this).
RECENT = 1.0


def hard_timeout(timeout: float) -> float:
    return timeout + min(GRACE_MAX, max(0.2, timeout * GRACE_FRACTION))


@dataclass(eq=False, slots=True)
class _Running:
    """An attempt handed to the pool (or run inline), until its outcome is recorded."""

    delivery: Delivery
    notification: Notification
    job: Job[Outcome]
    started: float
    """When it was handed over (wall clock, as stored; its thread may start a moment later)."""
    began: float
    """The same moment on the monotonic clock (attempt durations are measured from it)."""
    hard: float
    """Its hard timeout: seconds from when a thread starts it (never from when it was queued)."""
    lease_end: float
    """Monotonic time by which its lease must be given back (completed or released)."""
    gave_up: float = 0.0
    """Monotonic time of its hard timeout, once given up on."""
    retry: tuple[float | None, str] = (None, "")
    """Given up on: when the timed-out attempt is retried (wall clock), or why it is not."""
    late_until: float = 0.0
    """Given up on: until when (monotonic) a late answer is still awaited and recorded instead."""


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
    _hung: dict[Job[Outcome], tuple[str, float]] = field(default_factory=dict, init=False)
    """Attempts given up on whose thread is still busy: their destination, and until when
    (monotonic) they count against its share of the pool."""
    _secrets: dict[str, list[str]] = field(default_factory=dict, init=False)
    _wakers: set[Callable[[], None]] = field(default_factory=set, init=False)
    """How to wake each pass that is running (``wake``)."""

    # -- planning ---------------------------------------------------------------------------------
    def plan(self, alerts: Iterable[Alert]) -> list[Delivery]:
        """One delivery per (alert, routed destination): :meth:`Config.plan`."""
        return self.config.plan(alerts)

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
            longest_hold=dest.config.retry_deadline,
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
        chores: Sequence[Chore] = (),
        stop: threading.Event | None = None,
    ) -> None:
        """Claim and deliver due deliveries from ``outbox`` (only ``ids``, if given).

        Returns when nothing is left to do (``stop_when_idle``) or after ``wait_seconds``;
        deliveries still waiting for a retry then stay queued in the outbox. A worker passes
        ``stop_when_idle=False`` and polls for new work every ``poll`` seconds. ``leased`` are
        deliveries already leased to this dispatcher (at intake): they start as soon as the
        pool has room for them. Attempts that have not started when this returns (or is
        interrupted) never start: their deliveries go back on the queue, no attempt spent.
        ``chores`` run between deliveries as they fall due. Setting ``stop`` (then
        :meth:`wake`) ends the pass as running out of time does: nothing new starts, what has
        not started goes back on the queue, and the attempts running are waited for.
        """
        _Pass(self, outbox, ids, on_final, chores, stop).run(leased, wait_seconds,
                                                             stop_when_idle, poll)

    def wake(self) -> None:
        """Wake every running pass at once: new work was queued in this process (a worker in
        ``armor-notify serve`` learns of an HTTP intake this way, not at its next poll)."""
        for wake in list(self._wakers):
            wake()

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
               now: float, leased_at: float, alone: bool = False,
               history: History = NO_HISTORY) -> _Running | None:
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
        notification = self.notification_for(
            delivery, thread=self._thread_of(delivery, history)
            if getattr(sender, "threads", False) is True else None)
        inline = alone and getattr(sender, "bounded_waits", False) is True
        start = IOPool.run_here if inline else pool.submit
        began = time.monotonic()
        job = start(lambda: sender.send(notification), finished)
        hard = hard_timeout(dest.config.timeout)
        # The lease (claimed at ``leased_at``) is twice the hard timeout plus a margin.
        return _Running(delivery, notification, job, now, began, hard, leased_at + 2 * hard)

    def notification_for(self, delivery: Delivery,
                         thread: Mapping[str, Any] | None = None) -> Notification:
        """What the sender is given for the delivery's next attempt."""
        dest = self.config.destinations[delivery.destination]
        return Notification(
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
            thread=thread,
        )

    def preview(self, delivery: Delivery) -> dict[str, Any]:
        """What the delivery's sender would put on the wire (its ``preview``), with every
        secret of the destination masked; ``{"error": …}`` when it cannot be shown."""
        dest = self.config.destinations[delivery.destination]
        sender = self.sender_for(dest)
        if isinstance(sender, Exception):
            return {"error": self._clean(dest, f"plugin for type '{dest.type.name}' could not "
                                               f"set up this destination: "
                                               f"{type(sender).__name__}: {sender}")}
        show = getattr(sender, "preview", None)
        if not callable(show):
            return {"error": f"the {dest.type.title} plugin cannot show what it sends (its "
                             "sender has no preview)"}
        try:
            shown = show(self.notification_for(delivery))
        except Exception as exc:  # a template that fails for this alert, a plugin's bug
            return {"error": self._clean(dest, f"{type(exc).__name__}: {exc}")}
        return self._clean_details(dest, shown)

    @staticmethod
    def _thread_of(delivery: Delivery, history: History) -> Mapping[str, Any] | None:
        """The incident's message on the destination (:attr:`Notification.thread`)."""
        if delivery.test:
            return None
        posted = history.posted(delivery.destination, delivery.dedup_key)
        if posted is None:
            return None
        status, message = posted
        if status == "resolved" and delivery.alert.status == "triggered":
            return None  # the incident was closed: a trigger opens a new one
        return message

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

    def _secrets_of(self, dest: Destination) -> list[str]:
        secrets = self._secrets.get(dest.name)
        if secrets is None:  # configs are frozen: collect each destination's secrets once
            secrets = self._secrets[dest.name] = [s for s in secret_values(dest.config) if s]
        return secrets

    def _clean(self, dest: Destination, text: str) -> str:
        if not text:
            return text
        secrets = self._secrets_of(dest)
        return redact(text, secrets) if secrets else text

    def _clean_details(self, dest: Destination, details: Mapping[str, Any]) -> dict[str, Any]:
        """``details`` with every secret of ``dest`` masked in every string inside it, however
        deep (what JSON cannot hold as it is, the outbox stores as text: masked as text too)."""
        secrets = self._secrets_of(dest)
        if not secrets:
            return dict(details)

        def clean(value: Any) -> Any:
            if isinstance(value, str):
                return redact(value, secrets)
            if value is None or isinstance(value, bool | int | float):
                return value
            if isinstance(value, dict | Mapping):
                return {clean(k) if isinstance(k, str) else k: clean(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [clean(v) for v in value]
            return redact(str(value), secrets)

        cleaned: dict[str, Any] = clean(details)
        return cleaned

    def _retry_plan(self, delivery: Delivery, attempts: int, now: float,
                    retry_after: float | None) -> tuple[float | None, str]:
        dest = self.config.destinations[delivery.destination]
        policy = RetryPolicy.for_destination(dest.config)
        return policy.next_attempt(attempts, delivery.first_attempt_at or now, now, retry_after,
                                   self.rng)

    def _record(self, run: _Running, outcome: Outcome, now: float, started: float,
                duration: float, plan: tuple[float | None, str] | None = None) -> bool:
        """Apply an attempt's outcome (``plan``: its retry, when already decided); True when the
        delivery goes back on the queue."""
        delivery = run.delivery
        dest = self.config.destinations[delivery.destination]
        reason = self._clean(dest, outcome.reason)
        hint = self._clean(dest, outcome.hint) if outcome.hint else None
        delivery.attempts.append(Attempt(run.notification.attempt, started, duration,
                                         outcome.status, reason))
        if outcome.details:
            delivery.details.update(self._clean_details(dest, outcome.details))
        if outcome.status == "delivered":
            delivery.finish(State.delivered, reason, hint)
            return False
        if outcome.status == "failed":
            delivery.finish(State.failed, reason, hint)
            return False
        at, why = plan or self._retry_plan(delivery, delivery.attempt_count, now,
                                           outcome.retry_after)
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


_WAKE: Any = object()
"""Put on a pass's queue of finished attempts to wake it: new work may be due."""


@dataclass
class Chore:
    """Work a long pass does now and then between deliveries, on the pass's thread (a worker
    removing finished deliveries past their retention): ``run(now)`` every ``every`` seconds,
    the first time when the pass starts."""

    every: float
    run: Callable[[float], None]
    due: float = 0.0
    """When it runs next (monotonic clock); 0: at once."""


class _Pass:
    """One ``Dispatcher.deliver`` call: its attempts, its backlog and its timers.

    Times for waiting are on the monotonic clock; times that are stored (run_at, an attempt's
    start) are the dispatcher's wall clock. The I/O pool is shared out between destinations: a
    destination may start an attempt only while it holds fewer than its share of the pool's
    threads (``max_workers`` divided by the number of destinations with work), counting attempts
    that were given up on and still hold a thread, so a hung destination ties up its own share
    and never another's.
    """

    def __init__(self, dispatcher: Dispatcher, outbox: Outbox, ids: Collection[str] | None,
                 on_final: Callable[[Delivery], None] | None,
                 chores: Sequence[Chore] = (), stop: threading.Event | None = None) -> None:
        self.d = dispatcher
        self.outbox = outbox
        self.history = outbox.history()
        self.ids = ids
        self.on_final = on_final
        self.chores = chores
        self.stop = stop
        self.pool = dispatcher._io_pool()
        self.finished: queue.SimpleQueue[Job[Outcome]] = queue.SimpleQueue()
        self.running: dict[Job[Outcome], _Running] = {}
        """Attempts that hold (or wait for) an I/O thread."""
        self.late: dict[Job[Outcome], _Running] = {}
        """Attempts given up on whose lease is still held: a late answer is recorded instead."""
        self.backlog: dict[str, deque[Delivery]] = {}
        """Deliveries leased at intake that have not started, by destination."""
        self.start_by: dict[str, float] = {}
        """By destination: a leased delivery not started by then is given back (its lease must
        outlast its attempt)."""
        self.held: set[str] = set()
        """Ids of the deliveries in ``running``, ``late`` and ``backlog``."""
        # With ``ids``, the ones not yet final: once every one of them is held here, there is
        # nothing to claim or look up until an attempt ends (the common single-alert send).
        self.open_ids = set(ids) if ids is not None else None
        self.last_start: dict[str, float] = {}
        self.begin = 0.0
        """When this pass started (monotonic): deliveries leased at intake were leased then."""
        self.ended: list[Delivery] = []
        self.released: list[Delivery] = []

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, leased: Sequence[Delivery], wait_seconds: float | None, stop_when_idle: bool,
            poll: float) -> None:
        begin = self.begin = time.monotonic()
        end = begin + wait_seconds if wait_seconds is not None else None
        # Another process's intake wakes a long pass at once (a backend that can tell, such as
        # PostgreSQL's NOTIFY); the token is not a job, so settling it records nothing.
        def wake() -> None:
            self.finished.put(_WAKE)

        stop_listening = self.outbox.listen(wake) if not stop_when_idle else None
        self.d._wakers.add(wake)
        try:
            self._hold(leased)
            done: set[Job[Outcome]] = set()
            while True:
                mono, now = time.monotonic(), self.d.clock()
                for chore in self.chores:
                    if mono >= chore.due:
                        chore.due = mono + chore.every
                        chore.run(now)
                out_of_time = (end is not None and mono >= end) or (
                    self.stop is not None and self.stop.is_set())
                if done or self.running or self.late:
                    self._settle(done, mono, now, out_of_time)
                    self._flush(now)
                    if self.open_ids is not None and not self.open_ids:
                        break
                if out_of_time:
                    self._give_back_unstarted()
                elif self.backlog and mono - begin >= hard_timeout(0.0):  # none can be stale before
                    self._give_back_stale(mono)
                claimed, busy = 0, False
                wanted = self.open_ids is None or len(self.open_ids) > len(self.held)
                if not out_of_time:
                    claimed, busy = self._fill(mono, now, claim=wanted)
                if self.ended or self.released:
                    self._flush(now)
                    if self.open_ids is not None and not self.open_ids:
                        break
                room = self.d.max_workers - len(self.running)
                wanted = self.open_ids is None or len(self.open_ids) > len(self.held)
                # With every I/O thread busy nothing can start before an attempt ends, and the
                # loop wakes for that anyway: when the next delivery is due does not matter yet.
                due = self.outbox.next_due(self.ids) if (
                    wanted and not out_of_time and room > 0) else None
                local = self.running or self.late or self.backlog
                if not local and (out_of_time or (due is None and stop_when_idle)):
                    break
                timers = [mono + poll]
                if due is not None:
                    wait = due - now
                    if wait <= 0 and not claimed:  # due but not claimable yet (order, leases)
                        wait = BUSY_IDLE if busy else MIN_IDLE
                    timers.append(mono + wait)
                for job, run in self.running.items():
                    timers.append((job.started or mono) + run.hard)
                if self.late:
                    timers += [run.late_until for run in self.late.values()]
                if self.backlog:
                    timers += [self._start_by(dest) for dest in self.backlog]
                if end is not None:
                    timers.append(end)
                timers += [chore.due for chore in self.chores]
                done = set()
                with contextlib.suppress(queue.Empty):
                    done.add(self.finished.get(timeout=max(0.0, min(timers) - time.monotonic())))
                    while True:  # and whatever else finished meanwhile
                        done.add(self.finished.get_nowait())
        except BaseException:
            # Interrupted (Ctrl-C) or failed: what has not started never will, and goes back on
            # the queue; an attempt that is running keeps its lease (it may still be sent).
            self.on_final = None  # the caller is unwinding: no more callbacks into it
            with contextlib.suppress(Exception):
                now = self.d.clock()
                self._settle(set(), time.monotonic(), now, True)
                self._give_back_unstarted()
                self._flush(now)
            raise
        finally:
            self.d._wakers.discard(wake)
            if stop_listening is not None:
                stop_listening()

    # -- taking work ------------------------------------------------------------------------------
    def _hold(self, leased: Sequence[Delivery]) -> None:
        for delivery in leased:
            backlog = self.backlog.get(delivery.destination)
            if backlog is None:
                backlog = self.backlog[delivery.destination] = deque()
            backlog.append(delivery)
            self.held.add(delivery.id)

    def _start_by(self, dest: str) -> float:
        start_by = self.start_by.get(dest)
        if start_by is None:  # leased at the start: the attempt must end within the lease
            timeout = self.d.config.destinations[dest].config.timeout
            start_by = self.start_by[dest] = self.begin + hard_timeout(timeout)
        return start_by

    def _load(self) -> Counter[str]:
        """Threads held per destination: running attempts and those given up on."""
        load: Counter[str] = Counter()
        for run in self.running.values():
            load[run.delivery.destination] += 1
        for run in self.late.values():
            load[run.delivery.destination] += 1
        hung = self.d._hung
        if hung:
            mono = time.monotonic()
            for job, (dest, until) in list(hung.items()):
                if job.finished or mono >= until:
                    del hung[job]
                else:
                    load[dest] += 1
        return load

    def _fill(self, mono: float, now: float, *, claim: bool) -> tuple[int, bool]:
        """Start what the pool has room for, within each destination's share: leased deliveries
        first, then claimed ones. Returns how many started, and whether some destination is at
        its share."""
        room = self.d.max_workers - len(self.running)
        if room <= 0:
            return 0, False
        if not claim and len(self.backlog) == 1 and not (self.running or self.late or
                                                         self.d._hung or self.last_start):
            # One destination and nothing else (a send to one destination): the pool is its own.
            [(dest, backlog)] = self.backlog.items()
            count = min(room, len(backlog))
            for _ in range(count):
                self._launch(backlog.popleft(), mono, now, self.begin)
            if not backlog:
                del self.backlog[dest]
            return count, False
        load = self._load()
        active = {dest for dest, n in load.items() if n} | set(self.backlog)
        active.update(dest for dest, t in self.last_start.items() if mono - t < RECENT)
        share = max(1, self.d.max_workers // max(1, len(active)))
        started = 0
        while room > 0 and self.backlog:
            progress = False
            for dest in list(self.backlog):  # round robin over the destinations
                if room <= 0:
                    break
                if load[dest] >= share:
                    continue
                backlog = self.backlog[dest]
                delivery = backlog.popleft()
                if not backlog:
                    del self.backlog[dest]
                self._launch(delivery, mono, now, self.begin)
                load[dest] += 1
                room -= 1
                started += 1
                progress = True
            if not progress:
                break
        busy = [dest for dest, n in load.items() if n >= share]
        while claim and room > 0:
            # No destination may pass its share in one claim either: ask for at most what the
            # fullest one not at its share may still start, and again while there is room.
            limit = min(room, share - max((n for n in load.values() if n < share), default=0))
            batch = self.outbox.claim(self.d.owner, now, limit, self.d.rules_for, self.ids,
                                      busy=busy)
            for delivery in batch:
                self._launch(delivery, mono, now, mono)
                load[delivery.destination] += 1
                room -= 1
                started += 1
            busy = [dest for dest, n in load.items() if n >= share]
            if len(batch) < limit:
                break
        return started, bool(busy)

    def _launch(self, delivery: Delivery, mono: float, now: float, leased_at: float) -> None:
        # The caller waits for this one delivery alone: a sender whose waits are bounded by its
        # timeout can run right here (see Sender.bounded_waits).
        alone = (self.open_ids is not None and len(self.open_ids) == 1 and not self.running
                 and not self.late)
        run = self.d._start(delivery, self.pool, self.finished, now, leased_at, alone,
                            self.history)
        if run is None:
            self.held.discard(delivery.id)
            self.ended.append(delivery)
            return
        self.running[run.job] = run
        self.held.add(delivery.id)
        self.last_start[delivery.destination] = mono

    # -- outcomes ---------------------------------------------------------------------------------
    def _settle(self, done: set[Job[Outcome]], mono: float, now: float,
                out_of_time: bool) -> None:
        """Record finished attempts, give up on those past their hard timeout, and record the
        timeouts whose late answer no longer counts."""
        for job in done:
            run = self.running.pop(job, None) or self.late.pop(job, None)
            if run is None:  # given up on and recorded: its answer came too late
                self.d._hung.pop(job, None)
                continue
            self._record(run, self.d._outcome_of(job), mono, now)
        for job, run in list(self.running.items()) if self.running else ():
            if job.started is not None and mono >= job.started + run.hard:
                del self.running[job]
                self.pool.abandon(job)
                run.gave_up = mono
                run.retry = self.d._retry_plan(run.delivery, run.delivery.attempt_count + 1,
                                               now, None)
                at = run.retry[0]
                # The timeout is recorded when the retry falls due (or the lease must be given
                # back); an answer that arrives before then is recorded instead, so an attempt
                # that was only slow is not sent twice.
                run.late_until = min(run.lease_end, mono + (at - now)) if at is not None else 0
                self.late[job] = run
        for job, run in list(self.late.items()) if self.late else ():
            if out_of_time or mono >= run.late_until:
                del self.late[job]
                # Its thread counts against the destination for one more hard timeout: a sender
                # that overran its timeout has answered by then; one that has not is broken,
                # and its thread is written off (the pool has replaced it).
                self.d._hung[job] = (run.delivery.destination, run.gave_up + run.hard)
                timed_out = Outcome.retry(
                    f"no answer within {run.notification.timeout:g}s (timed out)")
                self._record(run, timed_out, mono, now, ended=run.gave_up, plan=run.retry)

    def _record(self, run: _Running, outcome: Outcome, mono: float, now: float,
                ended: float | None = None, plan: tuple[float | None, str] | None = None) -> None:
        delivery = run.delivery
        self.d._record(run, outcome, now, run.started,
                       max(0.0, (ended if ended is not None else mono) - run.began), plan)
        if outcome.retry_after:
            dest = self.d.config.destinations[delivery.destination]
            if dest.rate_limit is not None:  # the provider asked everyone to wait
                self.outbox.hold_key(self.d._rate_key(dest), now + outcome.retry_after)
        self.held.discard(delivery.id)
        self.ended.append(delivery)

    def _give_back_unstarted(self) -> None:
        """Cancel attempts no thread has started and return every delivery not started."""
        for job, run in list(self.running.items()):
            if self.pool.cancel(job):
                del self.running[job]
                self.released.append(run.delivery)
        for backlog in self.backlog.values():
            self.released.extend(backlog)
        self.backlog.clear()
        self.held.difference_update(d.id for d in self.released)

    def _give_back_stale(self, mono: float) -> None:
        """Leased deliveries that could not start in time go back on the queue (to be claimed
        again under a fresh lease)."""
        for dest in [dest for dest in self.backlog if mono >= self._start_by(dest)]:
            backlog = self.backlog.pop(dest)
            self.released.extend(backlog)
            self.held.difference_update(d.id for d in backlog)

    def _flush(self, now: float) -> None:
        """Store what ended (every outcome in one transaction: one sync) and give back what was
        not started."""
        if self.ended:
            ended, self.ended = self.ended, []
            self.d._finish(self.outbox, ended, now, self.on_final)
            if self.open_ids is not None:
                self.open_ids.difference_update(d.id for d in ended if d.state.final)
        if self.released:
            released, self.released = self.released, []
            self.outbox.release(released, self.d.owner, now)


def resolved_copy(alert: Alert) -> Alert:
    """The same alert, resolved (for ``test --resolve``)."""
    return alert.model_copy(update={"status": "resolved"})

