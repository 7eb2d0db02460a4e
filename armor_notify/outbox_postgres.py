"""The outbox on PostgreSQL: one queue shared by workers on any number of machines.

Selected by a ``postgresql://`` (or ``postgres://``) URL; imported only then, and psycopg 3 (the
``postgresql`` extra) only when an outbox is opened. It keeps every promise
:class:`~armor_notify.outbox.SqliteOutbox` keeps (and passes the same conformance suite), across
processes and machines:

- **Claims** lock due rows with ``SELECT … FOR UPDATE SKIP LOCKED`` inside the claim's
  transaction (see :meth:`PostgresOutbox.claim` for why), and lease them with an expiry; a
  worker that dies loses its leases to the others when they run out.
- **Intake order** per (destination, dedup key): a delivery waits while an older one with its
  key is unfinished, so a retried trigger never overtakes its resolve.
- **Intake** runs one transaction at a time (a transaction-level advisory lock), as SQLite's
  single writer does: the repeat window (idempotent intake by alert id) and the noise policy's
  cooldowns, daily limits and digest windows then see every earlier intake, from any process.
  Claims, completions and reads do not take that lock.
- **Rate keys** (GCRA, one row per key in ``rate_state``) are locked row by row (``FOR UPDATE``,
  in one order everywhere, so two claims never deadlock) and updated in the claim's own
  transaction, so one PagerDuty integration key gets at most its rate from the whole fleet.

Times are ``double precision`` seconds, as the protocol passes them (``now``): the callers'
clocks, not the server's, exactly as with SQLite.

The algorithms (intake, claims, digests, rate keys, the row codec) are the ones SQLite runs,
from :mod:`armor_notify.outbox_core`, through :class:`_Db`; what is PostgreSQL's own is here:
the locks above, ``NOTIFY``, the schema and its migrations, connecting and the error messages.

The tables live in their own PostgreSQL schema, ``armor_notify`` (so they never meet a user's
tables in a shared database), created on first use under an advisory lock so that two workers
starting at once do not race. Its version is in ``armor_notify.meta``; a newer one than this
code knows is refused. Every database error becomes an :class:`OutboxError` naming the URL with
its password removed.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from . import ledger, mutes
from . import outbox_core as core
from .alert import Alert
from .delivery import Delivery, State
from .history import History
from .ledger import CheckState
from .mutes import Closed, Mute, MuteScope
from .outbox_core import MAX_TIME, CheckIntake, IntakePolicy, OutboxError, Row, RulesFor
from .secrets import ELLIPSIS

if TYPE_CHECKING:
    import psycopg

SCHEMA_VERSION = 5
SCHEMA = "armor_notify"
"""The PostgreSQL schema (namespace) that holds the outbox's tables."""
EXTRA = "pip install 'armor-notify[postgresql]'"
CONNECT_TIMEOUT = 10
"""Seconds to wait for the server when connecting (a ``connect_timeout`` in the URL wins)."""

# Transaction-level advisory locks, by name (``hashtextextended`` makes the 64-bit key).
_SCHEMA_LOCK = "armor-notify schema"
_INTAKE_LOCK = "armor-notify intake"
_DIGEST_LOCK = "armor-notify digests"

_V1 = (
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # The columns of SQLite's table, with PostgreSQL's types. ``id`` compares byte-wise (collation
    # "C"), so a prefix is a range of its index whatever the database's collation.
    """CREATE TABLE IF NOT EXISTS deliveries (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT COLLATE "C" NOT NULL UNIQUE,
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
        run_at DOUBLE PRECISION NOT NULL,
        lease_owner TEXT,
        first_attempt_at DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL,
        finalized_at DOUBLE PRECISION,
        reason TEXT NOT NULL DEFAULT '',
        hint TEXT,
        details TEXT NOT NULL DEFAULT '{}',
        history TEXT NOT NULL DEFAULT '[]',
        asset_id TEXT NOT NULL DEFAULT '',
        batch_key TEXT,
        batch_max INTEGER,
        digest TEXT NOT NULL DEFAULT '[]',
        digest_id TEXT,
        CHECK ((finalized_at IS NULL) = (state IN ('queued', 'in_flight', 'batched'))))""",
    "CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(state, run_at)",
    "CREATE INDEX IF NOT EXISTS deliveries_intake ON deliveries(alert_id, alert_status, destination)",
    "CREATE INDEX IF NOT EXISTS deliveries_order ON deliveries(destination, dedup_key, seq)",
    "CREATE INDEX IF NOT EXISTS deliveries_rule ON deliveries(rule, asset_id, created_at)",
    "CREATE INDEX IF NOT EXISTS deliveries_batch ON deliveries(batch_key, state)",
    "CREATE INDEX IF NOT EXISTS deliveries_destination ON deliveries(state, destination, run_at)",
    "CREATE INDEX IF NOT EXISTS deliveries_finalized ON deliveries(finalized_at) "
    "WHERE finalized_at IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS rate_state (key TEXT PRIMARY KEY, tat DOUBLE PRECISION NOT NULL,
                                              hold DOUBLE PRECISION NOT NULL DEFAULT 0)""",
)
# Indexes that hold their plan before the planner has statistics (a table that grew from empty
# in minutes): the intake lookup's order comes from its index, a claim reads due rows in the
# order it takes them (so its LIMIT stops the scan), and "the oldest unfinished delivery with
# this key" reads only unfinished rows. Without them a fresh table's intake and claims slowed
# with every row (an ORDER BY seq … LIMIT 1 walked the primary key; an anti-join compared each
# due row with every pending one).
_V2 = (
    "DROP INDEX IF EXISTS deliveries_intake",
    "DROP INDEX IF EXISTS deliveries_destination",
    "CREATE INDEX IF NOT EXISTS deliveries_claim ON deliveries(state, destination, run_at, seq)",
    "CREATE INDEX IF NOT EXISTS deliveries_intake_seq "
    "ON deliveries(alert_id, alert_status, destination, seq)",
    "CREATE INDEX IF NOT EXISTS deliveries_pending_order ON deliveries(destination, dedup_key, seq) "
    "WHERE state IN ('queued', 'in_flight')",
)
# The check-state ledger (armor_notify.ledger), mutes (armor_notify.mutes) and the mute holding a
# delivery: SQLite's schema 2, with PostgreSQL's types.
_V3 = (
    """CREATE TABLE IF NOT EXISTS checks (
        source TEXT NOT NULL, check_id TEXT NOT NULL, asset_id TEXT NOT NULL,
        state TEXT NOT NULL, since DOUBLE PRECISION NOT NULL, last_status TEXT NOT NULL,
        last_run_at DOUBLE PRECISION NOT NULL, last_run_id TEXT,
        passes INTEGER NOT NULL DEFAULT 0, resolve_after INTEGER NOT NULL DEFAULT 1,
        expect_every DOUBLE PRECISION, missing_since DOUBLE PRECISION,
        reminded_at DOUBLE PRECISION, alert TEXT, incident TEXT, missing_incident TEXT,
        overdue_at DOUBLE PRECISION, PRIMARY KEY (source, check_id, asset_id))""",
    "CREATE INDEX IF NOT EXISTS checks_overdue ON checks(overdue_at) WHERE overdue_at IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS mutes (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, scope TEXT NOT NULL,
        reason TEXT NOT NULL, author TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL, lifted_at DOUBLE PRECISION)""",
    "ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS mute_id BIGINT",
    "CREATE INDEX IF NOT EXISTS deliveries_mute ON deliveries(mute_id) WHERE mute_id IS NOT NULL",
)
# Lineage folding: SQLite's schema 3.
_V4 = (
    "ALTER TABLE checks ADD COLUMN IF NOT EXISTS folded_into TEXT",
    "ALTER TABLE checks ADD COLUMN IF NOT EXISTS release_at DOUBLE PRECISION",
)
# Where a destination posted a delivery: SQLite's schema 4.
_V5 = ("ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS message TEXT",)
MIGRATIONS: dict[int, tuple[str, ...]] = {1: _V1, 2: _V2, 3: _V3, 4: _V4, 5: _V5}
"""Schema version → the statements that bring the version before it there (1: from nothing).
Applied in order, in one transaction, under the schema lock."""


def shown_url(url: str) -> str:
    """The URL as messages show it: scheme, user, host, port and database, never a password (nor
    the query, which may hold one)."""
    try:
        parts = urlsplit(url)
        user = parts.username
    except ValueError:
        return ELLIPSIS
    netloc = parts.netloc.rpartition("@")[2]  # host and port as written, without credentials
    if user:
        netloc = f"{unquote(user)}@{netloc}"
    return f"{parts.scheme or 'postgresql'}://{netloc}{parts.path}"


def _passwords(url: str) -> list[str]:
    """Every form the URL's password may take in a message (as written, and decoded). Read
    without ``urlsplit``, which refuses some malformed URLs that libpq then quotes whole."""
    found: list[str] = []
    userinfo = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)@", url)
    if userinfo and ":" in userinfo.group(1):
        found.append(userinfo.group(1).split(":", 1)[1])
    for pair in re.split(r"[&;]", url.partition("?")[2].partition("#")[0]):
        name, _, value = pair.partition("=")
        if unquote(name) == "password":
            found.append(value)
    return [p for p in {*found, *(unquote(p) for p in found)} if p]


def _driver() -> None:
    """psycopg is an optional dependency: say which extra brings it."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise OutboxError("a postgresql:// state URL needs psycopg (PostgreSQL's driver), which "
                          f"is not installed: {EXTRA}") from None


def _storable(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL, nor (as UTF-8) lone surrogates: they become U+FFFD, as
    SQLite shows undecodable text, instead of failing the whole transaction."""
    if isinstance(value, list):
        return [_storable(v) for v in value]
    if isinstance(value, str):
        value = value.replace("\x00", "\ufffd")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "replace").decode("utf-8")
    return value


class _Db:
    """One transaction's statements (:class:`~armor_notify.outbox_core.Db`): ``?`` placeholders
    become psycopg's ``%s`` (a statement written with ``%s`` passes as it is), text is made
    storable, a list is one array parameter, and claims lock the rows they take."""

    store = "the database"
    # The order rule as "d is the oldest unfinished delivery of its key", an index probe
    # (deliveries_pending_order, see _V2), rather than NOT EXISTS: PostgreSQL's planner turned
    # that anti-join into comparing each due row with every pending one.
    first_of_its_key = ("d.seq = (SELECT min(o.seq) FROM deliveries o WHERE "
                        "o.destination=d.destination AND o.dedup_key=d.dedup_key AND "
                        "o.state IN ('queued','in_flight'))")
    claim_lock = " FOR UPDATE SKIP LOCKED"  # see PostgresOutbox.claim

    def __init__(self, cursor: psycopg.Cursor[Row]) -> None:
        self.cursor = cursor

    def execute(self, query: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; how many rows it changed."""
        self.cursor.execute(query.replace("?", "%s"), [_storable(p) for p in params])
        return self.cursor.rowcount

    def one(self, query: str, params: Sequence[Any] = ()) -> Row | None:
        self.cursor.execute(query.replace("?", "%s"), [_storable(p) for p in params])
        return self.cursor.fetchone()

    def all(self, query: str, params: Sequence[Any] = ()) -> list[Row]:
        self.cursor.execute(query.replace("?", "%s"), [_storable(p) for p in params])
        return self.cursor.fetchall()

    def among(self, column: str, values: Collection[Any]) -> tuple[str, tuple[Any, ...]]:
        return f"{column} = ANY(?)", (list(values),)

    def rate_key(self, key: str) -> Row | None:
        """The key's row, locked (``FOR UPDATE``) so two transactions never book one key from
        the same stale state; a missing row is created first, so that there is one to lock."""
        query = "SELECT tat, hold FROM rate_state WHERE key=? FOR UPDATE"
        row = self.one(query, (key,))
        if row is None:
            self.execute("INSERT INTO rate_state(key, tat, hold) VALUES (?, 0, 0) "
                         "ON CONFLICT (key) DO NOTHING", (key,))
            row = self.one(query, (key,))
        return row


class PostgresOutbox:
    """The outbox on PostgreSQL. One connection, used by one thread at a time (a lock guards it);
    every process opens its own."""

    def __init__(self, url: str) -> None:
        _driver()
        self.url = url
        self.where = shown_url(url)
        self._secrets = _passwords(url)
        self._lock = threading.RLock()
        # As in SqliteOutbox: alerts this process enqueued and has not finished (no re-parsing),
        # and when each destination's closed rate key opens, as the last claim found it.
        self._alerts: dict[str, Alert] = {}
        self._opens: dict[str, float] = {}
        self._waits: dict[str, int] = {}  # rate_waits
        self._conn: psycopg.Connection[Row] | None = None
        self._closed = False
        with self._lock:
            self._connection()

    @classmethod
    def open(cls, url: str) -> PostgresOutbox:
        """The outbox in the database at ``url``; its tables are created on first use."""
        return cls(url)

    @property
    def schema_version(self) -> int:
        return SCHEMA_VERSION  # opening refuses any other

    def listen(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` whenever any process queues work (``LISTEN``; intake, ``retry`` and
        given-back leases ``NOTIFY`` in their transaction, so it arrives at commit): an idle
        worker starts a new delivery within milliseconds instead of at its next poll.

        A thread of its own holds a second connection for it. When that connection breaks it
        is made again (1 s, then up to 30 s apart) and ``wake`` is called once, for what may
        have been queued meanwhile; until then the worker's polling finds it. Returns the
        function that stops listening."""
        listener = _Listener(self, wake)
        listener.start()
        return listener.stop

    # -- connection and transactions ----------------------------------------------------------------
    def _connection(self) -> psycopg.Connection[Row]:
        """The open connection; a new one (and the schema checked) if there is none or the
        last one broke, so a worker resumes by itself when the database comes back."""
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        if self._closed:
            raise OutboxError(f"{self.where}: the outbox is closed")
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        try:
            settings: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT,
                                        "application_name": "armor-notify"}
            settings.update(conninfo_to_dict(self.url))  # what the URL says wins
            conn: psycopg.Connection[Row] = psycopg.connect(autocommit=True, **settings)
        except (psycopg.Error, ValueError) as exc:
            raise self._error(exc, "connect") from None
        try:
            conn.execute(f"SET search_path TO {SCHEMA}")
            self._ensure_schema(conn)
        except psycopg.Error as exc:
            conn.close()
            raise self._error(exc, "schema") from None
        except OutboxError:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _ensure_schema(self, conn: psycopg.Connection[Row]) -> None:
        """Create the tables on first use, or bring an older schema to this version
        (:data:`MIGRATIONS`), under an advisory lock so that two workers starting at once do
        not race; refuse a schema newer than this code."""

        def version(db: _Db) -> str | None:
            found = db.one("SELECT to_regclass(?)", (f"{SCHEMA}.meta",))
            if found is None or found[0] is None:
                return None
            row = db.one("SELECT value FROM meta WHERE key='schema'")
            return None if row is None else str(row[0])

        with conn.transaction():
            stored = _number(version(_Db(conn.cursor())))
        if stored < SCHEMA_VERSION:
            # A session lock, taken before the transaction that looks again and migrates: a
            # transaction begun while waiting for the lock may still see the catalog as it was
            # before the last holder committed, and migrate a second time, beside processes
            # already using the tables (a deadlock, seen with two workers starting at once).
            conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (_SCHEMA_LOCK,))
            try:
                with conn.transaction():
                    db = _Db(conn.cursor())
                    stored = _number(version(db))  # whoever held the lock may have just done it
                    if stored == 0:
                        self._check_encoding(db)
                    if 0 <= stored < SCHEMA_VERSION:
                        for step in range(stored + 1, SCHEMA_VERSION + 1):
                            for statement in MIGRATIONS[step]:
                                db.execute(statement)
                        db.execute("INSERT INTO meta VALUES ('schema', ?) ON CONFLICT (key) DO "
                                   "UPDATE SET value = EXCLUDED.value", (str(SCHEMA_VERSION),))
                        stored = SCHEMA_VERSION
            finally:
                if not conn.broken:  # a broken connection's session locks are gone with it
                    conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))",
                                 (_SCHEMA_LOCK,))
        if stored > SCHEMA_VERSION:
            raise OutboxError(f"{self.where}: the outbox was written by a newer armor-notify "
                              f"(schema {stored}; this version knows up to {SCHEMA_VERSION}); "
                              "upgrade armor-notify on this machine")
        if stored != SCHEMA_VERSION:
            raise OutboxError(f"{self.where}: the outbox's schema version is not one this "
                              f"armor-notify knows (1 to {SCHEMA_VERSION})")

    def _check_encoding(self, db: _Db) -> None:
        (encoding,) = db.one("SHOW server_encoding") or ("?",)
        if str(encoding).upper() not in ("UTF8", "UTF-8"):
            raise OutboxError(f"{self.where}: the database's encoding is {encoding}; "
                              "the outbox needs UTF8 (CREATE DATABASE … ENCODING 'UTF8')")

    @contextlib.contextmanager
    def _tx(self, what: str, *, durable: bool = True) -> Iterator[_Db]:
        """One transaction (READ COMMITTED). ``durable=False`` commits without waiting for the
        server's disk (``synchronous_commit = off``): progress (claims, outcomes), whose loss in
        a server crash means a delivery is sent again, never lost; intake stays durable. The
        same split as SQLite's FULL and NORMAL."""
        import psycopg

        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction():
                    db = _Db(conn.cursor())
                    if not durable:
                        db.execute("SET LOCAL synchronous_commit = off")
                    yield db
            except psycopg.Error as exc:
                raise self._error(exc, what) from None

    def _error(self, exc: BaseException, what: str) -> OutboxError:
        """A database error as a message for people: where (the URL without its password),
        doing what, what the server or driver said, and what to check."""
        import psycopg

        detail = " ".join(str(exc).split()) or type(exc).__name__
        state = getattr(exc, "sqlstate", None) or ""
        hint = ""
        # A failed connection has no SQLSTATE: what the server said is in the text.
        if state in ("28P01", "28000") or "password authentication failed" in detail \
                or "no password supplied" in detail:
            hint = "; check the user and password in the URL"
        elif state == "3D000" or re.search(r'database ".*" does not exist', detail):
            hint = "; create the database first (createdb), or fix its name in the URL"
        elif state == "42501":
            hint = (f"; the user needs the right to create the '{SCHEMA}' schema on first use, "
                    "and to read and write its tables")
        elif state in ("40P01", "40001"):
            hint = "; try again"
        elif isinstance(exc, psycopg.OperationalError) and not state:
            hint = "; check the URL, and that the server is running and reachable"
        message = f"{self.where} ({what}): {detail}{hint}"
        for secret in sorted(self._secrets, key=len, reverse=True):
            message = message.replace(secret, ELLIPSIS)
        return OutboxError(message)

    # -- intake ---------------------------------------------------------------------------------------
    def enqueue(self, deliveries: Sequence[Delivery], *, repeat_window: float,
                now: float, policy: IntakePolicy | None = None,
                lease_to: tuple[str, RulesFor] | None = None,
                checks: CheckIntake | None = None) -> list[tuple[Delivery, bool]]:
        """As :meth:`SqliteOutbox.enqueue`: all of a batch or nothing, the check ledger's
        decisions first, repeats within ``repeat_window`` returned as stored, ``policy``
        decided against the outbox's history, ``lease_to`` leasing what is due to the sender.
        Intake transactions run one at a time (an advisory lock), so each sees every earlier
        one: the ledger and the mutes too."""
        with self._tx("enqueue") as db:
            db.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (_INTAKE_LOCK,))
            out = core.enqueue(db, deliveries, repeat_window=repeat_window, now=now,
                               policy=policy, lease_to=lease_to, checks=checks)
            if any(new and d.state is State.queued for d, new in out):
                _notify(db)
        self._alerts.update((d.id, d.alert) for d, new in out if new and not d.state.final)
        return out

    def history(self) -> History:
        """Read-only access to what was notified when, the mutes and the check ledger (for
        ``route --at``)."""
        return core.TableHistory(self)

    def one(self, query: str, params: Sequence[Any] = ()) -> Row | None:
        """One query in a read transaction of its own (:class:`~armor_notify.outbox_core.Reads`)."""
        with self._tx("read") as db:
            return db.one(query, params)

    def all(self, query: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._tx("read") as db:
            return db.all(query, params)

    # -- checks and mutes -------------------------------------------------------------------------
    def checks(self, *, failing: bool = False) -> list[CheckState]:
        """The check-state ledger, failing checks first."""
        with self._tx("read") as db:
            return ledger.listing(db, failing=failing)

    def next_overdue(self) -> float | None:
        with self._tx("read") as db:
            return ledger.next_overdue(db)

    def add_mute(self, scope: MuteScope, reason: str, author: str, *, now: float,
                 until: float) -> Mute:
        """Store a mute (under the intake lock: an intake sees it whole, or not yet)."""
        with self._tx("mute") as db:
            db.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (_INTAKE_LOCK,))
            return mutes.add(db, scope, reason, author, now, until)

    def mutes(self, now: float, *, ended: bool = False) -> list[Mute]:
        with self._tx("read") as db:
            return mutes.listing(db, now, ended=ended)

    def lift_mute(self, mute_id: int, now: float, zone: str = "UTC",
                  closed: Closed | None = None) -> tuple[Mute | None, list[str]]:
        """End a mute now (under the intake lock), releasing what it held; workers are told."""
        with self._tx("unmute") as db:
            db.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (_INTAKE_LOCK,))
            lifted = mutes.lift(db, mute_id, now, zone, closed)
            if lifted[1]:
                _notify(db)
            return lifted

    # -- claiming ---------------------------------------------------------------------------------
    def claim(self, owner: str, now: float, limit: int, rules_for: RulesFor,
              ids: Collection[str] | None = None, *,
              busy: Collection[str] = ()) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries to ``owner``, as :meth:`SqliteOutbox.claim` does
        (the same due, order, rate-limit and damaged-row rules), in one transaction.

        Why ``SELECT … FOR UPDATE SKIP LOCKED``: it locks the due rows this claim takes and
        passes over those another claim has locked at that moment, so workers claiming at once
        each get different deliveries without waiting on each other. One advisory lock per
        claim would serialise them instead: measured with 4 worker processes on 2 cores, about
        1,300 claims/s against 2,600 with SKIP LOCKED (one row per claim). PostgreSQL re-checks
        a row's conditions on its newest version before locking it, so a row another worker
        claimed (or finished) and committed meanwhile no longer matches: no delivery is leased
        twice while its lease holds.

        The rate keys of the destinations with deliveries waiting are locked first, one at a
        time in one order, so claims sharing a key take turns (the key's state is read and
        written inside the lock) and never deadlock.

        Digests whose window closed are turned into deliveries by one claim at a time (a
        try-lock: the others go on without waiting), so no alert goes into two digests.
        """
        with self._tx("claim", durable=False) as db:
            if ids is None:
                (mine,) = db.one("SELECT pg_try_advisory_xact_lock(hashtextextended(?, 0))",
                                 (_DIGEST_LOCK,)) or (False,)
                if mine:
                    core.close_due_digests(db, now, self._alerts)
            return core.claim(db, owner, now, limit, rules_for, ids, busy,
                              known=self._alerts, opens=self._opens, waits=self._waits)

    def complete(self, deliveries: Sequence[Delivery], owner: str, now: float) -> list[bool]:
        """Store the outcomes of attempts ``owner`` holds, in one transaction; for each, ``False``
        if its lease was lost (another worker took it over: its answer is the one kept)."""
        with self._tx("complete", durable=False) as db:
            done = core.complete(db, deliveries, owner, now)
        for d in deliveries:
            if d.state.final:
                self._alerts.pop(d.id, None)
        return done

    def release(self, deliveries: Sequence[Delivery], owner: str, now: float) -> list[bool]:
        """Give back leases ``owner`` holds on deliveries whose attempt never started: each is
        queued again, due ``now``, without spending an attempt (``False``: the lease was lost)."""
        core.requeue(deliveries, now)
        with self._tx("release", durable=False) as db:
            given_back = core.release(db, deliveries, owner, now)
            if any(given_back):
                _notify(db)
            return given_back

    def hold_key(self, key: str, until: float) -> None:
        """No notification under rate key ``key`` before ``until`` (a destination's Retry-After),
        for every worker; a claim cuts it to the destination's ``longest_hold``."""
        if math.isnan(until):
            return
        until = min(until, MAX_TIME)
        with self._tx("rate limit", durable=False) as db:
            db.execute("INSERT INTO rate_state(key, tat, hold) VALUES (?, 0, ?) ON CONFLICT "
                       "(key) DO UPDATE SET hold=GREATEST(rate_state.hold, excluded.hold)",
                       (key, until))

    # -- reading ----------------------------------------------------------------------------------
    def next_due(self, ids: Collection[str] | None = None) -> float | None:
        """When the next unfinished delivery falls due (or its lease runs out); ``None``: none.
        As :meth:`SqliteOutbox.next_due` (a closed rate key counts from when it opens; open
        digest windows are not waited for)."""
        with self._tx("read") as db:
            return core.next_due(db, ids, self._opens)

    def older_pending(self, ids: Collection[str]) -> list[str]:
        """Unfinished deliveries that must go before these (same destination and dedup key,
        accepted earlier)."""
        if not ids:
            return []
        with self._tx("read") as db:
            return core.older_pending(db, ids)

    def get(self, delivery_id: str) -> Delivery | None:
        """One delivery by id (a unique prefix of at least 6 characters is enough)."""
        with self._tx("read") as db:
            return core.get(db, delivery_id, self._alerts)

    def find(self, states: Iterable[str] = (), limit: int = 100,
             ids: Collection[str] | None = None) -> list[Delivery]:
        """Deliveries, newest first, optionally only in ``states`` or with these ``ids``."""
        with self._tx("read") as db:
            return core.find(db, states, limit, ids, self._alerts)

    @property
    def rate_waits(self) -> Mapping[str, int]:
        return dict(self._waits)

    def summary(self, now: float) -> core.Summary:
        """Deliveries by state, in all and in the last hour, the oldest waiting one, checks by
        state and missing, mutes in force and what they hold."""
        with self._tx("read") as db:
            return core.summary(db, now)

    # -- acting -----------------------------------------------------------------------------------
    def retry(self, ids: Collection[str] = (), *, include_failed: bool = False,
              now: float) -> int:
        """Make queued deliveries (all, or ``ids``) due now; with ``include_failed`` also requeue
        failed and dead ones with a fresh retry budget. Returns how many changed."""
        with self._tx("retry") as db:
            changed = core.retry(db, ids, include_failed=include_failed, now=now)
            if changed:
                _notify(db)
            return changed

    def purge(self, *, older_than: float, now: float) -> int:
        """Delete finished deliveries finalized more than ``older_than`` seconds ago."""
        with self._tx("purge", durable=False) as db:
            return core.purge(db, older_than=older_than, now=now)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> PostgresOutbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _number(stored: str | None) -> int:
    """A stored schema version: 0 for none yet, -1 for one that is not a number."""
    if stored is None:
        return 0
    try:
        return int(stored)
    except ValueError:
        return -1


CHANNEL = "armor_notify_work"
"""The ``LISTEN/NOTIFY`` channel on which intake tells idle workers that work was queued."""


def _notify(db: _Db) -> None:
    """Tell every listening worker, when this transaction commits, that work was queued (one
    notification per transaction: PostgreSQL folds identical ones)."""
    db.execute("SELECT pg_notify(?, '')", (CHANNEL,))


class _Listener:
    """One worker's ``LISTEN``: a thread with its own connection, calling ``wake`` for each
    notification, and once after each reconnection. It never raises: a broken connection is made
    again later, and until then the worker polls."""

    RECONNECT_FIRST, RECONNECT_MAX = 1.0, 30.0
    TICK = 0.5
    """How often the thread looks whether it was stopped while no notification comes."""

    def __init__(self, outbox: PostgresOutbox, wake: Callable[[], None]) -> None:
        self.url = outbox.url
        self.wake = wake
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name="armor-notify listen", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=self.TICK * 4)

    def run(self) -> None:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        delay = self.RECONNECT_FIRST
        first = True
        while not self.stopped.is_set():
            try:
                settings: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT,
                                            "application_name": "armor-notify listen"}
                settings.update(conninfo_to_dict(self.url))
                with psycopg.connect(autocommit=True, **settings) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if not first:
                        self.wake()  # work may have been queued while the connection was down
                    first, delay = False, self.RECONNECT_FIRST
                    while not self.stopped.is_set():
                        for _ in conn.notifies(timeout=self.TICK):
                            self.wake()
            except (psycopg.Error, OSError, ValueError):
                first = False
                self.stopped.wait(delay)
                delay = min(delay * 2, self.RECONNECT_MAX)
