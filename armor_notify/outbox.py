"""The outbox: every delivery written down before it is attempted, in SQLite.

One file (WAL mode) shared by ``send`` and any number of ``worker`` processes on one machine.
Workers claim due deliveries under a lease inside a short ``BEGIN IMMEDIATE`` transaction, so two
workers never send one delivery at the same time, and a delivery whose worker died is claimed
again when its lease expires (at-least-once). Per-destination rate limits are kept here too
(GCRA: one "theoretical arrival time" per key), so they hold across processes.

The same class runs on an in-memory database for programs that want no file
(:meth:`SqliteOutbox.memory`). The protocol (:class:`Outbox`) and the algorithms every backend
shares are in :mod:`armor_notify.outbox_core` (its names are importable from here too); this
module holds SQLite's schema, transactions and error messages, and :class:`_SqliteDb`, the
adaptor the shared algorithms run through.
"""

from __future__ import annotations

import functools
import math
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import ledger, mutes
from . import outbox_core as core
from .alert import Alert
from .delivery import Delivery
from .history import History
from .ledger import CheckState
from .mutes import Closed, Mute, MuteScope
from .outbox_core import (
    CLOCK_SLACK,
    FINAL,
    MAX_TIME,
    NOTIFYING,
    TICK,
    UNREADABLE,
    CheckIntake,
    ClaimRules,
    IntakePolicy,
    Outbox,
    OutboxError,
    Row,
    RulesFor,
)

__all__ = [
    "BUSY_TIMEOUT_MS", "CLOCK_SLACK", "FILE_NAME", "FINAL", "MAX_TIME", "NOTIFYING",
    "SCHEMA_VERSION", "STATE_ENV", "TICK", "UNREADABLE", "ClaimRules", "IntakePolicy", "Outbox",
    "OutboxError", "RulesFor", "SqliteOutbox", "default_state_dir",
]

STATE_ENV = "ARMOR_NOTIFY_STATE_DIR"
FILE_NAME = "outbox.sqlite3"
SCHEMA_VERSION = 4
BUSY_TIMEOUT_MS = 5000


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
# Schema 2: the check-state ledger (armor_notify.ledger), mutes (armor_notify.mutes) and the
# mute holding a delivery.
_V2 = (
    """CREATE TABLE IF NOT EXISTS checks (
        source TEXT NOT NULL, check_id TEXT NOT NULL, asset_id TEXT NOT NULL,
        state TEXT NOT NULL, since REAL NOT NULL, last_status TEXT NOT NULL,
        last_run_at REAL NOT NULL, last_run_id TEXT, passes INTEGER NOT NULL DEFAULT 0,
        resolve_after INTEGER NOT NULL DEFAULT 1, expect_every REAL, missing_since REAL,
        reminded_at REAL, alert TEXT, incident TEXT, missing_incident TEXT, overdue_at REAL,
        PRIMARY KEY (source, check_id, asset_id))""",
    "CREATE INDEX IF NOT EXISTS checks_overdue ON checks(overdue_at) WHERE overdue_at IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS mutes (
        id INTEGER PRIMARY KEY AUTOINCREMENT, scope TEXT NOT NULL, reason TEXT NOT NULL,
        author TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL,
        lifted_at REAL)""",
    "ALTER TABLE deliveries ADD COLUMN mute_id INTEGER",
    "CREATE INDEX IF NOT EXISTS deliveries_mute ON deliveries(mute_id) WHERE mute_id IS NOT NULL",
)
# Schema 3: lineage folding (armor_notify.check_intake.Roots): the root a failing check is
# folded into, and when it is released to page on its own.
_V3 = (
    "ALTER TABLE checks ADD COLUMN folded_into TEXT",
    "ALTER TABLE checks ADD COLUMN release_at REAL",
)
# Schema 4: where a destination posted a delivery (Slack's channel and ts), to update that
# message and reply in its thread when the incident changes.
_V4 = ("ALTER TABLE deliveries ADD COLUMN message TEXT",)
MIGRATIONS: dict[int, tuple[str, ...]] = {2: _V2, 3: _V3, 4: _V4}
"""Schema version → the statements that bring the version before it there (applied in order,
in the transaction that opens the file; version 1 is ``_SCHEMA``)."""


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
        self._waits: dict[str, int] = {}  # rate_waits
        try:
            self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000,
                                       isolation_level=None, check_same_thread=False)
            self._sql = _SqliteDb(self._db)
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
                if "hold" not in {r[1] for r in db.all("PRAGMA table_info(rate_state)")}:
                    db.execute("ALTER TABLE rate_state ADD COLUMN hold REAL NOT NULL DEFAULT 0")
                db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', '1')")
                row = db.one("SELECT value FROM meta WHERE key='schema'")
                version = str(row[0]) if row else "?"
                if version.isdigit() and int(version) < SCHEMA_VERSION:
                    for step in range(int(version) + 1, SCHEMA_VERSION + 1):
                        for statement in MIGRATIONS[step]:
                            if not _has_column_already(db, statement):
                                db.execute(statement)
                    db.execute("UPDATE meta SET value=? WHERE key='schema'",
                               (str(SCHEMA_VERSION),))
                    version = str(SCHEMA_VERSION)
        except sqlite3.Error as exc:
            raise _explain(exc, path) from None
        if version != str(SCHEMA_VERSION):
            newer = version.isdigit() and int(version) > SCHEMA_VERSION
            raise OutboxError(f"{path}: written by " + (
                f"a newer armor-notify (schema {version}; this version knows up to "
                f"{SCHEMA_VERSION}): upgrade armor-notify on this machine" if newer else
                f"another armor-notify version (schema {version}, this one reads "
                f"{SCHEMA_VERSION})"))

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

        def __enter__(self) -> _SqliteDb:
            self.outbox._lock.acquire()
            try:
                self.outbox._sync(self.durable)
                self.outbox._db.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.outbox._lock.release()
                raise
            return self.outbox._sql

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
                lease_to: tuple[str, RulesFor] | None = None,
                checks: CheckIntake | None = None) -> list[tuple[Delivery, bool]]:
        """Write deliveries in one transaction. A delivery of the same alert id, status and
        destination accepted within ``repeat_window`` seconds is not written again: the stored
        one is returned with ``False``. ``policy`` (:class:`IntakePolicy`: the noise gate's
        schedules, blackouts, cooldowns, daily limits and digests) decides each new
        delivery against the outbox's history in the same transaction, so concurrent processes
        see each other's decisions. With ``lease_to`` (owner, rules),
        deliveries due now are leased to that owner in the same transaction, as a claim would
        (they come back ``in_flight``): the caller is about to send them itself. ``checks``
        (the check ledger) decides first what check results send."""

        def run() -> list[tuple[Delivery, bool]]:
            with self._write(durable=True) as db:
                out = core.enqueue(db, deliveries, repeat_window=repeat_window, now=now,
                                   policy=policy, lease_to=lease_to, checks=checks)
            self._alerts.update((d.id, d.alert) for d, new in out if new and not d.state.final)
            return out

        result: list[tuple[Delivery, bool]] = self._run("enqueue", run)
        return result

    def history(self) -> History:
        """Read-only access to what was notified when, the mutes and the check ledger (for
        ``route --at``)."""
        return core.TableHistory(self._sql)

    # -- checks and mutes -------------------------------------------------------------------------
    def checks(self, *, failing: bool = False) -> list[CheckState]:
        """The check-state ledger, failing checks first."""
        with self._lock:
            found: list[CheckState] = self._run("read", lambda: ledger.listing(
                self._sql, failing=failing))
        return found

    def next_overdue(self) -> float | None:
        with self._lock:
            due: float | None = self._run("read", lambda: ledger.next_overdue(self._sql))
        return due

    def add_mute(self, scope: MuteScope, reason: str, author: str, *, now: float,
                 until: float) -> Mute:
        def run() -> Mute:
            with self._write(durable=True) as db:
                return mutes.add(db, scope, reason, author, now, until)

        made: Mute = self._run("mute", run)
        return made

    def mutes(self, now: float, *, ended: bool = False) -> list[Mute]:
        with self._lock:
            found: list[Mute] = self._run("read", lambda: mutes.listing(self._sql, now,
                                                                        ended=ended))
        return found

    def lift_mute(self, mute_id: int, now: float, zone: str = "UTC",
                  closed: Closed | None = None) -> tuple[Mute | None, list[str]]:
        def run() -> tuple[Mute | None, list[str]]:
            with self._write(durable=True) as db:
                return mutes.lift(db, mute_id, now, zone, closed)

        lifted: tuple[Mute | None, list[str]] = self._run("unmute", run)
        return lifted

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
            with self._write(durable=False) as db:  # one writer at a time: digests too
                if ids is None:
                    core.close_due_digests(db, now, self._alerts)
                return core.claim(db, owner, now, limit, rules_for, ids, busy,
                                  known=self._alerts, opens=self._opens, waits=self._waits)

        result: list[Delivery] = self._run("claim", run)
        return result

    def complete(self, deliveries: Sequence[Delivery], owner: str, now: float) -> list[bool]:
        """Store the outcomes of attempts ``owner`` holds, in one transaction; for each, ``False``
        if its lease was lost (another worker took it over: its answer is the one kept)."""

        def run() -> list[bool]:
            if len(deliveries) == 1:  # one statement: SQLite makes it its own transaction
                with self._lock:
                    self._sync(durable=False)
                    return core.complete(self._sql, deliveries, owner, now)
            with self._write(durable=False) as db:
                return core.complete(db, deliveries, owner, now)

        done: list[bool] = self._run("complete", run)
        for d in deliveries:
            if d.state.final:
                self._alerts.pop(d.id, None)
        return done

    def release(self, deliveries: Sequence[Delivery], owner: str, now: float) -> list[bool]:
        """Give back leases ``owner`` holds on deliveries whose attempt never started: each is
        queued again, due ``now``, without spending an attempt (``False``: the lease was lost)."""
        core.requeue(deliveries, now)

        def run() -> list[bool]:
            with self._write(durable=False) as db:
                return core.release(db, deliveries, owner, now)

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
        def run() -> float | None:
            with self._lock:
                return core.next_due(self._sql, ids, self._opens)

        due: float | None = self._run("read", run)
        return due

    def older_pending(self, ids: Collection[str]) -> list[str]:
        """Unfinished deliveries that must go before these (same destination and dedup key,
        accepted earlier)."""
        if not ids:
            return []
        found: list[str] = self._run("read", lambda: core.older_pending(self._sql, ids))
        return found

    def get(self, delivery_id: str) -> Delivery | None:
        """One delivery by id (a unique prefix of at least 6 characters is enough)."""
        found: Delivery | None = self._run("read", lambda: core.get(self._sql, delivery_id,
                                                                     self._alerts))
        return found

    def find(self, states: Iterable[str] = (), limit: int = 100,
             ids: Collection[str] | None = None) -> list[Delivery]:
        """Deliveries, newest first, optionally only in ``states`` or with these ``ids``."""
        found: list[Delivery] = self._run("read", lambda: core.find(self._sql, states, limit, ids,
                                                                     self._alerts))
        return found

    @property
    def rate_waits(self) -> Mapping[str, int]:
        return dict(self._waits)

    def summary(self, now: float) -> core.Summary:
        """Deliveries by state, in all and in the last hour, the oldest waiting one, checks by
        state and missing, mutes in force and what they hold."""
        with self._lock:
            result: core.Summary = self._run("read", lambda: core.summary(self._sql, now))
        return result

    # -- acting -----------------------------------------------------------------------------------
    def retry(self, ids: Collection[str] = (), *, include_failed: bool = False,
              now: float) -> int:
        """Make queued deliveries (all, or ``ids``) due now; with ``include_failed`` also requeue
        failed and dead ones with a fresh retry budget. Returns how many changed."""

        def run() -> int:
            with self._write(durable=True) as db:
                return core.retry(db, ids, include_failed=include_failed, now=now)

        count: int = self._run("retry", run)
        return count

    def purge(self, *, older_than: float, now: float) -> int:
        """Delete finished deliveries finalized more than ``older_than`` seconds ago."""

        def run() -> int:
            with self._write(durable=False) as db:
                return core.purge(db, older_than=older_than, now=now)

        count: int = self._run("purge", run)
        return count

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SqliteOutbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _has_column_already(db: _SqliteDb, statement: str) -> bool:
    """An ``ALTER TABLE t ADD COLUMN c`` whose column is there already (SQLite has no ``IF NOT
    EXISTS`` for columns): a file a development build wrote is brought up all the same."""
    found = re.match(r"ALTER TABLE (\w+) ADD COLUMN (\w+)", statement)
    return found is not None and found.group(2) in {
        r[1] for r in db.all(f"PRAGMA table_info({found.group(1)})")}


def _stop_nothing() -> None:
    pass


class _SqliteDb:
    """The shared algorithms' statements (:class:`~armor_notify.outbox_core.Db`) on SQLite's
    connection: ``?`` placeholders are SQLite's own, and the write transaction holds the whole
    file, so a claim locks nothing row by row."""

    store = "the state file"
    first_of_its_key = ("NOT EXISTS (SELECT 1 FROM deliveries o WHERE o.destination=d.destination "
                        "AND o.dedup_key=d.dedup_key AND o.seq<d.seq AND o.state IN "
                        "('queued','in_flight'))")
    claim_lock = ""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self.db.execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.db.execute(sql, params).fetchall()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.db.execute(sql, params).rowcount

    def among(self, column: str, values: Collection[Any]) -> tuple[str, tuple[Any, ...]]:
        values = tuple(values)
        if not values:
            return "0", ()
        return f"{column} IN ({','.join('?' * len(values))})", values

    def rate_key(self, key: str) -> Row | None:
        return self.one("SELECT tat, hold FROM rate_state WHERE key=?", (key,))
