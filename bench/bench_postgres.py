"""Figure 8: one PostgreSQL outbox shared by worker processes (issue 15's targets).

A real PostgreSQL server (found or started as the tests do: ``tests/postgres.py``), a fresh
database per scenario, and ``armor-notify worker`` processes as an operator runs them:

* **scale-out**: a backlog of ``--backlog`` (2,000) deliveries to one PagerDuty receiver that
  takes 50 ms to answer (``loopback.py``), committed in one intake while 1 worker, then 4
  workers (each ``--threads 8``), are running and idle, and timed from that commit until the
  receiver has every one; target: 4 workers at least 3.2x the rate of 1, and 0 duplicate posts
  counted at the receiver;
* **killed workers**: 4 workers drain the same backlog while two of them are killed with SIGKILL
  at random moments; every delivery must arrive, and the duplicates (attempts whose lease had
  to expire before another worker sent them again) are reported;
* **intake**: alerts accepted a second in batches of 100 (``Notifier.enqueue``, durable), against
  the SQLite outbox in the same run; target at least 2,000 a second;
* **claim cost as the table grows**: the time to claim one due delivery with 0 and with 100,000
  finished rows in the table (what retention keeps from growing further); target: flat, at most
  1.5x.

    .venv/bin/python bench/bench_postgres.py [--backlog 2000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, Row, alert_data, emit, pagerduty_config
from loopback import Receiver, start

sys.path.insert(0, str(ROOT / "tests"))

LATENCY = 0.05
THREADS = 8
BATCH = 100


def server_or_reason() -> tuple[Any, str]:
    """``tests/postgres.py``'s module and its server, or why there is none."""
    import postgres

    try:
        postgres.server()
    except BaseException as exc:  # pytest's skip/fail outcomes are BaseExceptions
        return None, str(exc) or type(exc).__name__
    return postgres, ""


class Fleet:
    """Worker processes on one database, and the config they share."""

    def __init__(self, tmp: Path, rx: Receiver, url: str) -> None:
        config = pagerduty_config(rx.url)
        config["destinations"]["pd-0"].update(timeout=2, retry_backoff=0.1, max_attempts=50)
        config["state"] = {"url": "${BENCH_PG_URL}"}
        self.config = tmp / "config.yaml"
        self.config.write_text(json.dumps(config))  # JSON is YAML
        self.url = url
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ARMOR_NOTIFY_")}
        self.env["BENCH_PG_URL"] = url
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.exe = str(Path(sys.executable).with_name("armor-notify"))

    def queue(self, count: int, offset: int) -> None:
        """``count`` deliveries accepted and queued in one intake transaction, none sent: when
        this returns they are committed, and the listening workers have been told."""
        from armor_notify.api import Notifier
        from armor_notify.outbox_postgres import PostgresOutbox

        config = json.loads(self.config.read_text())
        config.pop("state")
        with Notifier.from_dict(config, outbox=PostgresOutbox.open(self.url)) as notifier:
            alerts = notifier.parse_alerts([alert_data(offset + i) for i in range(count)])
            notifier.enqueue(alerts)

    def listening(self) -> int:
        """How many workers are connected and listening for new work."""
        import psycopg

        with psycopg.connect(self.url) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                               "'armor-notify listen' AND datname = current_database()"
                               ).fetchone()
        return int(row[0]) if row else 0

    def worker(self) -> subprocess.Popen[str]:
        return subprocess.Popen([self.exe, "worker", "--config", str(self.config), "--poll",
                                 "0.2s", "--threads", str(THREADS)], env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def left(self) -> int:
        import psycopg

        with psycopg.connect(self.url) as conn:
            row = conn.execute("SELECT count(*) FROM armor_notify.deliveries WHERE state NOT IN "
                               "('delivered', 'failed', 'dead', 'suppressed')").fetchone()
        return int(row[0]) if row else 0


def drain(postgres: Any, rx: Receiver, tmp: Path, backlog: int, workers: int,
          kill: int = 0) -> tuple[float, int, int]:
    """Seconds to drain ``backlog`` with ``workers`` processes (killing ``kill`` of them at
    random moments), the posts the receiver accepted, and what is left undelivered."""
    database = postgres.fresh_database()
    try:
        fleet = Fleet(tmp, rx, database.url)
        procs = [fleet.worker() for _ in range(workers)]  # started and idle, as in production
        up_by = time.perf_counter() + 60
        while fleet.listening() < workers and time.perf_counter() < up_by:
            time.sleep(0.05)
        before = rx.stats()["ok"]
        fleet.queue(backlog, offset=random.randrange(10**8))
        began = time.perf_counter()  # the backlog is committed and the workers woken
        victims = random.sample(procs, kill)
        # Killed while they work: each when a random share (10-60 %) of the backlog has arrived.
        kill_at = {id(p): int(backlog * random.uniform(0.1, 0.6)) for p in victims}
        deadline = began + 300
        while time.perf_counter() < deadline:
            arrived = rx.stats()["ok"] - before
            for p in victims:
                if p.poll() is None and arrived >= kill_at[id(p)]:
                    p.send_signal(signal.SIGKILL)
            if rx.stats()["ok"] - before >= backlog and fleet.left() == 0:
                break
            time.sleep(0.05)
        took = time.perf_counter() - began
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            p.communicate(timeout=30)
        return took, rx.stats()["ok"] - before, fleet.left()
    finally:
        database.drop()


def intake_rate(postgres: Any, count: int) -> tuple[float, float]:
    """Alerts a second into PostgreSQL and into a SQLite file, in batches of ``BATCH``."""
    from armor_notify.api import Notifier
    from armor_notify.outbox import SqliteOutbox
    from armor_notify.outbox_postgres import PostgresOutbox

    config = pagerduty_config("http://127.0.0.1:9")
    rates = []
    database = postgres.fresh_database()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for box in (PostgresOutbox.open(database.url), SqliteOutbox.open(tmp)):
                with Notifier.from_dict(config, outbox=box) as notifier:
                    alerts = notifier.parse_alerts([alert_data(i) for i in range(count)])
                    began = time.perf_counter()
                    for i in range(0, count, BATCH):
                        notifier.enqueue(alerts[i:i + BATCH])
                    rates.append(count / (time.perf_counter() - began))
    finally:
        database.drop()
    return rates[0], rates[1]


def claim_cost(postgres: Any, finished: int, rounds: int = 400) -> tuple[float, float]:
    """Median seconds to claim (and complete) one due delivery in a database with no finished
    rows and in one with ``finished`` of them, measured alternately, round by round, so that the
    machine's drift falls on both alike."""
    import psycopg

    from armor_notify.delivery import Attempt, Delivery, State
    from armor_notify.outbox import ClaimRules
    from armor_notify.outbox_postgres import PostgresOutbox
    from armor_notify.testing import make_alert

    rules = ClaimRules(lease=60.0, max_attempts=3)
    databases = [postgres.fresh_database(), postgres.fresh_database()]
    times: list[list[float]] = [[], []]
    try:
        boxes = [PostgresOutbox.open(d.url) for d in databases]
        with psycopg.connect(databases[1].url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO armor_notify.deliveries (id, alert_id, alert_status, destination, "
                "destination_type, rule, also_matched, dedup_key, alert, state, run_at, "
                "created_at, finalized_at) SELECT 'old-' || n, 'a' || n, 'triggered', 'pd-0', "
                "'pagerduty', 'r', '[]', 'k' || n, '{}', 'delivered', 1, 1, 1 + n FROM "
                "generate_series(1, %s) AS n", (finished,))
            conn.execute("ANALYZE armor_notify.deliveries")
        for i in range(rounds):
            for which in (i % 2, 1 - i % 2):
                box, now = boxes[which], 1000.0 + i
                d = Delivery(alert=make_alert(), destination="pd-0",
                             destination_type="pagerduty", rule="r", dedup_key=f"n{i}")
                box.enqueue([d], repeat_window=0.0, now=now)
                began = time.perf_counter()
                [claimed] = box.claim("bench", now, 1, lambda _: rules)
                claimed.attempts.append(Attempt(claimed.attempt_count + 1, now, 0.01,
                                                "delivered", ""))
                claimed.finish(State.delivered, "")
                box.complete([claimed], "bench", now)
                times[which].append(time.perf_counter() - began)
        for box in boxes:
            box.close()
    finally:
        for database in databases:
            database.drop()
    return statistics.median(times[0]), statistics.median(times[1])


def run(backlog: int, intake: int, finished: int) -> list[Row]:
    postgres, reason = server_or_reason()
    if postgres is None:
        return [Row("8 postgresql", "skipped: no PostgreSQL server", 0, "", note=reason)]
    rows = []
    with start(latency=LATENCY) as rx, tempfile.TemporaryDirectory() as tmp:
        one, ok_one, left_one = drain(postgres, rx, Path(tmp), backlog, 1)
        four, ok_four, left_four = drain(postgres, rx, Path(tmp), backlog, 4)
        killed, ok_killed, left_killed = drain(postgres, rx, Path(tmp), backlog, 4, kill=2)
    rate_one, rate_four = backlog / one, backlog / four
    duplicates = ok_four - backlog
    rows += [
        Row("8 postgresql", f"1 worker drains {backlog:,}", rate_one, "/s", 1.0, "itself",
            note=f"receiver answers in {LATENCY * 1000:.0f} ms; --threads {THREADS}; "
                 f"{ok_one - backlog} duplicates, {left_one} left"),
        Row("8 postgresql", f"4 workers drain {backlog:,}", rate_four, "/s",
            rate_four / rate_one, "1 worker", ">= 3.2x, 0 duplicates",
            rate_four / rate_one >= 3.2 and duplicates == 0 and left_four == 0,
            note=f"{duplicates} duplicate posts, {left_four} left"),
        Row("8 postgresql", "4 workers, 2 killed (SIGKILL)", backlog / killed, "/s",
            (backlog / killed) / rate_one, "1 worker", "every delivery arrives",
            left_killed == 0 and ok_killed >= backlog,
            note=f"{ok_killed - backlog} duplicates (attempts whose lease expired), "
                 f"{left_killed} left; {killed:.1f} s"),
    ]
    pg_rate, sqlite_rate = intake_rate(postgres, intake)
    rows.append(Row("8 postgresql", f"intake, batches of {BATCH}", pg_rate, "alerts/s",
                    pg_rate / sqlite_rate, "SQLite file", ">= 2,000/s", pg_rate >= 2000,
                    note=f"SQLite: {sqlite_rate:,.0f}/s; durable commits on both"))
    empty, full = claim_cost(postgres, finished)
    rows.append(Row("8 postgresql", f"claim cost at {finished:,} finished rows", full * 1000,
                    "ms", full / empty, "empty table", "<= 1.5x (flat)", full / empty <= 1.5,
                    note=f"{empty * 1000:.2f} ms with none; one claim and its completion"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=2000)
    parser.add_argument("--intake", type=int, default=5000)
    parser.add_argument("--finished", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, a fast look")
    parser.add_argument("--json", action="store_true", help="rows as JSON lines (for run_all)")
    args = parser.parse_args()
    if args.quick:
        args.backlog, args.intake, args.finished = 400, 1000, 10_000
    emit(run(args.backlog, args.intake, args.finished), args.json)


if __name__ == "__main__":
    main()
