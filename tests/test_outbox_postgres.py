"""What only the PostgreSQL outbox does: several real processes on one database, workers that die,
the schema made once by whoever starts first, and errors that never show a password.

The behaviour both backends share is in ``test_outbox_contract.py`` (run on PostgreSQL too).
The server comes from ``postgres.py`` (skipped without one, failed under ``CI=true``); each
test gets a fresh database. Worker processes are real ``python`` processes, each with its own
connection, started together so that their claims overlap.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import postgres
import pytest
from pytest_mock import MockerFixture

from armor_notify.alert import Alert
from armor_notify.delivery import Delivery, State
from armor_notify.destinations import RateLimit
from armor_notify.outbox import ClaimRules, OutboxError
from armor_notify.outbox_postgres import (
    _SCHEMA_LOCK,
    MIGRATIONS,
    SCHEMA,
    SCHEMA_VERSION,
    PostgresOutbox,
)

LONG = ClaimRules(lease=1000.0, max_attempts=3)


@pytest.fixture
def database() -> Iterator[postgres.Database]:
    found = postgres.fresh_database()
    yield found
    found.drop()


def delivery(n: int, destination: str = "d") -> Delivery:
    alert = Alert.model_validate(
        {"id": f"alert_{n}", "event_type": "schema_change", "title": f"Column removed {n}",
         "asset": {"id": f"a{n}", "name": f"db.s.t{n}"}}, context={"event_types": None})
    return Delivery(alert=alert, destination=destination, destination_type="scripted",
                    rule="All", dedup_key=f"key-{n}")


def admin(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the test database directly (as an operator would)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


# -- real processes -------------------------------------------------------------------------------

WORKER = r"""
import json, os, random, signal, sys, time
from armor_notify.delivery import Attempt, State
from armor_notify.destinations import RateLimit
from armor_notify.outbox import ClaimRules
from armor_notify.outbox_postgres import PostgresOutbox

job = json.loads(sys.argv[1])
box = PostgresOutbox.open(job["url"])
if job["do"] == "intake":  # made before the start, so that the transactions overlap
    from armor_notify.alert import Alert
    from armor_notify.delivery import Delivery
    batch = [Delivery(alert=Alert.model_validate(
        {"id": f"alert_{n}", "event_type": "schema_change", "title": "t",
         "asset": {"id": "a", "name": "db.s.t"}}, context={"event_types": None}),
        destination="d", destination_type="scripted", rule="All", dedup_key=f"k{n}")
        for n in range(job["alerts"])]
while time.time() < job.get("start", 0):  # every worker starts at once
    time.sleep(0.001)
out = {}
if job["do"] == "drain":  # claim in random batches until nothing is left; complete half
    rnd = random.Random(job["seed"])
    rules = ClaimRules(lease=1000.0, max_attempts=3)
    out["taken"] = []
    while True:
        now = time.time()
        got = box.claim(job["name"], now, rnd.randint(1, 5), lambda name: rules)
        if not got:
            break
        out["taken"] += [d.id for d in got]
        done = got[::2]
        for d in done:
            d.attempts.append(Attempt(d.attempt_count + 1, now, 0.0, "delivered", "ok"))
            d.finish(State.delivered, "ok")
        assert box.complete(done, job["name"], time.time()) == [True] * len(done)
elif job["do"] == "rate":  # claim one at a time, as fast as possible, under one shared key
    rules = ClaimRules(lease=1000.0, max_attempts=3, rate_key="k",
                       rate_limit=RateLimit(job["count"], 1.0, burst=1))
    out["at"] = []
    while time.time() < job["start"] + job["seconds"]:
        now = time.time()
        out["at"] += [now] * len(box.claim(job["name"], now, 1, lambda name: rules))
elif job["do"] == "die":  # claim, then die inside a transaction that holds the rate key
    from armor_notify.outbox_core import RateKeys as _LockedRateKeys
    rules = ClaimRules(lease=job["lease"], max_attempts=3, rate_key="k",
                       rate_limit=RateLimit(100, 1.0))
    out["taken"] = [d.id for d in box.claim("doomed", job["now"], 10, lambda name: rules)]
    print(json.dumps(out), flush=True)
    with box._tx("about to die") as db:
        _LockedRateKeys(db, job["now"]).lock(["k"])
        os.kill(os.getpid(), signal.SIGKILL)
elif job["do"] == "intake":  # the same alerts, from every process at once, in one transaction
    out["new"] = [d.id for d, new in box.enqueue(batch, repeat_window=600.0, now=100.0) if new]
print(json.dumps(out), flush=True)
"""


def start(job: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(job)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def results(workers: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    """Each worker's answer; fails with its stderr if it did not finish cleanly."""
    out = []
    for w in workers:
        stdout, stderr = w.communicate(timeout=60)
        assert w.returncode == 0, f"worker exited {w.returncode}: {stderr[-2000:]}"
        out.append(json.loads(stdout.splitlines()[-1]))
    return out


@pytest.mark.slow
def test_workers_in_several_processes_never_claim_one_delivery_twice(
        database: postgres.Database) -> None:
    with PostgresOutbox.open(database.url) as box:
        batch = [delivery(n, destination=f"d{n % 7}") for n in range(600)]
        box.enqueue(batch, repeat_window=0.0, now=time.time())
    at = time.time() + 1.5  # after every worker has imported and connected
    answers = results([start({"do": "drain", "url": database.url, "name": f"w{i}", "seed": i,
                              "start": at}) for i in range(4)])
    taken = [t for a in answers for t in a["taken"]]
    assert sorted(taken) == sorted(d.id for d in batch)  # each exactly once
    assert sum(1 for a in answers if a["taken"]) >= 2  # they did claim side by side
    with PostgresOutbox.open(database.url) as box:
        states = {d.state for d in box.find(limit=1000)}
        assert states <= {State.delivered, State.in_flight}
        assert box.next_due() is not None  # the in-flight half, due when their leases end


@pytest.mark.slow
def test_a_rate_key_holds_for_every_process_together(database: postgres.Database) -> None:
    count, seconds = 20, 1.5  # one every 0.05 s, whoever claims
    with PostgresOutbox.open(database.url) as box:
        box.enqueue([delivery(n) for n in range(200)], repeat_window=0.0, now=0.0)
    at = time.time() + 1.5
    answers = results([start({"do": "rate", "url": database.url, "name": f"w{i}",
                              "count": count, "seconds": seconds, "start": at})
                       for i in range(3)])
    sent = sorted(t for a in answers for t in a["at"])
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert len(sent) >= 10
    # (The outbox treats times within a microsecond as equal; floats near 1.7e9 are 0.2 µs apart.)
    assert min(gaps) >= 1.0 / count - 2e-6, f"two claims {min(gaps):.7f} s apart"
    assert sum(1 for a in answers if a["at"]) >= 2, answers  # one key shared by the processes


@pytest.mark.slow
def test_a_killed_worker_loses_its_leases_and_leaves_no_lock_behind(
        database: postgres.Database) -> None:
    with PostgresOutbox.open(database.url) as box:
        batch = [delivery(n) for n in range(3)]
        box.enqueue(batch, repeat_window=0.0, now=100.0)
        doomed = start({"do": "die", "url": database.url, "now": 100.0, "lease": 2.0})
        stdout, _ = doomed.communicate(timeout=60)
        assert doomed.returncode == -signal.SIGKILL
        assert sorted(json.loads(stdout.splitlines()[0])["taken"]) == sorted(
            d.id for d in batch)
        limited = ClaimRules(lease=5.0, max_attempts=3, rate_key="k",
                             rate_limit=RateLimit(100, 1.0))
        started = time.monotonic()
        assert box.claim("heir", 101.9, 10, lambda name: limited) == []  # leases still held
        assert time.monotonic() - started < 5  # the dead worker's lock went with it
        taken = box.claim("heir", 102.0, 10, lambda name: limited)
        assert sorted(d.id for d in taken) == sorted(d.id for d in batch)
        assert all([(a.number, a.status) for a in d.attempts] == [(1, "lost")] for d in taken)


@pytest.mark.slow
def test_the_same_alerts_from_several_processes_at_once_are_written_once(
        database: postgres.Database) -> None:
    PostgresOutbox.open(database.url).close()  # the schema exists (its race is tested below)
    at = time.time() + 1.5
    answers = results([start({"do": "intake", "url": database.url, "alerts": 200, "start": at})
                       for _ in range(4)])
    assert sum(len(a["new"]) for a in answers) == 200
    assert admin(database.url, "SELECT count(*) FROM armor_notify.deliveries") == [(200,)]


@pytest.mark.slow
def test_text_postgresql_cannot_hold_is_stored_replaced_not_refused(
        database: postgres.Database) -> None:
    from armor_notify.delivery import Attempt

    with PostgresOutbox.open(database.url) as box:
        box.enqueue([delivery(1, destination="d\x00x")], repeat_window=0.0, now=100.0)
        (d,) = box.claim("w", 100.0, 1, lambda name: LONG)
        reason = "500 \x00\udc80 from the receiver"  # NUL, and a lone surrogate (not UTF-8)
        d.attempts.append(Attempt(1, 100.0, 0.1, "failed", reason))
        d.finish(State.failed, reason)
        assert box.complete([d], "w", 101.0) == [True]
        (got,) = box.find()
        assert (got.destination, got.reason) == ("d\ufffdx", "500 \ufffd? from the receiver")


# -- the schema -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_outboxes_opened_at_once_on_an_empty_database_make_the_schema_once() -> None:
    errors: list[BaseException] = []

    def open_one(url: str, gate: threading.Barrier) -> None:
        try:
            gate.wait()
            PostgresOutbox.open(url).close()
        except BaseException as exc:
            errors.append(exc)

    for _ in range(3):
        database = postgres.fresh_database()
        try:
            gate = threading.Barrier(4, timeout=30)
            threads = [threading.Thread(target=open_one, args=(database.url, gate))
                       for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert errors == []
            assert admin(database.url, "SELECT key, value FROM armor_notify.meta") == [
                ("schema", str(SCHEMA_VERSION))]
        finally:
            database.drop()


@pytest.mark.slow
def test_an_outbox_that_waited_for_the_schema_lock_does_not_migrate_again(
        database: postgres.Database) -> None:
    # Another process makes the schema under the lock while this one opens: it sees no schema,
    # waits for the lock, and must then see the schema the other committed. Had it migrated
    # again, its CREATE INDEX would wait for the other's table lock below (as it waited for a
    # worker's writes when two workers started at once: a deadlock).
    import psycopg

    key = "SELECT pg_advisory_{}(hashtextextended(%s, 0))"
    maker = psycopg.connect(database.url, autocommit=True)
    boxes: list[PostgresOutbox] = []  # opening connects and checks the schema
    opened = threading.Thread(target=lambda: boxes.append(PostgresOutbox.open(database.url)),
                              daemon=True)
    try:
        maker.execute(f"SET search_path TO {SCHEMA}")
        maker.execute(key.format("lock"), (_SCHEMA_LOCK,))
        maker.execute("BEGIN")
        for step in range(1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[step]:
                maker.execute(statement)
        maker.execute("INSERT INTO meta VALUES ('schema', %s)", (str(SCHEMA_VERSION),))
        opened.start()
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype='advisory' AND NOT granted"
        deadline = time.monotonic() + 30
        while admin(database.url, waiting) != [(1,)]:  # it found no schema and waits
            assert time.monotonic() < deadline, "the outbox never waited for the schema lock"
            time.sleep(0.02)
        maker.execute("COMMIT")
        maker.execute("BEGIN")
        maker.execute("LOCK TABLE deliveries IN ROW EXCLUSIVE MODE")  # as a writer would
        maker.execute(key.format("unlock"), (_SCHEMA_LOCK,))
        opened.join(timeout=10)
        assert not opened.is_alive(), "it migrated again: its CREATE INDEX waits for the writer"
        assert len(boxes) == 1
    finally:
        maker.close()  # lets a stuck migration go on, so the database can be dropped
        if opened.is_alive():
            opened.join(timeout=30)
        for box in boxes:
            box.close()


@pytest.mark.slow
def test_the_schema_version_is_stored_and_reported(database: postgres.Database) -> None:
    with PostgresOutbox.open(database.url) as box:
        assert box.schema_version == SCHEMA_VERSION
    assert admin(database.url, "SELECT value FROM armor_notify.meta WHERE key='schema'") == [
        (str(SCHEMA_VERSION),)]


@pytest.mark.slow
def test_an_older_schema_is_brought_to_this_version_with_its_rows(
        database: postgres.Database) -> None:
    import psycopg

    from armor_notify.outbox_postgres import MIGRATIONS

    with psycopg.connect(database.url, autocommit=True) as conn:  # what version 1 made
        conn.execute("SET search_path TO armor_notify")
        for statement in MIGRATIONS[1]:
            conn.execute(statement)
        conn.execute("INSERT INTO meta VALUES ('schema', '1')")
    admin(database.url, "INSERT INTO armor_notify.deliveries (id, alert_id, alert_status, "
                        "destination, destination_type, rule, also_matched, dedup_key, alert, "
                        "state, run_at, created_at) VALUES ('d1', 'a', 'triggered', 'd', 's', "
                        "'All', '[]', 'k', %s, 'queued', 1, 1)",
          (json.dumps(delivery(1).alert.model_dump(mode="json")),))
    with PostgresOutbox.open(database.url) as box:
        assert box.schema_version == SCHEMA_VERSION == 5
        assert [d.id for d in box.find()] == ["d1"]
    indexes = {name for (name,) in admin(database.url, "SELECT indexname FROM pg_indexes WHERE "
                                                       "schemaname = 'armor_notify'")}
    assert {"deliveries_pending_order", "deliveries_intake_seq", "checks_overdue",
            "deliveries_mute"} <= indexes
    assert "deliveries_intake" not in indexes
    assert admin(database.url, "SELECT value FROM armor_notify.meta WHERE key='schema'") == [
        ("5",)]
    assert admin(database.url, "SELECT column_name FROM information_schema.columns WHERE "
                               "table_schema = 'armor_notify' AND table_name = 'deliveries' "
                               "AND column_name = 'message'") == [("message",)]


@pytest.mark.slow
def test_db_upgrade_brings_a_version_2_database_to_the_latest_with_its_rows(
        database: postgres.Database) -> None:
    # What armor-notify before the check ledger made: schema 2, a delivery held in it.
    import psycopg
    from conftest import run_cli

    from armor_notify.mutes import MuteScope
    from armor_notify.outbox_postgres import MIGRATIONS, shown_url

    with psycopg.connect(database.url, autocommit=True) as conn:
        conn.execute("SET search_path TO armor_notify")
        for step in (1, 2):
            for statement in MIGRATIONS[step]:
                conn.execute(statement)
        conn.execute("INSERT INTO meta VALUES ('schema', '2')")
    admin(database.url, "INSERT INTO armor_notify.deliveries (id, alert_id, alert_status, "
                        "destination, destination_type, rule, also_matched, dedup_key, alert, "
                        "state, run_at, created_at) VALUES ('d1', 'alert_1', 'triggered', 'd', "
                        "'scripted', 'All', '[]', 'key-1', %s, 'queued', 1, 1)",
          (json.dumps(delivery(1).alert.model_dump(mode="json")),))

    upgraded = run_cli("db", "upgrade", "--state", database.url, "--json")
    assert upgraded.returncode == 0, upgraded.stderr
    assert json.loads(upgraded.stdout) == {"outbox": shown_url(database.url),
                                           "schema_version": SCHEMA_VERSION}
    assert admin(database.url, "SELECT value FROM armor_notify.meta WHERE key='schema'") == [
        (str(SCHEMA_VERSION),)]
    tables = {name for (name,) in admin(database.url, "SELECT table_name FROM "
                                                      "information_schema.tables WHERE "
                                                      "table_schema = 'armor_notify'")}
    assert {"deliveries", "checks", "mutes", "meta", "rate_state"} <= tables
    assert admin(database.url, "SELECT mute_id FROM armor_notify.deliveries") == [(None,)]
    again = run_cli("db", "upgrade", "--state", database.url)
    assert again.returncode == 0 and again.stdout.strip().endswith(
        f"schema version {SCHEMA_VERSION}, up to date")

    with PostgresOutbox.open(database.url) as box:  # the old row, and mutes that hold rows
        (old,) = box.find()
        assert (old.id, old.state, old.mute_id) == ("d1", State.queued, None)
        mute = box.add_mute(MuteScope(assets=("db.s.*",)), "backfill", "ana", now=100.0,
                            until=1000.0)
        held = delivery(2)
        held.next_attempt_at, held.mute_id = 1000.0, mute.id
        box.enqueue([held], repeat_window=0.0, now=110.0)
        assert box.get(held.id).mute_id == mute.id  # type: ignore[union-attr]
        assert [(m.id, m.held) for m in box.mutes(120.0)] == [(mute.id, 1)]
        assert box.lift_mute(mute.id, 130.0)[1] == [held.id]
        assert box.checks() == [] and box.next_overdue() is None


@pytest.mark.slow
def test_a_schema_newer_than_this_code_is_refused(database: postgres.Database) -> None:
    PostgresOutbox.open(database.url).close()
    admin(database.url, "UPDATE armor_notify.meta SET value=%s WHERE key='schema'",
          (str(SCHEMA_VERSION + 1),))
    with pytest.raises(OutboxError, match=f"newer armor-notify \\(schema {SCHEMA_VERSION + 1};"):
        PostgresOutbox.open(database.url)


@pytest.mark.slow
def test_the_tables_live_in_their_own_schema(database: postgres.Database) -> None:
    admin(database.url, "CREATE TABLE public.deliveries (id int)")  # a user's own table
    with PostgresOutbox.open(database.url) as box:
        box.enqueue([delivery(1)], repeat_window=0.0, now=100.0)
        assert len(box.find()) == 1
    assert admin(database.url, "SELECT count(*) FROM public.deliveries") == [(0,)]


# -- errors ---------------------------------------------------------------------------------------


def with_password(url: str, password: str, port: int | None = None) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username or 'postgres'}:{quote(password, safe='')}@{parts.hostname}:" \
             f"{port or parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def assert_hidden(message: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in message, f"{secret!r} shown in {message!r}"


@pytest.mark.slow
def test_a_wrong_password_is_reported_without_showing_it(database: postgres.Database) -> None:
    wrong = "Wr0ng/p@ss word%" + "x" * 20
    url = with_password(database.url, wrong)
    try:
        PostgresOutbox.open(url).close()
    except OutboxError as exc:
        message = str(exc)
    else:
        pytest.skip("this server does not check passwords (trust authentication)")
    assert "password authentication failed" in message
    assert "check the user and password" in message
    assert message.startswith(f"postgresql://postgres@127.0.0.1:{urlsplit(url).port}/")
    assert_hidden(message, wrong, quote(wrong, safe=""), urlsplit(database.url).password or "?")


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize("url", [
    "postgresql://armor:S3cret-p%40ss@127.0.0.1:{port}/outbox",
    "postgres://127.0.0.1:{port}/outbox?user=armor&password=S3cret-p%40ss",
    "postgresql://armor:S3cret-p%40ss@127.0.0.1:notaport/outbox",
    "postgresql://armor:S3cret-p%40ss@127.0.0.1:{port}/outbox?sslmode=bogus",
    "postgresql://armor:S3cret-p%40ss@[::1/outbox?host=127.0.0.1",  # urlsplit refuses it
])
def test_an_unusable_url_is_an_outbox_error_without_the_password(url: str) -> None:
    with pytest.raises(OutboxError) as caught:
        PostgresOutbox.open(url.format(port=closed_port()))
    message = str(caught.value)
    assert "127.0.0.1" in message or "(connect): " in message
    assert_hidden(message, "S3cret-p%40ss", "S3cret-p@ss", "S3cret")


@pytest.mark.slow
def test_a_lost_connection_is_reported_then_the_next_call_reconnects(
        database: postgres.Database) -> None:
    with PostgresOutbox.open(database.url) as box:
        box.enqueue([delivery(1)], repeat_window=0.0, now=100.0)
        admin(database.url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                            "datname=current_database() AND pid<>pg_backend_pid()")
        with pytest.raises(OutboxError, match=r"\(read\): ") as caught:
            box.find()
        assert_hidden(str(caught.value), urlsplit(database.url).password or "?")
        assert [d.alert.id for d in box.find()] == ["alert_1"]  # a new connection


def test_without_psycopg_the_error_names_the_extra(mocker: MockerFixture) -> None:
    mocker.patch.dict(sys.modules, {"psycopg": None})
    with pytest.raises(OutboxError, match=r"pip install 'armor-notify\[postgresql\]'"):
        PostgresOutbox.open("postgresql://armor@127.0.0.1:1/outbox")


@pytest.mark.slow
def test_the_module_imports_without_psycopg() -> None:
    code = ("import sys; sys.modules['psycopg'] = None; "
            "import armor_notify.outbox_postgres as m; print(m.SCHEMA)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False, env={**os.environ})
    assert (done.returncode, done.stdout.strip()) == (0, "armor_notify"), done.stderr
