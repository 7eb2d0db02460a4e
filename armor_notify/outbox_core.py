"""What every outbox backend shares: the protocol, and the algorithms, written once.

The protocol (:class:`Outbox`, handed an :class:`IntakePolicy` and :class:`ClaimRules`, raising
:class:`OutboxError`) is what the dispatcher, the API and the command line use. Below it is how a
backend on SQL keeps that protocol: intake, claims, digests, rate keys (GCRA), the history the
noise gate asks, and how a delivery is stored as a row and read back. Each is a function over
:class:`Db`, the statements of one transaction.

A backend (:class:`~armor_notify.outbox.SqliteOutbox`,
:class:`~armor_notify.outbox_postgres.PostgresOutbox`) owns its connections, transactions, schema
and error messages, and runs these functions inside its transactions, through an adaptor for its
dialect: SQL here is written with ``?`` placeholders, and the adaptor says what truly differs
(a list parameter, how a claim keeps the per-key order and locks what it takes, how a rate key's
row is read and locked). A new backend is a new adaptor and class, not a copy of these.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from . import ledger, mutes
from .alert import Alert, Asset
from .delivery import Attempt, Delivery, State
from .destinations import RateLimit
from .digests import make_digest
from .errors import ArmorNotifyError
from .history import History
from .noise import Decision, batch_key

if TYPE_CHECKING:
    from .ledger import CheckState, Failing
    from .mutes import Closed, Mute, MuteScope
from .outcome import MAX_RETRY_AFTER
from .sql import Db, Reads, Row

__all__ = ["Db", "Reads", "Row"]  # the seam, for the backends

# Times read back from the store are kept within what every date formatter can show (a damaged
# row, or one written before delays were bounded, may hold 1e15 or inf).
MAX_TIME = 32_503_680_000.0  # 3000-01-01
UNREADABLE = "the stored delivery cannot be read"
# A stored rate-limit time this far beyond what is possible means the clock stepped back. Below
# it, a lead is a process's ``now`` taken a moment before the write lock (at most SQLite's busy
# timeout, 5 s: this is twice that) or clocks a little apart.
CLOCK_SLACK = 10.0
# Rate-limit times that differ by less than this are equal (sums of intervals round).
TICK = 1e-6

FINAL = tuple(s.value for s in State if s.final)
# Deliveries that count as "notified" for cooldowns and daily limits.
NOTIFYING = "('queued','in_flight','delivered','failed','dead')"


class OutboxError(ArmorNotifyError):
    """The outbox cannot be used: a state file corrupt, locked or unwritable, a database out of
    reach or refusing; the message says which, where, and what to check."""


@dataclass(frozen=True)
class ClaimRules:
    """What the outbox needs to know about a destination to claim its deliveries."""

    lease: float
    """Seconds a claim lasts; longer than the attempt's hard timeout."""
    max_attempts: int
    rate_key: str | None = None
    rate_limit: RateLimit | None = None
    longest_hold: float = MAX_RETRY_AFTER
    """The longest a destination's ``Retry-After`` may hold the rate key (its retry deadline
    is the useful bound): a longer stored hold is cut to this from now."""


RulesFor = Callable[[str], "ClaimRules | None"]
"""Destination name → its claim rules, or ``None`` when the config no longer has it."""


class IntakePolicy(Protocol):
    """Decides what happens to each delivery as it is written (``Outbox.enqueue``'s ``policy``).

    The outbox asks it inside its intake transaction, with a :class:`History` of what it holds,
    so concurrent processes see each other's decisions. The noise gate
    (:class:`armor_notify.gate.Gate`, which reads the config) is the one armor-notify passes;
    the outbox itself knows nothing of configs, rules or schedules.
    """

    def decide(self, delivery: Delivery, now: float, history: History) -> Decision:
        """Send, suppress, hold until a time, or collect into a digest."""
        ...


class CheckIntake(Protocol):
    """The check-state ledger's part of an intake (``Outbox.enqueue``'s ``checks``:
    :class:`armor_notify.ledger.Ledger`), run inside the intake transaction."""

    def before(self, db: Db, deliveries: Sequence[Delivery], now: float) -> list[Delivery]:
        """The deliveries to write in place of the planned ones (a check result's page, its
        resolve, or nothing), the ledger updated."""
        ...

    def after(self, db: Db, written: Sequence[Delivery]) -> None:
        """Remember where the triggers written went."""
        ...


class Outbox(Protocol):
    """What the dispatcher, the API and the command line need from a store (SQLite, PostgreSQL).
    Opening one is the backend's own business (``SqliteOutbox.open``); everything after that
    goes through these methods."""

    def enqueue(self, deliveries: Sequence[Delivery], *, repeat_window: float,
                now: float, policy: IntakePolicy | None = None,
                lease_to: tuple[str, RulesFor] | None = None,
                checks: CheckIntake | None = None) -> list[tuple[Delivery, bool]]: ...
    def claim(self, owner: str, now: float, limit: int, rules_for: RulesFor,
              ids: Collection[str] | None = None, *,
              busy: Collection[str] = ()) -> list[Delivery]: ...
    def complete(self, deliveries: Sequence[Delivery], owner: str,
                 now: float) -> list[bool]: ...
    def release(self, deliveries: Sequence[Delivery], owner: str,
                now: float) -> list[bool]: ...
    def hold_key(self, key: str, until: float) -> None: ...
    def next_due(self, ids: Collection[str] | None = None) -> float | None: ...
    def older_pending(self, ids: Collection[str]) -> list[str]: ...
    def get(self, delivery_id: str) -> Delivery | None: ...
    def find(self, states: Iterable[str] = (), limit: int = 100,
             ids: Collection[str] | None = None) -> list[Delivery]: ...
    def retry(self, ids: Collection[str] = (), *, include_failed: bool = False,
              now: float) -> int: ...
    def purge(self, *, older_than: float, now: float) -> int: ...
    def history(self) -> History: ...
    def checks(self, *, failing: bool = False) -> list[CheckState]:
        """The check-state ledger (``armor-notify checks``)."""
    def next_overdue(self) -> float | None:
        """When the next check that keeps reporting would become missing (``None``: none)."""
    def add_mute(self, scope: MuteScope, reason: str, author: str, *, now: float,
                 until: float) -> Mute:
        """Store a mute in force from ``now`` to ``until``."""
    def mutes(self, now: float, *, ended: bool = False) -> list[Mute]:
        """Mutes in force (``ended``: all), newest first, with what each holds."""
    def lift_mute(self, mute_id: int, now: float, zone: str = "UTC",
                  closed: Closed | None = None) -> tuple[Mute | None, list[str]]:
        """End a mute now; what it held is due at once, unless ``closed`` (the intake policy's
        :meth:`~armor_notify.gate.Gate.closed_until`) says its rule's schedule or a blackout
        still holds it. The mute (``None``: none with that id) and the ids of the deliveries
        released."""
    @property
    def schema_version(self) -> int:
        """The version of the store's schema (what ``armor-notify db upgrade`` reports)."""
    def summary(self, now: float) -> Summary:
        """Deliveries by state, in all and in the last hour, the oldest waiting one, checks by
        state and missing, mutes in force and what they hold."""
    @property
    def rate_waits(self) -> Mapping[str, int]:
        """By destination: how often this process's claims found its rate key closed, and
        left its deliveries waiting for it to open (``armor-notify serve``'s metrics)."""
    def listen(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` (from any thread) when another process may have queued work, until the
        returned function is called. A store that cannot tell returns at once and never calls
        it: its workers find new work by polling."""
    def close(self) -> None: ...
    def __enter__(self) -> Outbox: ...
    def __exit__(self, *exc: object) -> None: ...


def _id_filter(db: Db, ids: Collection[str] | None) -> tuple[str, tuple[Any, ...]]:
    """`` AND id`` among ``ids`` (nothing for ``None``: every id), and its parameters."""
    if ids is None:
        return "", ()
    where, params = db.among("id", ids)
    return f" AND {where}", params


# -- intake ---------------------------------------------------------------------------------------


def enqueue(db: Db, deliveries: Sequence[Delivery], *, repeat_window: float, now: float,
            policy: IntakePolicy | None, lease_to: tuple[str, RulesFor] | None,
            checks: CheckIntake | None = None) -> list[tuple[Delivery, bool]]:
    """:meth:`Outbox.enqueue` inside the backend's intake transaction: the check ledger's
    decisions first (``checks``), then for each delivery, the one stored within the repeat
    window (``False``), else the policy's decision applied (mutes too), a held trigger settled
    by its resolve, leased at intake when ``lease_to`` asks and nothing stops it, and written
    (``True``)."""
    out: list[tuple[Delivery, bool]] = []
    history = TableHistory(db)
    if checks is not None:
        deliveries = checks.before(db, deliveries, now)
    keys = RateKeys(db, now)
    if lease_to is not None:
        keys.lock(_keys_of(lease_to[1], {d.destination for d in deliveries}))
    for d in deliveries:
        row = None if d.checked or d.test else db.one(
            f"SELECT {_COLUMNS} FROM deliveries WHERE alert_id=? AND alert_status=? "
            "AND destination=? AND created_at>=? AND test=0 ORDER BY seq DESC LIMIT 1",
            (d.alert.id, d.alert.status, d.destination, now - repeat_window))
        stored = _readable(row) if row is not None else None
        if stored is not None:  # (an unreadable one is not sent: take this one)
            out.append((stored, False))
            continue
        d.created_at = now
        if d.state is State.queued and not d.next_attempt_at:
            d.next_attempt_at = now
        batch: tuple[str, int] | None = None
        if policy is not None:
            batch = _apply(d, policy.decide(d, now, history))
        mutes.settle_held(db, d, now)
        owner = None
        if (lease_to is not None and d.state is State.queued
                and d.next_attempt_at <= now and not _waits_for_older(db, d)
                and _take(d, lease_to[1](d.destination), now, keys)):
            owner = lease_to[0]  # written in flight: no claim needed
        _insert(db, d, now, batch, owner)
        out.append((d, True))
    keys.save()
    if checks is not None:
        checks.after(db, [d for d, new in out if new])
    return out


def _apply(d: Delivery, decision: Decision) -> tuple[str, int] | None:
    """Apply a noise decision to a delivery about to be written; returns its digest batch."""
    if decision.action == "suppress":
        d.finish(State.suppressed, decision.reason)
    elif decision.action == "hold":
        d.next_attempt_at = decision.until or d.next_attempt_at
        d.reason = decision.reason
        d.mute_id = decision.mute
        d.held = True
    elif decision.action == "digest" and decision.digest is not None:
        d.state = State.batched
        d.reason = decision.reason
        d.next_attempt_at = decision.until or d.next_attempt_at
        return batch_key(d.destination), decision.digest.max_items
    return None


class TableHistory:
    """Answers the noise gate's questions from the outbox's tables, one query each through
    ``db`` (a transaction's :class:`Db`, or :class:`Reads` that run each query in a
    transaction of its own)."""

    def __init__(self, db: Reads) -> None:
        self.db = db
        self.one = db.one
        self._mutes: tuple[float, list[Mute]] | None = None
        self._failing: tuple[float, list[Failing]] | None = None

    def mutes(self, at: float) -> list[Mute]:
        if self._mutes is None or self._mutes[0] != at:  # once per intake
            self._mutes = (at, mutes.active(self.db, at))
        return self._mutes[1]

    def check_state(self, key: tuple[str, str, str]) -> CheckState | None:
        return ledger.read(self.db, key)

    def failing(self, since: float) -> list[Failing]:
        """(Kept for the last ``since`` asked: ``route`` asks once per alert, at one time.)"""
        if self._failing is None or self._failing[0] != since:
            self._failing = (since, ledger.failing(self.db, since))
        return self._failing[1]

    def posted(self, destination: str, dedup_key: str) -> tuple[str, Mapping[str, Any]] | None:
        row = self.one("SELECT alert_status, message FROM deliveries WHERE destination=? AND "
                       "dedup_key=? AND message IS NOT NULL ORDER BY seq DESC LIMIT 1",
                       (destination, dedup_key))
        if row is None:
            return None
        try:
            ref = json.loads(row[1])
        except ValueError:
            return None
        return (str(row[0]), ref) if isinstance(ref, dict) else None

    def last_notified(self, rule: str, asset_id: str, destination: str,
                      since: float) -> float | None:
        row = self.one(
            "SELECT max(created_at) FROM deliveries WHERE rule=? AND asset_id=? AND destination=? "
            f"AND created_at>=? AND (state IN {NOTIFYING} OR state IN ('batched','digested'))",
            (rule, asset_id, destination, since))
        return None if row is None or row[0] is None else float(row[0])

    def count_notified(self, since: float, *, rule: str | None = None,
                       destination: str | None = None) -> int:
        where = ""
        params: tuple[str, ...] = ()
        if rule is not None:
            where, params = " AND rule=?", (rule,)
        if destination is not None:
            where, params = where + " AND destination=?", (*params, destination)
        row = self.one(
            f"SELECT count(*) FROM deliveries WHERE created_at>=? AND state IN {NOTIFYING} "
            f"AND test=0 {where}", (since, *params))
        return int(row[0]) if row else 0

    def digest_closes(self, key: str) -> float | None:
        row = self.one("SELECT min(run_at) FROM deliveries WHERE batch_key=? AND "
                       "state='batched'", (key,))
        return None if row is None or row[0] is None else float(row[0])


# -- claiming -------------------------------------------------------------------------------------


def claim(db: Db, owner: str, now: float, limit: int, rules_for: RulesFor,
          ids: Collection[str] | None, busy: Collection[str], *, known: dict[str, Alert],
          opens: dict[str, float], waits: dict[str, int] | None = None) -> list[Delivery]:
    """:meth:`Outbox.claim` inside the backend's claim transaction (after
    :func:`close_due_digests`, when the claim is not limited to ``ids``).

    The rate keys of the destinations with deliveries waiting are read first, one at a time in
    one order (a backend that locks rows locks them then: claims sharing a key take turns and
    never deadlock). A destination whose key is closed is left out of the query; an open key's
    destinations are asked for at most as many deliveries as the key lets go now, each state
    on its own, so the index gives the order and the query stops at that many.

    ``known``: alerts this process holds, by delivery id (not parsed again; an unreadable row's
    is dropped). ``opens``: destination → when its closed key opens, kept for
    :func:`next_due`.
    """
    claimed: list[Delivery] = []
    keys = RateKeys(db, now)
    cached: dict[str, ClaimRules | None] = {}

    def rules(destination: str) -> ClaimRules | None:
        if destination not in cached:
            cached[destination] = rules_for(destination)
        return cached[destination]

    waiting = {name: first for name, first in _earliest(db, ids).items() if name not in busy}
    keys.lock(_keys_of(rules, waiting))
    due = [name for name, first in waiting.items()
           if first <= now and keys.opens(rules(name)) <= now]
    where, params = _id_filter(db, ids)
    tried: set[int] = set()
    while due and len(claimed) < limit:
        room = limit - len(claimed)
        rows: list[tuple[float, int, str]] = []
        more: set[str] = set()  # destinations that may have more due than fetched
        for destination, state in itertools.product(due, ("queued", "in_flight")):
            size = min(room, keys.room(rules(destination)))
            # One state at a time, so the index gives the order and the query stops at
            # ``size``. The order rule (no overtaking an unfinished older delivery of the same
            # dedup key) is part of it; whole rows are read only for the deliveries tried,
            # since a row holds the alert's JSON.
            found = db.all(
                "SELECT run_at, seq FROM deliveries d WHERE state=? AND destination=? AND "
                f"run_at<=? {where} AND {db.first_of_its_key} ORDER BY run_at, seq "
                f"LIMIT ?{db.claim_lock}", (state, destination, now, *params, size))
            if len(found) == size:
                more.add(destination)
            rows += [(_real(r[0]), int(r[1]), destination) for r in found]
        rows.sort()
        fresh: set[str] = set()  # destinations with a delivery tried just now
        for _, seq, destination in rows:
            if len(claimed) >= limit:
                break
            limits = rules(destination)
            if seq in tried or keys.opens(limits) > now:  # its key ran out
                continue
            tried.add(seq)
            fresh.add(destination)
            d = _read(db, seq, now, known)
            if d is None:
                continue
            if d.state is State.in_flight:  # the lease ran out: its worker died
                d.attempts.append(Attempt(d.attempt_count + 1, d.next_attempt_at, 0.0, "lost",
                                          "no answer was recorded before the worker's lease "
                                          "expired (it may have died)"))
                d.state = State.queued
            if _take(d, limits, now, keys):
                _save(db, d, now, attempt=d.attempt_count + 1, owner=owner)
                claimed.append(d)
            else:
                _save(db, d, now)
        due = [x for x in due if x in more and x in fresh and keys.opens(rules(x)) <= now]
    for name in waiting:  # for next_due: when each closed key opens
        at = keys.opens(rules(name))
        if at > now:
            if waits is not None and name not in opens:  # a wait begins (metrics)
                waits[name] = waits.get(name, 0) + 1
            opens[name] = at
        else:
            opens.pop(name, None)
    keys.save()
    return claimed


def _read(db: Db, seq: int, now: float, known: dict[str, Alert]) -> Delivery | None:
    """The delivery stored at ``seq``; one that cannot be read is marked dead (None)."""
    row = db.one(f"SELECT {_COLUMNS} FROM deliveries WHERE seq=?", (seq,))
    if row is None:
        return None
    try:
        return _from_row(row, known)
    except Exception as exc:  # whatever is wrong with one row must not stop the queue
        _bury(db, seq, _why_unreadable(exc), now)
        known.pop(str(row[0]), None)
        return None


def _take(d: Delivery, rules: ClaimRules | None, now: float, keys: RateKeys) -> bool:
    """Lease a due delivery (in ``d``; the caller writes it) unless its destination is gone, its
    attempts are spent or its rate limit says wait (then it moves to its allowed time, using no
    attempt)."""
    if rules is None:
        d.finish(State.failed, f"destination '{d.destination}' is no longer in the config")
        return False
    if d.attempt_count >= rules.max_attempts:
        d.finish(State.dead, f"gave up after {d.attempt_count} attempts; last: "
                             f"{d.attempts[-1].reason if d.attempts else ''}")
        return False
    opens = keys.opens(rules)
    if opens > now:
        d.next_attempt_at = opens
        return False
    keys.book(rules)
    d.state = State.in_flight
    d.next_attempt_at = now + rules.lease
    if d.first_attempt_at is None:
        d.first_attempt_at = now
    return True


def close_due_digests(db: Db, now: float, known: Mapping[str, Alert]) -> None:
    """Turn every digest whose window closed (or filled) into queued digest deliveries of at
    most ``max_items`` alerts each, oldest alerts first. The caller makes sure one transaction
    at a time does it, so no alert goes into two digests."""
    due = db.all(
        "SELECT batch_key, max(batch_max), min(run_at)<=? FROM deliveries WHERE state='batched' "
        "GROUP BY batch_key HAVING min(run_at)<=? OR count(*)>=max(batch_max)", (now, now))
    for key, size, closed in due:
        while True:
            rows = db.all(f"SELECT {_COLUMNS} FROM deliveries WHERE batch_key=? AND "
                          "state='batched' ORDER BY seq LIMIT ?", (key, size))
            if not rows or (len(rows) < size and not closed):
                break  # what is left waits for its window to close or fill
            members = []
            for row in rows:
                try:
                    members.append(_from_row(row, known))
                except Exception as exc:  # one unreadable alert must not stop its digest
                    db.execute("UPDATE deliveries SET state='dead', finalized_at=?, reason=? "
                               "WHERE id=?", (now, _why_unreadable(exc), row[0]))
            if members:
                _send_as_digest(db, members, now)


def _send_as_digest(db: Db, members: list[Delivery], now: float) -> None:
    digest = make_digest(members, now)
    _insert(db, digest, now)
    where, ids = db.among("id", [m.id for m in members])
    db.execute(f"UPDATE deliveries SET state='digested', finalized_at=?, digest_id=?, "
               f"reason=? WHERE {where}", (now, digest.id, f"sent in digest {digest.id[:12]}", *ids))


def _earliest(db: Db, ids: Collection[str] | None) -> dict[str, float]:
    """Each destination with unfinished deliveries (among ``ids``, if given) → the earliest time
    one of them falls due. Without ``ids`` this walks the index destination by destination (a
    loose index scan), so its cost does not grow with the deliveries waiting."""
    if ids is not None:
        where, params = _id_filter(db, ids)
        rows = db.all(
            "SELECT destination, min(run_at) FROM deliveries WHERE state IN "
            f"('queued','in_flight') {where} GROUP BY destination", params)
    else:
        rows = db.all(
            "WITH RECURSIVE s(state) AS (VALUES ('queued'), ('in_flight')), "
            "d(state, name) AS (SELECT state, (SELECT destination FROM deliveries WHERE "
            "state=s.state ORDER BY destination LIMIT 1) FROM s UNION ALL SELECT d.state, "
            "(SELECT destination FROM deliveries WHERE state=d.state AND destination>d.name "
            "ORDER BY destination LIMIT 1) FROM d WHERE d.name IS NOT NULL) "
            "SELECT name, (SELECT min(run_at) FROM deliveries WHERE state=d.state AND "
            "destination=d.name) FROM d WHERE name IS NOT NULL")
    earliest: dict[str, float] = {}
    for name, first in rows:
        at = min(_real(first), MAX_TIME)
        earliest[name] = min(at, earliest.get(name, at))
    return earliest


def _waits_for_older(db: Db, d: Delivery) -> bool:
    """An older unfinished delivery for the same destination and dedup key goes first."""
    return db.one(
        "SELECT 1 FROM deliveries WHERE destination=? AND dedup_key=? AND id<>? AND "
        "state IN ('queued','in_flight') LIMIT 1", (d.destination, d.dedup_key, d.id),
    ) is not None


# -- rate keys ------------------------------------------------------------------------------------


class RateKeys:
    """Rate keys as one transaction sees them: each key's row is read once (and locked, where
    the backend locks rows: :meth:`Db.rate_key`), GCRA runs in memory, and what changed is
    written back by :meth:`save`.

    GCRA (generic cell rate algorithm) keeps one time per key, the "theoretical arrival time"
    ``tat``: with interval ``T = period / count`` and burst ``b``, a notification may go when
    ``tat - (b - 1)·T <= now``, and going moves ``tat`` to ``max(tat, now) + T``. So ``b`` go at
    once, then one every ``T``; in any span shorter than ``period`` at most ``count + b - 1``.
    A key's ``hold`` is a destination's Retry-After: nothing goes before it.

    A stored time cannot legitimately be further ahead than a full burst (``tat``) or the longest
    hold: clearly further (by more than ``CLOCK_SLACK``) means the clock stepped back, or an older
    version stored it, and it is cut to that bound from now, for good. So a rate limit never
    waits an hour because the clock moved.
    """

    def __init__(self, db: Db, now: float) -> None:
        self.db = db
        self.now = now
        self._state: dict[str, list[float]] = {}  # key → [tat, hold]
        self._changed: set[str] = set()

    def lock(self, keys: Iterable[str]) -> None:
        """Read (and lock) the keys a transaction needs up front, one at a time in sorted order:
        every transaction locks in that one order, so none waits for another that waits for
        it."""
        for key in sorted(set(keys) - self._state.keys()):
            row = self.db.rate_key(key)
            self._state[key] = [_real(row[0]), _real(row[1])] if row else [0.0, 0.0]

    def _key(self, rules: ClaimRules) -> tuple[str, RateLimit, list[float]] | None:
        if rules.rate_limit is None or not rules.rate_key:
            return None
        key, limit = rules.rate_key, rules.rate_limit
        if key not in self._state:  # read up front, unless the caller did not know it then
            self.lock([key])
        state = self._state[key]
        furthest = (self.now + limit.burst * limit.interval, self.now + max(0.0, rules.longest_hold))
        for i in (0, 1):
            # Only well beyond the bound: another process's ``now`` can be a little ahead.
            if state[i] > furthest[i] + CLOCK_SLACK:
                state[i] = furthest[i]
                self._changed.add(key)
        return key, limit, state

    def opens(self, rules: ClaimRules | None) -> float:
        """When the next notification under ``rules``' key may go (at or before now: now)."""
        found = self._key(rules) if rules is not None else None
        if found is None:
            return self.now
        _, limit, (tat, hold) = found
        opens = max(tat - (limit.burst - 1) * limit.interval, hold)
        return self.now if opens <= self.now + TICK else opens

    def room(self, rules: ClaimRules | None) -> int:
        """How many notifications under ``rules``' key may go now (a large number: no limit)."""
        found = self._key(rules) if rules is not None else None
        if found is None:
            return 1 << 30
        _, limit, (tat, hold) = found
        if hold > self.now + TICK:
            return 0
        ahead = max(tat - self.now - TICK, 0.0)  # booked beyond now: at most burst·interval
        return max(0, limit.burst - math.ceil(ahead / limit.interval))

    def book(self, rules: ClaimRules) -> None:
        """One notification under ``rules``' key goes now."""
        found = self._key(rules)
        if found is not None:
            key, limit, state = found
            state[0] = max(state[0], self.now) + limit.interval
            self._changed.add(key)

    def save(self) -> None:
        for key in sorted(self._changed):
            tat, hold = self._state[key]
            self.db.execute("INSERT INTO rate_state(key, tat, hold) VALUES (?, ?, ?) ON "
                            "CONFLICT(key) DO UPDATE SET tat=excluded.tat, hold=excluded.hold",
                            (key, tat, hold))
        self._changed.clear()


def _keys_of(rules_for: RulesFor, destinations: Iterable[str]) -> set[str]:
    """The rate keys of these destinations' rules."""
    keys = set()
    for name in destinations:
        rules = rules_for(name)
        if rules is not None and rules.rate_limit is not None and rules.rate_key:
            keys.add(rules.rate_key)
    return keys


# -- after an attempt -----------------------------------------------------------------------------


def complete(db: Db, deliveries: Sequence[Delivery], owner: str, now: float) -> list[bool]:
    """Store the outcomes of attempts ``owner`` holds; for each, ``False`` if its lease was
    lost."""
    return [db.execute(
        "UPDATE deliveries SET state=?, run_at=?, lease_owner=NULL, reason=?, hint=?, "
        "details=?, history=?, finalized_at=?, first_attempt_at=?, message=? WHERE id=? AND "
        "lease_owner=? AND attempt=? AND state='in_flight'",
        (d.state.value, d.next_attempt_at, d.reason, d.hint, _details(d), _history(d),
         now if d.state.final else None, d.first_attempt_at, _message(d), d.id, owner,
         d.attempt_count),
    ) == 1 for d in deliveries]


def requeue(deliveries: Sequence[Delivery], now: float) -> None:
    """Queue deliveries whose attempt never started again, due ``now``, in memory (before
    :func:`release` writes it)."""
    for d in deliveries:
        d.state, d.next_attempt_at = State.queued, now
        if not d.attempts:
            d.first_attempt_at = None


def release(db: Db, deliveries: Sequence[Delivery], owner: str, now: float) -> list[bool]:
    """Give back leases ``owner`` holds on deliveries :func:`requeue` queued again, without
    spending an attempt (``False``: the lease was lost)."""
    return [db.execute(
        "UPDATE deliveries SET state='queued', run_at=?, lease_owner=NULL, attempt=?, "
        "first_attempt_at=? WHERE id=? AND lease_owner=? AND attempt=? AND state='in_flight'",
        (now, d.attempt_count, d.first_attempt_at, d.id, owner, d.attempt_count + 1)) == 1
        for d in deliveries]


# -- reading --------------------------------------------------------------------------------------


def next_due(db: Db, ids: Collection[str] | None, opens: Mapping[str, float]) -> float | None:
    """:meth:`Outbox.next_due`: the earliest due time, a destination whose key the last claim
    found closed counting from when the key opens (``opens``, kept by :func:`claim`)."""
    earliest = _earliest(db, ids)
    times = [max(first, opens.get(name, first)) for name, first in earliest.items()]
    return min(times, default=None)


def older_pending(db: Db, ids: Collection[str]) -> list[str]:
    """Unfinished deliveries that must go before these (same destination and dedup key,
    accepted earlier), oldest first."""
    where, params = db.among("d.id", ids)
    rows = db.all(
        "SELECT o.id FROM deliveries d JOIN deliveries o ON o.destination=d.destination AND "
        f"o.dedup_key=d.dedup_key AND o.seq<d.seq WHERE {where} AND "
        "o.state IN ('queued','in_flight') GROUP BY o.id ORDER BY min(o.seq)", params)
    return [str(r[0]) for r in rows]


def get(db: Db, delivery_id: str, known: Mapping[str, Alert]) -> Delivery | None:
    """One delivery by id (a unique prefix of at least 6 characters is enough)."""
    # A prefix is a range of the id index, compared as text (LIKE would read '_' and '%' as
    # wildcards, and ignore case): every id that starts with it sorts between the two. (Each
    # backend compares ids byte-wise: PostgreSQL's column has the "C" collation.)
    prefix = delivery_id if len(delivery_id) >= 6 else None
    rows = db.all(f"SELECT {_COLUMNS} FROM deliveries WHERE id=? OR (id>=? AND id<?) LIMIT 2",
                  (delivery_id, prefix, prefix and prefix + "\U0010ffff"))
    exact = [r for r in rows if r[0] == delivery_id]
    if exact or len(rows) == 1:
        return _shown((exact or rows)[0], known)
    return None


def find(db: Db, states: Iterable[str], limit: int, ids: Collection[str] | None,
         known: Mapping[str, Alert]) -> list[Delivery]:
    """Deliveries, newest first, optionally only in ``states`` or with these ``ids``."""
    states = list(states)
    where, params = _id_filter(db, ids)
    if states:
        among, more = db.among("state", states)
        where, params = f"{where} AND {among}", (*params, *more)
    rows = db.all(f"SELECT {_COLUMNS} FROM deliveries WHERE 1=1 {where} ORDER BY seq DESC "
                  "LIMIT ?", (*params, limit))
    return [_shown(r, known) for r in rows]


@dataclass(frozen=True)
class Summary:
    """How many deliveries are in each state, since when the oldest unfinished one waits, and
    how many checks fail and mutes hold."""

    counts: Mapping[str, int]
    oldest_waiting_since: float | None
    """``created_at`` of the oldest queued or in-flight delivery (``None``: none)."""
    last_hour: Mapping[str, int]
    """Deliveries accepted in the hour before ``now``, by state."""
    checks: Mapping[str, int]
    """Checks in the ledger by state: ``passing`` and ``failing`` (0 when none)."""
    checks_missing: int
    """Checks that stopped reporting (``check_missing``), whether failing or passing."""
    mutes: int
    """Mutes in force at ``now``."""
    held: int
    """Deliveries held by mutes now (due when their mute ends)."""


def summary(db: Db, now: float) -> Summary:
    """What the status page and the metrics show of the queue (one pass over an index each),
    the check ledger (one pass over its table) and the mutes in force with what they hold."""
    counts = {str(state): int(n) for state, n in db.all(
        "SELECT state, count(*) FROM deliveries GROUP BY state")}
    recent = {str(state): int(n) for state, n in db.all(
        "SELECT state, count(*) FROM deliveries WHERE created_at >= ? GROUP BY state",
        (now - 3600,))}
    oldest = db.one("SELECT min(created_at) FROM deliveries WHERE state IN ('queued','in_flight')")
    first = oldest[0] if oldest else None
    checks = {"passing": 0, "failing": 0}
    missing = 0
    for state, n, gone in db.all(
            "SELECT state, count(*), count(missing_since) FROM checks GROUP BY state"):
        checks[str(state)] = int(n)
        missing += int(gone)
    in_force = mutes.listing(db, now, ended=False)
    return Summary(counts, None if first is None else _time(first), recent, checks, missing,
                   len(in_force), sum(m.held for m in in_force))


# -- acting ---------------------------------------------------------------------------------------


def retry(db: Db, ids: Collection[str], *, include_failed: bool, now: float) -> int:
    """Make queued deliveries (all, or ``ids``) due now; with ``include_failed`` also requeue
    failed and dead ones with a fresh retry budget. Returns how many changed."""
    states, state_params = db.among("state", ["queued"] + (["failed", "dead"] if include_failed
                                                            else []))
    where, params = _id_filter(db, ids or None)
    return db.execute(
        "UPDATE deliveries SET run_at=?, state='queued', finalized_at=NULL, "
        "first_attempt_at=CASE WHEN state='queued' THEN first_attempt_at ELSE NULL END, "
        "history=CASE WHEN state='queued' THEN history ELSE '[]' END, "
        "attempt=CASE WHEN state='queued' THEN attempt ELSE 0 END "
        f"WHERE {states} {where}", (now, *state_params, *params))


def purge(db: Db, *, older_than: float, now: float) -> int:
    """Delete finished deliveries finalized more than ``older_than`` seconds ago (and with them
    mutes that ended, and passing checks last heard of, that long ago: a failing or missing
    check is kept while it is open). Returns how many deliveries went."""
    cutoff = now - older_than
    db.execute("DELETE FROM mutes WHERE expires_at<=? OR lifted_at<=?", (cutoff, cutoff))
    db.execute("DELETE FROM checks WHERE state='passing' AND missing_since IS NULL AND "
               "last_run_at<=?", (cutoff,))
    return db.execute("DELETE FROM deliveries WHERE finalized_at IS NOT NULL AND "
                      "finalized_at<=?", (cutoff,))


# -- rows -----------------------------------------------------------------------------------------

_COLUMNS = ("id, alert_id, alert_status, destination, destination_type, rule, also_matched, "
            "dedup_key, alert, test, state, attempt, run_at, first_attempt_at, created_at, reason, "
            "hint, details, history, asset_id, batch_key, batch_max, digest, mute_id")


def _insert(db: Db, d: Delivery, now: float, batch: tuple[str, int] | None = None,
            owner: str | None = None) -> None:
    """Write a new delivery; with ``owner``, leased to it for its next attempt."""
    row = _to_row(d, batch)
    if owner is not None:
        row = (*row[:11], d.attempt_count + 1, *row[12:])
    marks = ",".join("?" * (len(row) + 2))
    db.execute(f"INSERT INTO deliveries ({_COLUMNS}, lease_owner, finalized_at) VALUES ({marks})",
               (*row, owner, now if d.state.final else None))


def _save(db: Db, d: Delivery, now: float, *, attempt: int | None = None,
          owner: str | None = None) -> None:
    db.execute(
        "UPDATE deliveries SET state=?, run_at=?, lease_owner=?, attempt=?, first_attempt_at=?, "
        "reason=?, hint=?, history=?, finalized_at=? WHERE id=?",
        (d.state.value, d.next_attempt_at, owner, d.attempt_count if attempt is None else attempt,
         d.first_attempt_at, d.reason, d.hint, _history(d), now if d.state.final else None, d.id))


def _bury(db: Db, seq: int, reason: str, now: float) -> None:
    """Mark an unreadable delivery dead, with the reason, so the queue goes on without it."""
    db.execute("UPDATE deliveries SET state='dead', finalized_at=?, lease_owner=NULL, reason=?, "
               "hint=? WHERE seq=?",
               (now, reason, f"it was damaged in {db.store}, or written by a version that "
                             "accepted what this one refuses; send the alert again if needed",
                seq))


def _history(d: Delivery) -> str:
    if not d.attempts:
        return "[]"
    return json.dumps([{"number": a.number, "started_at": a.started_at, "duration": a.duration,
                        "status": a.status, "reason": a.reason} for a in d.attempts])


def _message(d: Delivery) -> str | None:
    """Where the destination posted a delivered notification (``details["message"]``: Slack's
    channel and ts), kept in a column of its own to find an incident's message by."""
    ref = d.details.get("message") if d.state is State.delivered else None
    return json.dumps(ref) if isinstance(ref, dict) and ref else None


def _details(d: Delivery) -> str:
    return json.dumps(d.details, default=str) if d.details else "{}"


def _to_row(d: Delivery, batch: tuple[str, int] | None = None) -> tuple[Any, ...]:
    return (d.id, d.alert.id, d.alert.status, d.destination, d.destination_type, d.rule,
            json.dumps(list(d.also_matched)) if d.also_matched else "[]", d.dedup_key,
            d.alert.model_dump_json(by_alias=True), int(d.test), d.state.value, d.attempt_count,
            d.next_attempt_at, d.first_attempt_at, d.created_at, d.reason, d.hint, _details(d),
            _history(d), d.alert.asset.id, batch[0] if batch else None,
            batch[1] if batch else None,
            json.dumps([a.model_dump_json(by_alias=True) for a in d.digest]) if d.digest else "[]",
            d.mute_id)


def _from_row(row: Sequence[Any], known: Mapping[str, Alert] | None = None) -> Delivery:
    """The stored delivery; raises when the row cannot be read back (see :func:`_shown`)."""
    (id_, _alert_id, _status, destination, dtype, rule, also, dedup, alert_json, test, state,
     _attempt, run_at, first, created, reason, hint, details, history, _asset, _batch, _max,
     digest, mute_id) = row
    alert = known.get(id_) if known else None
    d = Delivery(
        alert=alert or Alert.model_validate_json(alert_json, context={"event_types": None}),
        destination=destination, destination_type=dtype, rule=rule,
        dedup_key=dedup, also_matched=tuple(json.loads(also)), id=id_, state=State(state),
        next_attempt_at=_time(run_at), first_attempt_at=None if first is None else _time(first),
        reason=reason, hint=hint, details=json.loads(details), test=bool(test),
        created_at=_time(created), mute_id=None if mute_id is None else int(mute_id),
    )
    if not isinstance(d.details, dict):
        raise ValueError("its details are not a JSON object")
    d.attempts = [Attempt(int(a["number"]), _time(a["started_at"]),
                          min(_time(a["duration"]), MAX_TIME), str(a["status"]), str(a["reason"]))
                  for a in json.loads(history)]
    d.digest = tuple(Alert.model_validate_json(a, context={"event_types": None})
                     for a in json.loads(digest))
    return d


def _readable(row: Sequence[Any]) -> Delivery | None:
    try:
        return _from_row(row)
    except Exception:  # unreadable: the caller goes on without it
        return None


def _shown(row: Sequence[Any], known: Mapping[str, Alert]) -> Delivery:
    """The stored delivery, or, when it cannot be read back, a stand-in shown ``dead`` with the
    reason (the next claim marks it so in the store), so ``outbox list/show`` never fail."""
    try:
        return _from_row(row, known)
    except Exception as exc:
        why = _why_unreadable(exc)
    id_, alert_id, status, destination, dtype, rule = (str(x) for x in row[:6])
    try:
        title = str(json.loads(row[8]).get("title") or "")[:200]
    except Exception:  # a title is only a courtesy
        title = ""
    alert = Alert.model_construct(id=alert_id, event_type="unknown", title=title or "(unreadable)",
                                  asset=Asset.model_construct(id=str(row[19]), name="?"))
    if status in ("acknowledged", "resolved"):
        alert = alert.model_copy(update={"status": status})
    d = Delivery(alert=alert, destination=destination, destination_type=dtype, rule=rule,
                 dedup_key=str(row[7]), id=id_, state=State.dead, reason=why)
    d.created_at = min(max(_real(row[14]), 0.0), MAX_TIME)
    return d


def _why_unreadable(exc: BaseException) -> str:
    """``the stored delivery cannot be read: …`` with the first problem, on one line."""
    if isinstance(exc, ValidationError) and exc.errors():
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        detail = f"{where}: {first['msg']}" if where else first["msg"]
    else:
        detail = str(exc) or type(exc).__name__
    detail = " ".join(detail.split())
    return f"{UNREADABLE}: {detail[:300]}"


def _real(value: Any) -> float:
    """A stored number as a float (NULL or text: 0)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if math.isnan(number) else number


def _time(value: Any) -> float:
    """A stored time, kept between 1970 and the year 3000 (so every formatter can show it);
    raises for what is not a number at all."""
    number = float(value)
    if math.isnan(number):
        raise ValueError("a stored time is not a number")
    return min(max(number, 0.0), MAX_TIME)
