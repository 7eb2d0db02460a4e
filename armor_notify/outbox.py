"""The outbox: every delivery written down before it is attempted, in SQLite.

One file (WAL mode) shared by ``send`` and any number of ``worker`` processes on one machine.
Workers claim due deliveries under a lease inside a short ``BEGIN IMMEDIATE`` transaction, so two
workers never send one delivery at the same time, and a delivery whose worker died is claimed
again when its lease expires (at-least-once). Per-destination rate limits are kept here too
(GCRA: one "theoretical arrival time" per key), so they hold across processes.

The same class runs on an in-memory database for programs that want no file
(:meth:`SqliteOutbox.memory`). A server-backed outbox only has to provide the methods of
:class:`Outbox`.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from .alert import Alert, Asset
from .delivery import Attempt, Delivery, State
from .destinations import RateLimit
from .digests import make_digest
from .errors import ArmorNotifyError
from .noise import Decision, History, batch_key
from .outcome import MAX_RETRY_AFTER

STATE_ENV = "ARMOR_NOTIFY_STATE_DIR"
FILE_NAME = "outbox.sqlite3"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000

# Times read back from the file are kept within what every date formatter can show (a damaged
# row, or one written before delays were bounded, may hold 1e15 or inf).
MAX_TIME = 32_503_680_000.0  # 3000-01-01
UNREADABLE = "the stored delivery cannot be read"
# A stored rate-limit time this far beyond what is possible means the clock stepped back. Below
# it, a lead is a process's ``now`` taken a moment before the write lock (at most the busy
# timeout) or clocks a little apart.
CLOCK_SLACK = 2 * BUSY_TIMEOUT_MS / 1000
# Rate-limit times that differ by less than this are equal (sums of intervals round).
TICK = 1e-6

FINAL = tuple(s.value for s in State if s.final)
# Deliveries that count as "notified" for cooldowns and daily limits.
NOTIFYING = "('queued','in_flight','delivered','failed','dead')"


class OutboxError(ArmorNotifyError):
    """The state file cannot be used (corrupt, locked, unwritable)."""


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


class Outbox(Protocol):
    """What the dispatcher, the API and the command line need from a store (SQLite today; a
    server-backed one later). Opening one is the backend's own business (``SqliteOutbox.open``);
    everything after that goes through these methods."""

    def enqueue(self, deliveries: Sequence[Delivery], *, repeat_window: float,
                now: float, policy: IntakePolicy | None = None,
                lease_to: tuple[str, RulesFor] | None = None) -> list[tuple[Delivery, bool]]: ...
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
    @property
    def schema_version(self) -> int:
        """The version of the store's schema (what ``armor-notify db upgrade`` reports)."""
    def listen(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` (from any thread) when another process may have queued work, until the
        returned function is called. A store that cannot tell returns at once and never calls
        it: its workers find new work by polling."""
    def close(self) -> None: ...
    def __enter__(self) -> Outbox: ...
    def __exit__(self, *exc: object) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    alert_id TEXT NOT NULL,
    alert_status TEXT NOT NULL,
    destination TEXT NOT NULL,
    destination_type TEXT NOT NULL,
    rule TEXT NOT NULL,
    also_matched TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    alert TEXT NOT NULL,
    test INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    run_at REAL NOT NULL,
    lease_owner TEXT,
    first_attempt_at REAL,
    created_at REAL NOT NULL,
    finalized_at REAL,
    reason TEXT NOT NULL DEFAULT '',
    hint TEXT,
    details TEXT NOT NULL DEFAULT '{}',
    history TEXT NOT NULL DEFAULT '[]',
    asset_id TEXT NOT NULL DEFAULT '',
    batch_key TEXT,
    batch_max INTEGER,
    digest TEXT NOT NULL DEFAULT '[]',
    digest_id TEXT,
    CHECK ((finalized_at IS NULL) = (state IN ('queued', 'in_flight', 'batched')))
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(state, run_at);
CREATE INDEX IF NOT EXISTS deliveries_intake ON deliveries(alert_id, alert_status, destination);
CREATE INDEX IF NOT EXISTS deliveries_order ON deliveries(destination, dedup_key, seq);
CREATE INDEX IF NOT EXISTS deliveries_rule ON deliveries(rule, asset_id, created_at);
CREATE INDEX IF NOT EXISTS deliveries_batch ON deliveries(batch_key, state);
CREATE INDEX IF NOT EXISTS deliveries_destination ON deliveries(state, destination, run_at);
CREATE TABLE IF NOT EXISTS rate_state (key TEXT PRIMARY KEY, tat REAL NOT NULL,
                                       hold REAL NOT NULL DEFAULT 0);
"""

_COLUMNS = ("id, alert_id, alert_status, destination, destination_type, rule, also_matched, "
            "dedup_key, alert, test, state, attempt, run_at, first_attempt_at, created_at, reason, "
            "hint, details, history, asset_id, batch_key, batch_max, digest")


def default_state_dir() -> Path:
    """``$ARMOR_NOTIFY_STATE_DIR``, else ``$XDG_STATE_HOME/armor-notify``, else
    ``~/.local/state/armor-notify``."""
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "armor-notify"


def _explain(exc: sqlite3.Error, where: str) -> OutboxError:
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith("SQLITE_BUSY"):
        return OutboxError(f"{where}: the state file is locked by another process and stayed "
                           f"locked for {BUSY_TIMEOUT_MS // 1000} s; try again")
    if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        return OutboxError(f"{where}: the state file is damaged or is not an armor-notify outbox "
                           f"({exc}); move it aside (keep it for inspection) and run again to "
                           "start a new one")
    if name == "SQLITE_READONLY":
        return OutboxError(f"{where}: the state file is read-only; check its permissions")
    if name == "SQLITE_CANTOPEN":
        return OutboxError(f"{where}: cannot open the state file; check that the state "
                           f"directory exists and is writable (--state-dir or ${STATE_ENV})")
    return OutboxError(f"{where}: {exc}")


class SqliteOutbox:
    """The outbox on SQLite. One connection, used by one thread at a time (a lock guards it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.RLock()
        # Alerts this process enqueued and has not finished, so claims need not parse them again.
        self._alerts: dict[str, Alert] = {}
        # Destination → when its rate key opens, as the last claim found it blocked (for
        # next_due: its deliveries are not rewritten while they wait).
        self._opens: dict[str, float] = {}
        try:
            self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000,
                                       isolation_level=None, check_same_thread=False)
            # Text that is not UTF-8 (a damaged file) reads as U+FFFD instead of failing the
            # whole query; a row it makes unreadable is then dealt with as one (see claim).
            self._db.text_factory = functools.partial(str, encoding="utf-8", errors="replace")
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if path != ":memory:":
                self._db.execute("PRAGMA journal_mode = WAL")
            # An accepted ("queued") alert must survive power loss, not only a crash: intake
            # commits at FULL. Progress (claims, outcomes) commits at NORMAL, which survives a
            # crash of the process; a power loss may forget the last of it, and what was
            # forgotten is sent again (at-least-once), never lost. FULL commits sync the whole
            # write-ahead log, progress included.
            self._on_disk = path != ":memory:"
            self._synchronous = ""
            self._sync(durable=True)
            with self._write(durable=True) as db:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                # A schema step that keeps the version: files from before Retry-After holds were
                # kept apart from the GCRA time gain the column (older versions ignore it).
                if "hold" not in {r[1] for r in db.execute("PRAGMA table_info(rate_state)")}:
                    db.execute("ALTER TABLE rate_state ADD COLUMN hold REAL NOT NULL DEFAULT 0")
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)",
                                 (str(SCHEMA_VERSION),))
            version = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0]
        except sqlite3.Error as exc:
            raise _explain(exc, path) from None
        if int(version) != SCHEMA_VERSION:
            raise OutboxError(f"{path}: written by another armor-notify version (schema "
                              f"{version}, this one reads {SCHEMA_VERSION})")

    @classmethod
    def open(cls, state_dir: str | os.PathLike[str] | None = None) -> SqliteOutbox:
        """The outbox file in ``state_dir`` (default: :func:`default_state_dir`), created if needed."""
        directory = Path(state_dir) if state_dir else default_state_dir()
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(f"cannot create the state directory {directory}: "
                              f"{exc.strerror or exc}") from None
        return cls(str(directory / FILE_NAME))

    @property
    def schema_version(self) -> int:
        return SCHEMA_VERSION  # opening refuses any other

    def listen(self, wake: Callable[[], None]) -> Callable[[], None]:
        return _stop_nothing  # SQLite tells no one: workers on the file poll



    @classmethod
    def memory(cls) -> SqliteOutbox:
        """An outbox that lives only as long as this process (nothing survives a crash)."""
        return cls(":memory:")

    # -- transactions ---------------------------------------------------------------------------
    class _Tx:
        def __init__(self, outbox: SqliteOutbox, durable: bool) -> None:
            self.outbox = outbox
            self.durable = durable

        def __enter__(self) -> sqlite3.Connection:
            self.outbox._lock.acquire()
            try:
                self.outbox._sync(self.durable)
                self.outbox._db.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.outbox._lock.release()
                raise
            return self.outbox._db

        def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
            try:
                self.outbox._db.execute("COMMIT" if kind is None else "ROLLBACK")
            finally:
                self.outbox._lock.release()

    def _write(self, *, durable: bool) -> SqliteOutbox._Tx:
        """A write transaction; ``durable`` ones survive power loss (intake), the others a crash
        of the process (progress: losing one means a delivery is sent again)."""
        return SqliteOutbox._Tx(self, durable)

    def _sync(self, durable: bool) -> None:
        mode = "FULL" if durable else "NORMAL"
        if self._on_disk and self._synchronous != mode:
            self._db.execute(f"PRAGMA synchronous = {mode}")
            self._synchronous = mode

    def _run(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except sqlite3.Error as exc:
            raise _explain(exc, f"{self.path} ({what})") from None

    # -- intake -----------------------------------------------------------------------------------
    def enqueue(self, deliveries: Sequence[Delivery], *, repeat_window: float,
                now: float, policy: IntakePolicy | None = None,
                lease_to: tuple[str, RulesFor] | None = None) -> list[tuple[Delivery, bool]]:
        """Write deliveries in one transaction. A delivery of the same alert id, status and
        destination accepted within ``repeat_window`` seconds is not written again: the stored
        one is returned with ``False``. ``policy`` (:class:`IntakePolicy`: the noise gate's
        schedules, blackouts, cooldowns, daily limits and digests) decides each new
        delivery against the outbox's history in the same transaction, so concurrent processes
        see each other's decisions. With ``lease_to`` (owner, rules),
        deliveries due now are leased to that owner in the same transaction, as a claim would
        (they come back ``in_flight``): the caller is about to send them itself."""

        def run() -> list[tuple[Delivery, bool]]:
            out: list[tuple[Delivery, bool]] = []
            with self._write(durable=True) as db:
                history = _History(db)
                keys = _RateKeys(db, now)
                for d in deliveries:
                    row = db.execute(
                        f"SELECT {_COLUMNS} FROM deliveries WHERE alert_id=? AND alert_status=? "
                        "AND destination=? AND created_at>=? AND test=0 ORDER BY seq DESC LIMIT 1",
                        (d.alert.id, d.alert.status, d.destination, now - repeat_window),
                    ).fetchone()
                    stored = _readable(row) if row is not None and not d.test else None
                    if stored is not None:  # (an unreadable one is not sent: take this one)
                        out.append((stored, False))
                        continue
                    d.created_at = now
                    if d.state is State.queued and not d.next_attempt_at:
                        d.next_attempt_at = now
                    batch: tuple[str, int] | None = None
                    if policy is not None:
                        batch = _apply(d, policy.decide(d, now, history))
                    owner = None
                    if (lease_to is not None and d.state is State.queued
                            and d.next_attempt_at <= now and not _waits_for_older(db, d)
                            and _take(d, lease_to[1](d.destination), now, keys)):
                        owner = lease_to[0]  # written in flight: no claim needed
                    _insert(db, d, now, batch, owner)
                    out.append((d, True))
                    if not d.state.final:
                        self._alerts[d.id] = d.alert
                keys.save()
            return out

        result: list[tuple[Delivery, bool]] = self._run("enqueue", run)
        return result

    def history(self) -> History:
        """Read-only access to what was notified when (for ``route --at``)."""
        return _History(self._db)

    # -- claiming ---------------------------------------------------------------------------------
    def claim(self, owner: str, now: float, limit: int, rules_for: RulesFor,
              ids: Collection[str] | None = None, *,
              busy: Collection[str] = ()) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries to ``owner``, none of the destinations in
        ``busy`` (the caller has no room for them now).

        Due means queued with its time come, or in flight with an expired lease (its worker died:
        that attempt is recorded as lost and counts). A delivery waits while an older delivery
        for the same destination and dedup key is unfinished, so a retried trigger never
        overtakes its resolve.

        Rate limits are checked here, in the same transaction, per rate key and not per
        delivery: each key's state is read once, a destination whose key is closed now is left
        out of the query (its deliveries are neither read nor rewritten, and :meth:`next_due`
        reports when the key opens), and an open key's destinations are asked for at most as
        many deliveries as the key lets go now. So claiming costs the same however long a
        rate-limited backlog grows.

        A stored delivery that cannot be read back (damaged on disk, or written by an older
        version that accepted what this one refuses) is marked ``dead`` with the reason, and
        the claim goes on with the others.
        """

        def run() -> list[Delivery]:
            claimed: list[Delivery] = []
            with self._write(durable=False) as db:
                if ids is None:
                    _close_due_digests(db, now, self._alerts)
                where, params = _id_filter(ids)
                keys = _RateKeys(db, now)
                known: dict[str, ClaimRules | None] = {}

                def rules(destination: str) -> ClaimRules | None:
                    if destination not in known:
                        known[destination] = rules_for(destination)
                    return known[destination]

                waiting = {name: first for name, first in _earliest(db, ids).items()
                           if name not in busy}
                due = [name for name, first in waiting.items()
                       if first <= now and keys.opens(rules(name)) <= now]
                tried: set[int] = set()
                while due and len(claimed) < limit:
                    room = limit - len(claimed)
                    rows: list[tuple[float, int, str]] = []
                    more: set[str] = set()  # destinations that may have more due than fetched
                    for destination, state in itertools.product(due, ("queued", "in_flight")):
                        size = min(room, keys.room(rules(destination)))
                        # One state at a time, so the index gives the order and the query stops
                        # at ``size``. The order rule (no overtaking an unfinished older delivery
                        # of the same dedup key) is part of it; whole rows are read only for the
                        # deliveries tried, since a row holds the alert's JSON.
                        found = db.execute(
                            "SELECT run_at, seq FROM deliveries d WHERE state=? AND "
                            f"destination=? AND run_at<=? {where} AND NOT EXISTS (SELECT 1 FROM "
                            "deliveries o WHERE o.destination=d.destination AND "
                            "o.dedup_key=d.dedup_key AND o.seq<d.seq AND o.state IN "
                            "('queued','in_flight')) ORDER BY run_at, seq LIMIT ?",
                            (state, destination, now, *params, size)).fetchall()
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
                        d = self._read(db, seq, now)
                        if d is None:
                            continue
                        if d.state is State.in_flight:  # the lease ran out: its worker died
                            d.attempts.append(Attempt(d.attempt_count + 1, d.next_attempt_at,
                                                      0.0, "lost", "no answer was recorded "
                                                      "before the worker's lease expired (it "
                                                      "may have died)"))
                            d.state = State.queued
                        if _take(d, limits, now, keys):
                            _save(db, d, now, attempt=d.attempt_count + 1, owner=owner)
                            claimed.append(d)
                        else:
                            _save(db, d, now)
                    due = [x for x in due if x in more and x in fresh
                           and keys.opens(rules(x)) <= now]
                for name in waiting:  # for next_due: when each closed key opens
                    opens = keys.opens(rules(name))
                    if opens > now:
                        self._opens[name] = opens
                    else:
                        self._opens.pop(name, None)
                keys.save()
            return claimed

        result: list[Delivery] = self._run("claim", run)
        return result

    def _read(self, db: sqlite3.Connection, seq: int, now: float) -> Delivery | None:
        """The delivery stored at ``seq``; one that cannot be read is marked dead (None)."""
        row = db.execute(f"SELECT {_COLUMNS} FROM deliveries WHERE seq=?", (seq,)).fetchone()
        try:
            return _from_row(row, self._alerts)
        except Exception as exc:  # whatever is wrong with one row must not stop the queue
            _bury(db, seq, _why_unreadable(exc), now)
            self._alerts.pop(str(row[0]), None)
            return None

    def complete(self, deliveries: Sequence[Delivery], owner: str, now: float) -> list[bool]:
        """Store the outcomes of attempts ``owner`` holds, in one transaction; for each, ``False``
        if its lease was lost (another worker took it over: its answer is the one kept)."""

        def update(db: sqlite3.Connection, d: Delivery) -> bool:
            return db.execute(
                "UPDATE deliveries SET state=?, run_at=?, lease_owner=NULL, reason=?, hint=?, "
                "details=?, history=?, finalized_at=?, first_attempt_at=? WHERE id=? AND "
                "lease_owner=? AND attempt=? AND state='in_flight'",
                (d.state.value, d.next_attempt_at, d.reason, d.hint, _details(d), _history(d),
                 now if d.state.final else None, d.first_attempt_at, d.id, owner,
                 d.attempt_count),
            ).rowcount == 1

        def run() -> list[bool]:
            if len(deliveries) == 1:  # one statement: SQLite makes it its own transaction
                with self._lock:
                    self._sync(durable=False)
                    return [update(self._db, deliveries[0])]
            with self._write(durable=False) as db:
                return [update(db, d) for d in deliveries]

        done: list[bool] = self._run("complete", run)
        for d in deliveries:
            if d.state.final:
                self._alerts.pop(d.id, None)
        return done

    def release(self, deliveries: Sequence[Delivery], owner: str, now: float) -> list[bool]:
        """Give back leases ``owner`` holds on deliveries whose attempt never started: each is
        queued again, due ``now``, without spending an attempt (``False``: the lease was lost)."""
        for d in deliveries:
            d.state, d.next_attempt_at = State.queued, now
            if not d.attempts:
                d.first_attempt_at = None

        def run() -> list[bool]:
            with self._write(durable=False) as db:
                return [db.execute(
                    "UPDATE deliveries SET state='queued', run_at=?, lease_owner=NULL, attempt=?, "
                    "first_attempt_at=? WHERE id=? AND lease_owner=? AND attempt=? AND "
                    "state='in_flight'", (now, d.attempt_count, d.first_attempt_at, d.id, owner,
                                          d.attempt_count + 1)).rowcount == 1
                    for d in deliveries]

        done: list[bool] = self._run("release", run)
        return done

    def hold_key(self, key: str, until: float) -> None:
        """No notification under rate key ``key`` before ``until`` (a destination's Retry-After).

        A claim cuts a hold to its destination's ``longest_hold`` from then (see
        :class:`ClaimRules`), so neither a huge request nor a clock stepped back holds a key
        longer than that.
        """
        if math.isnan(until):
            return
        until = min(until, MAX_TIME)

        def run() -> None:
            with self._write(durable=False) as db:
                db.execute("INSERT INTO rate_state(key, tat, hold) VALUES (?, 0, ?) ON CONFLICT(key)"
                           " DO UPDATE SET hold=max(hold, excluded.hold)", (key, until))

        self._run("rate limit", run)

    # -- reading ----------------------------------------------------------------------------------
    def next_due(self, ids: Collection[str] | None = None) -> float | None:
        """When the next unfinished delivery falls due (or its lease runs out); ``None``: none.

        A destination whose rate key the last claim found closed counts from when the key
        opens. Alerts collected for a digest are not counted: a claim closes due digests, and a
        ``worker --once`` does not wait for an open digest window.
        """
        def run() -> dict[str, float]:
            with self._lock:
                return _earliest(self._db, ids)

        earliest: dict[str, float] = self._run("read", run)
        times = [max(first, self._opens.get(name, first)) for name, first in earliest.items()]
        return min(times, default=None)

    def older_pending(self, ids: Collection[str]) -> list[str]:
        """Unfinished deliveries that must go before these (same destination and dedup key,
        accepted earlier)."""
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = self._run("read", lambda: self._db.execute(
            f"SELECT DISTINCT o.id FROM deliveries d JOIN deliveries o ON "
            f"o.destination=d.destination AND o.dedup_key=d.dedup_key AND o.seq<d.seq "
            f"WHERE d.id IN ({marks}) AND o.state IN ('queued','in_flight')", tuple(ids),
        ).fetchall())
        return [r[0] for r in rows]

    def get(self, delivery_id: str) -> Delivery | None:
        """One delivery by id (a unique prefix of at least 6 characters is enough)."""
        # A prefix is a range of the id index, compared as text (LIKE would read '_' and '%' as
        # wildcards, and ignore case): every id that starts with it sorts between the two.
        prefix = delivery_id if len(delivery_id) >= 6 else None
        rows = self._run("read", lambda: self._db.execute(
            f"SELECT {_COLUMNS} FROM deliveries WHERE id=? OR (id>=? AND id<?) LIMIT 2",
            (delivery_id, prefix, prefix and prefix + "\U0010ffff")).fetchall())
        exact = [r for r in rows if r[0] == delivery_id]
        if exact or len(rows) == 1:
            return _shown((exact or rows)[0], self._alerts)
        return None

    def find(self, states: Iterable[str] = (), limit: int = 100,
             ids: Collection[str] | None = None) -> list[Delivery]:
        """Deliveries, newest first, optionally only in ``states`` or with these ``ids``."""
        states = list(states)
        where, params = _id_filter(ids)
        if states:
            where += f" AND state IN ({','.join('?' * len(states))})"
            params = (*params, *states)
        rows = self._run("read", lambda: self._db.execute(
            f"SELECT {_COLUMNS} FROM deliveries WHERE 1=1 {where} ORDER BY seq DESC LIMIT ?",
            (*params, limit)).fetchall())
        return [_shown(r, self._alerts) for r in rows]

    # -- acting -----------------------------------------------------------------------------------
    def retry(self, ids: Collection[str] = (), *, include_failed: bool = False,
              now: float) -> int:
        """Make queued deliveries (all, or ``ids``) due now; with ``include_failed`` also requeue
        failed and dead ones with a fresh retry budget. Returns how many changed."""
        states = ["queued"] + (["failed", "dead"] if include_failed else [])

        def run() -> int:
            with self._write(durable=True) as db:
                where, params = _id_filter(ids or None)
                marks = ",".join("?" * len(states))
                cur = db.execute(
                    "UPDATE deliveries SET run_at=?, state='queued', finalized_at=NULL, "
                    "first_attempt_at=CASE WHEN state='queued' THEN first_attempt_at ELSE NULL END,"
                    " history=CASE WHEN state='queued' THEN history ELSE '[]' END, "
                    "attempt=CASE WHEN state='queued' THEN attempt ELSE 0 END "
                    f"WHERE state IN ({marks}) {where}", (now, *states, *params))
                return cur.rowcount

        count: int = self._run("retry", run)
        return count

    def purge(self, *, older_than: float, now: float) -> int:
        """Delete finished deliveries finalized more than ``older_than`` seconds ago."""

        def run() -> int:
            with self._write(durable=False) as db:
                cur = db.execute(
                    "DELETE FROM deliveries WHERE finalized_at IS NOT NULL AND finalized_at<=?",
                    (now - older_than,))
                return cur.rowcount

        count: int = self._run("purge", run)
        return count

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SqliteOutbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stop_nothing() -> None:
    pass


def _take(d: Delivery, rules: ClaimRules | None, now: float, keys: _RateKeys) -> bool:
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


class _RateKeys:
    """Rate keys as one transaction sees them: each key's row is read once, GCRA runs in memory,
    and what changed is written back by :meth:`save`.

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

    def __init__(self, db: sqlite3.Connection, now: float) -> None:
        self.db = db
        self.now = now
        self._state: dict[str, list[float]] = {}  # key → [tat, hold]
        self._changed: set[str] = set()

    def _key(self, rules: ClaimRules) -> tuple[str, RateLimit, list[float]] | None:
        if rules.rate_limit is None or not rules.rate_key:
            return None
        key, limit = rules.rate_key, rules.rate_limit
        if key not in self._state:
            row = self.db.execute("SELECT tat, hold FROM rate_state WHERE key=?",
                                  (key,)).fetchone()
            self._state[key] = [_real(row[0]), _real(row[1])] if row else [0.0, 0.0]
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
        for key in self._changed:
            tat, hold = self._state[key]
            self.db.execute("INSERT INTO rate_state(key, tat, hold) VALUES (?, ?, ?) ON "
                            "CONFLICT(key) DO UPDATE SET tat=excluded.tat, hold=excluded.hold",
                            (key, tat, hold))
        self._changed.clear()


def _earliest(db: sqlite3.Connection, ids: Collection[str] | None) -> dict[str, float]:
    """Each destination with unfinished deliveries (among ``ids``, if given) → the earliest time
    one of them falls due. Without ``ids`` this walks the index destination by destination, so
    its cost does not grow with the deliveries waiting."""
    if ids is not None:
        where, params = _id_filter(ids)
        rows = db.execute(
            "SELECT destination, min(run_at) FROM deliveries WHERE state IN "
            f"('queued','in_flight') {where} GROUP BY destination", params).fetchall()
    else:
        rows = db.execute(
            "WITH RECURSIVE s(state) AS (VALUES ('queued'), ('in_flight')), "
            "d(state, name) AS (SELECT state, (SELECT destination FROM deliveries WHERE "
            "state=s.state ORDER BY destination LIMIT 1) FROM s UNION ALL SELECT d.state, "
            "(SELECT destination FROM deliveries WHERE state=d.state AND destination>d.name "
            "ORDER BY destination LIMIT 1) FROM d WHERE d.name IS NOT NULL) "
            "SELECT name, (SELECT min(run_at) FROM deliveries WHERE state=d.state AND "
            "destination=d.name) FROM d WHERE name IS NOT NULL").fetchall()
    earliest: dict[str, float] = {}
    for name, first in rows:
        at = min(_real(first), MAX_TIME)
        earliest[name] = min(at, earliest.get(name, at))
    return earliest


def _waits_for_older(db: sqlite3.Connection, d: Delivery) -> bool:
    """An older unfinished delivery for the same destination and dedup key goes first."""
    return db.execute(
        "SELECT 1 FROM deliveries WHERE destination=? AND dedup_key=? AND id<>? AND "
        "state IN ('queued','in_flight') LIMIT 1", (d.destination, d.dedup_key, d.id),
    ).fetchone() is not None


def _id_filter(ids: Collection[str] | None) -> tuple[str, tuple[str, ...]]:
    if ids is None:
        return "", ()
    ids = tuple(ids)
    if not ids:
        return " AND 0", ()
    return f" AND id IN ({','.join('?' * len(ids))})", ids


def _history(d: Delivery) -> str:
    if not d.attempts:
        return "[]"
    return json.dumps([{"number": a.number, "started_at": a.started_at, "duration": a.duration,
                        "status": a.status, "reason": a.reason} for a in d.attempts])


def _details(d: Delivery) -> str:
    return json.dumps(d.details, default=str) if d.details else "{}"


def _to_row(d: Delivery, batch: tuple[str, int] | None = None) -> tuple[Any, ...]:
    return (d.id, d.alert.id, d.alert.status, d.destination, d.destination_type, d.rule,
            json.dumps(list(d.also_matched)) if d.also_matched else "[]", d.dedup_key,
            d.alert.model_dump_json(by_alias=True), int(d.test), d.state.value, d.attempt_count,
            d.next_attempt_at, d.first_attempt_at, d.created_at, d.reason, d.hint, _details(d),
            _history(d), d.alert.asset.id, batch[0] if batch else None,
            batch[1] if batch else None,
            json.dumps([a.model_dump_json(by_alias=True) for a in d.digest]) if d.digest else "[]")


def _insert(db: sqlite3.Connection, d: Delivery, now: float,
            batch: tuple[str, int] | None = None, owner: str | None = None) -> None:
    """Write a new delivery; with ``owner``, leased to it for its next attempt."""
    row = _to_row(d, batch)
    if owner is not None:
        row = (*row[:11], d.attempt_count + 1, *row[12:])
    db.execute(f"INSERT INTO deliveries ({_COLUMNS}, lease_owner, finalized_at) VALUES "
               "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
               (*row, owner, now if d.state.final else None))


def _apply(d: Delivery, decision: Decision) -> tuple[str, int] | None:
    """Apply a noise decision to a delivery about to be written; returns its digest batch."""
    if decision.action == "suppress":
        d.finish(State.suppressed, decision.reason)
    elif decision.action == "hold":
        d.next_attempt_at = decision.until or d.next_attempt_at
        d.reason = decision.reason
    elif decision.action == "digest" and decision.digest is not None:
        d.state = State.batched
        d.reason = decision.reason
        d.next_attempt_at = decision.until or d.next_attempt_at
        return batch_key(d.destination), decision.digest.max_items
    return None


class _History:
    """Answers the noise gate's questions from the deliveries table."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def last_notified(self, rule: str, asset_id: str, destination: str,
                      since: float) -> float | None:
        row = self.db.execute(
            "SELECT max(created_at) FROM deliveries WHERE rule=? AND asset_id=? AND destination=? "
            f"AND created_at>=? AND (state IN {NOTIFYING} OR state IN ('batched','digested'))",
            (rule, asset_id, destination, since)).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def count_notified(self, since: float, *, rule: str | None = None,
                       destination: str | None = None) -> int:
        where = ""
        params: tuple[str, ...] = ()
        if rule is not None:
            where, params = " AND rule=?", (rule,)
        if destination is not None:
            where, params = where + " AND destination=?", (*params, destination)
        row = self.db.execute(
            f"SELECT count(*) FROM deliveries WHERE created_at>=? AND state IN {NOTIFYING} "
            f"AND test=0 {where}", (since, *params)).fetchone()
        return int(row[0])

    def digest_closes(self, key: str) -> float | None:
        row = self.db.execute("SELECT min(run_at) FROM deliveries WHERE batch_key=? AND "
                              "state='batched'", (key,)).fetchone()
        return None if row is None or row[0] is None else float(row[0])


def _close_due_digests(db: sqlite3.Connection, now: float, known: Mapping[str, Alert]) -> None:
    """Turn every digest whose window closed (or filled) into queued digest deliveries of at
    most ``max_items`` alerts each, oldest alerts first."""
    due = db.execute(
        "SELECT batch_key, max(batch_max), min(run_at)<=? FROM deliveries WHERE state='batched' "
        "GROUP BY batch_key HAVING min(run_at)<=? OR count(*)>=max(batch_max)",
        (now, now)).fetchall()
    for key, size, closed in due:
        while True:
            rows = db.execute(f"SELECT {_COLUMNS} FROM deliveries WHERE batch_key=? AND "
                              "state='batched' ORDER BY seq LIMIT ?", (key, size)).fetchall()
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


def _send_as_digest(db: sqlite3.Connection, members: list[Delivery], now: float) -> None:
    digest = make_digest(members, now)
    _insert(db, digest, now)
    marks = ",".join("?" * len(members))
    db.execute(f"UPDATE deliveries SET state='digested', finalized_at=?, digest_id=?, "
               f"reason=? WHERE id IN ({marks})",
               (now, digest.id, f"sent in digest {digest.id[:12]}", *[m.id for m in members]))


def _save(db: sqlite3.Connection, d: Delivery, now: float, *, attempt: int | None = None,
          owner: str | None = None) -> None:
    db.execute(
        "UPDATE deliveries SET state=?, run_at=?, lease_owner=?, attempt=?, first_attempt_at=?, "
        "reason=?, hint=?, history=?, finalized_at=? WHERE id=?",
        (d.state.value, d.next_attempt_at, owner, d.attempt_count if attempt is None else attempt,
         d.first_attempt_at, d.reason, d.hint, _history(d), now if d.state.final else None, d.id))


def _from_row(row: Sequence[Any], known: Mapping[str, Alert] | None = None) -> Delivery:
    """The stored delivery; raises when the row cannot be read back (see :func:`_shown`)."""
    (id_, _alert_id, _status, destination, dtype, rule, also, dedup, alert_json, test, state,
     _attempt, run_at, first, created, reason, hint, details, history, _asset, _batch, _max,
     digest) = row
    alert = known.get(id_) if known else None
    d = Delivery(
        alert=alert or Alert.model_validate_json(alert_json, context={"event_types": None}),
        destination=destination, destination_type=dtype, rule=rule,
        dedup_key=dedup, also_matched=tuple(json.loads(also)), id=id_, state=State(state),
        next_attempt_at=_time(run_at), first_attempt_at=None if first is None else _time(first),
        reason=reason, hint=hint, details=json.loads(details), test=bool(test),
        created_at=_time(created),
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
    reason (the next claim marks it so in the file), so ``outbox list/show`` never fail."""
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


def _bury(db: sqlite3.Connection, seq: int, reason: str, now: float) -> None:
    """Mark an unreadable delivery dead, with the reason, so the queue goes on without it."""
    db.execute("UPDATE deliveries SET state='dead', finalized_at=?, lease_owner=NULL, reason=?, "
               "hint=? WHERE seq=?",
               (now, reason, "it was damaged in the state file, or written by a version that "
                             "accepted what this one refuses; send the alert again if needed",
                seq))


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
