"""``armor-notify`` on one PostgreSQL outbox, as a platform team runs it: worker processes woken
by ``LISTEN/NOTIFY``, a producer on the command line, and a database that goes away and comes
back under a running worker (issue 15). The server comes from ``postgres.py``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import postgres
import pytest
import yaml
from conftest import SITE, run_cli, wait_for
from fake_pagerduty import FakePagerDuty
from test_outbox_postgres import admin, delivery

from armor_notify.outbox_postgres import PostgresOutbox

pytestmark = pytest.mark.slow  # a real server, real processes

PD_KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def database() -> Iterator[postgres.Database]:
    found = postgres.fresh_database()
    yield found
    found.drop()


# -- LISTEN/NOTIFY --------------------------------------------------------------------------------


def test_a_listener_is_woken_by_another_connections_intake_and_retry(
        database: postgres.Database) -> None:
    woken = threading.Event()
    with PostgresOutbox.open(database.url) as worker, PostgresOutbox.open(database.url) as other:
        stop = worker.listen(woken.set)
        try:
            assert wait_for(lambda: admin(database.url, "SELECT count(*) FROM pg_stat_activity "
                                                        "WHERE application_name = "
                                                        "'armor-notify listen'")[0][0] == 1, 5)
            assert not woken.wait(0.3)  # nothing queued: no wake-up
            other.enqueue([delivery(1)], repeat_window=0.0, now=100.0)
            assert woken.wait(3)
            woken.clear()
            other.retry(now=200.0)
            assert woken.wait(3)
        finally:
            began = time.monotonic()
            stop()
        assert time.monotonic() - began < 2.5
    assert wait_for(lambda: admin(database.url, "SELECT count(*) FROM pg_stat_activity WHERE "
                                                "application_name = 'armor-notify listen'")[0][0]
                    == 0, 5)


def test_a_listener_whose_connection_is_cut_comes_back_and_wakes_once(
        database: postgres.Database) -> None:
    wakes: list[float] = []
    with PostgresOutbox.open(database.url) as worker, PostgresOutbox.open(database.url) as other:
        stop = worker.listen(lambda: wakes.append(time.monotonic()))
        try:
            listening = ("SELECT count(*) FROM pg_stat_activity "
                         "WHERE application_name = 'armor-notify listen'")
            assert wait_for(lambda: admin(database.url, listening)[0][0] == 1, 5)
            admin(database.url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                                "application_name = 'armor-notify listen'")
            # Back within its first reconnection delay (1 s), with one wake-up for what may
            # have been queued meanwhile.
            assert wait_for(lambda: len(wakes) == 1, 5)
            assert wait_for(lambda: admin(database.url, listening)[0][0] == 1, 5)
            other.enqueue([delivery(2)], repeat_window=0.0, now=100.0)
            assert wait_for(lambda: len(wakes) == 2, 3)
        finally:
            stop()


# -- workers on the command line ------------------------------------------------------------------


def write_config(tmp_path: Path, pd_url: str, state_url: str | None = None) -> Path:
    config: dict[str, Any] = {
        "version": 1,
        "destinations": {"pd": {"type": "pagerduty", "integration_key": PD_KEY, "url": pd_url,
                                "timeout": 2, "retry_backoff": 0.1, "rate_limit": "none",
                                "max_attempts": 50}},
        "rules": [{"name": "Everything", "event": "schema_change", "destinations": ["pd"]}],
    }
    if state_url:
        config["state"] = {"url": "${ARMOR_TEST_PG_URL}"}
    path = tmp_path / "armor-notify.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_alerts(tmp_path: Path, start: int, count: int) -> Path:
    alerts = [{"id": f"alert_{i:04d}", "event_type": "schema_change", "severity": "critical",
               "title": f"Column removed {i:04d}",
               "asset": {"id": f"asset_{i:04d}", "name": f"db.public.t{i:04d}"}}
              for i in range(start, start + count)]
    path = tmp_path / f"alerts-{start}.json"
    path.write_text(json.dumps(alerts))
    return path


def start_worker(config: Path, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("ARMOR_NOTIFY_")}
    full.update(env, PYTHONPATH=str(SITE))
    full = {k: v for k, v in full.items() if v}
    exe = Path(sys.executable).with_name("armor-notify")
    return subprocess.Popen([str(exe), "worker", "--config", str(config), *args], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(worker: subprocess.Popen[str]) -> tuple[str, str]:
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=30)
    return out, err


def dedup_keys(pd: FakePagerDuty) -> list[str]:
    return [event["dedup_key"] for event in pd.events]


def test_two_workers_woken_at_once_deliver_a_producers_alerts_exactly_once(
        tmp_path: Path, database: postgres.Database) -> None:
    with FakePagerDuty(latency=0.02) as pd:
        config = write_config(tmp_path, pd.url, state_url=database.url)
        # The config's state.url names the database (the test runner's default state
        # directory, an environment variable, would come first: it is unset here).
        env = {"ARMOR_TEST_PG_URL": database.url, "ARMOR_NOTIFY_STATE_DIR": ""}
        # A minute between polls: only a wake-up can start the work within the test's time.
        workers = [start_worker(config, "--poll", "60s", env=env) for _ in range(2)]
        try:
            assert wait_for(lambda: admin(database.url, "SELECT count(*) FROM pg_stat_activity "
                                                        "WHERE application_name = "
                                                        "'armor-notify listen'")[0][0] == 2, 20)
            began = time.monotonic()
            sent = run_cli("send", str(write_alerts(tmp_path, 0, 40)), "--config", str(config),
                           "--wait", "0", env=env)
            assert sent.returncode == 3, sent.stderr  # accepted and queued, not sent
            assert wait_for(lambda: len(pd.events) >= 40, 20), len(pd.events)
            took = time.monotonic() - began
            # Stopped only once every outcome is recorded (a worker stopped between PagerDuty's
            # answer and its record would rightly send that one again later).
            assert wait_for(lambda: admin(database.url, "SELECT count(*) FROM "
                                                        "armor_notify.deliveries WHERE state = "
                                                        "'delivered'")[0][0] == 40, 10)
        finally:
            outputs = [stop(w) for w in workers]
    assert took < 15  # far from the 60 s poll
    assert sorted(dedup_keys(pd)) == sorted(set(dedup_keys(pd)))  # none twice
    assert len(set(dedup_keys(pd))) == 40
    delivered = [line for out, _ in outputs for line in out.splitlines()
                 if line.startswith("delivered")]
    assert len(delivered) == 40
    listed = run_cli("outbox", "list", "--state", database.url, "--json", "--limit", "100")
    assert listed.returncode == 0, listed.stderr
    states = {d["state"] for d in json.loads(listed.stdout)["deliveries"]}
    assert states == {"delivered"}
    assert (urlsplit_password(database.url) not in listed.stdout + listed.stderr)


def urlsplit_password(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).password or "?"


def test_a_worker_outlives_its_database_going_away_and_loses_nothing(
        tmp_path: Path, database: postgres.Database) -> None:
    with FakePagerDuty(latency=0.01) as pd:
        config = write_config(tmp_path, pd.url)
        worker = start_worker(config, "--poll", "0.2s", "--state", database.url, env={})
        try:
            first = run_cli("send", str(write_alerts(tmp_path, 0, 10)), "--config", str(config),
                            "--state", database.url, "--wait", "0")
            assert first.returncode == 3, first.stderr
            assert wait_for(lambda: len(pd.events) >= 10, 20)
            postgres.server().restart(down_for=2.0)  # every connection breaks; then it is back
            assert worker.poll() is None  # the worker is still running
            second = run_cli("send", str(write_alerts(tmp_path, 10, 10)), "--config",
                             str(config), "--state", database.url, "--wait", "0")
            assert second.returncode == 3, second.stderr
            assert wait_for(lambda: len(set(dedup_keys(pd))) >= 20, 40), len(pd.events)
            assert worker.poll() is None
        finally:
            _, err = stop(worker)
    assert len(set(dedup_keys(pd))) == 20  # every accepted alert arrived
    assert "trying again in 1s (what was accepted stays in the outbox)" in err
    assert urlsplit_password(database.url) not in err
    assert "Traceback" not in err
