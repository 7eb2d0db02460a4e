"""Never lose an alert: real processes, killed with SIGKILL, sharing one outbox file, delivering
to loopback PagerDuty and Slack receivers."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import SITE, run_cli
from fake_pagerduty import FakePagerDuty, FakeResponse
from fake_slack import FakeSlack

pytestmark = pytest.mark.slow  # these tests start processes

PD_KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def receivers() -> Iterator[tuple[FakePagerDuty, FakeSlack]]:
    with FakePagerDuty(latency=0.05) as pd, FakeSlack(latency=0.02) as slack:
        yield pd, slack


def write_config(tmp_path: Path, pd_url: str, slack_url: str, *, timeout: float = 1,
                 **pd_options: Any) -> Path:
    config = {
        "version": 1,
        "destinations": {
            # Attempts lost to killed workers count, so allow plenty.
            "pd": {"type": "pagerduty", "integration_key": PD_KEY, "url": pd_url,
                   "timeout": timeout, "retry_backoff": 0.05, "rate_limit": "none",
                   "max_attempts": 20, **pd_options},
            "slack": {"type": "slack", "webhook_url": slack_url, "timeout": timeout,
                      "retry_backoff": 0.05, "rate_limit": "none", "max_attempts": 20},
        },
        "rules": [{"name": "Everything", "event": "schema_change", "destinations": ["pd", "slack"]}],
    }
    path = tmp_path / "armor-notify.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_alerts(tmp_path: Path, count: int) -> Path:
    alerts = [{"id": f"alert_{i:03d}", "event_type": "schema_change", "severity": "critical",
               "title": f"Column removed number {i:03d}",
               "asset": {"id": f"asset_{i:03d}", "name": f"db.public.t{i:03d}"}}
              for i in range(count)]
    path = tmp_path / "alerts.json"
    path.write_text(json.dumps(alerts))
    return path


def cli_env(state: Path) -> dict[str, str]:
    return {"ARMOR_NOTIFY_STATE_DIR": str(state)}


def start_worker(config: Path, state: Path, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARMOR_NOTIFY_")}
    env.update(cli_env(state), PYTHONPATH=str(SITE))
    exe = Path(sys.executable).with_name("armor-notify")
    return subprocess.Popen([str(exe), "worker", "--config", str(config), "--poll", "0.05",
                             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def outbox(state: Path) -> list[dict[str, Any]]:
    res = run_cli("outbox", "list", "--json", "--limit", "1000", env=cli_env(state))
    assert res.returncode == 0, res.stderr
    deliveries: list[dict[str, Any]] = json.loads(res.stdout)["deliveries"]
    return deliveries


def integrity(state: Path) -> str:
    db = sqlite3.connect(state / "outbox.sqlite3")
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def slack_titles(slack: FakeSlack) -> Counter[str]:
    titles: Counter[str] = Counter()
    for request in slack.requests:
        text = request.body.decode()
        for i in range(1000):
            if f"number {i:03d}" in text:
                titles[f"alert_{i:03d}"] += 1
    return titles


def test_killed_workers_lose_nothing_and_pagerduty_repeats_share_a_dedup_key(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    count = 16
    # Slow receivers keep requests in flight, so each kill lands in the middle of deliveries.
    with FakePagerDuty(latency=0.3) as pd, FakeSlack(latency=0.3) as slack:
        config = write_config(tmp_path, pd.url, slack.url)
        res = run_cli("send", str(write_alerts(tmp_path, count)), "--config", str(config),
                      "--wait", "0", env=cli_env(state))
        assert res.returncode == 3, res.stderr
        assert f"{2 * count} deliveries are still queued" in res.stdout
        assert pd.requests == [] and slack.requests == []

        # Kill at different moments: right after requests arrive, while they wait for their
        # answers, and as the answers come back and are being recorded.
        for delay in (0.0, 0.1, 0.2, 0.25, 0.3, 0.35, 0.5):
            seen = len(pd.requests) + len(slack.requests)
            worker = start_worker(config, state)
            deadline = time.monotonic() + 10
            while len(pd.requests) + len(slack.requests) <= seen and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(delay)
            worker.send_signal(signal.SIGKILL)
            worker.communicate(timeout=10)
            assert integrity(state) == "ok"

        final = run_cli("worker", "--config", str(config), "--once", "--poll", "0.05",
                        env=cli_env(state), timeout=60)
        assert final.returncode == 0, final.stdout + final.stderr

    deliveries = outbox(state)
    assert len(deliveries) == 2 * count
    assert {d["state"] for d in deliveries} == {"delivered"}
    lost = sum(1 for d in deliveries for h in d["history"] if h["status"] == "lost")
    assert lost > 0  # the kills really interrupted deliveries
    keys_per_alert: dict[str, set[str]] = defaultdict(set)
    # A worker killed in the middle of writing a request leaves a truncated body behind.
    for request in (r for r in pd.requests if r.body is not None):
        assert request.schema_errors == []
        keys_per_alert[request.body["payload"]["summary"].split(" — ")[0]].add(
            request.body["dedup_key"])
    assert len(keys_per_alert) == count  # every alert reached PagerDuty
    assert all(len(keys) == 1 for keys in keys_per_alert.values())  # repeats share their key
    assert set(slack_titles(slack)) == {f"alert_{i:03d}" for i in range(count)}
    assert integrity(state) == "ok"


def test_receivers_down_then_back_everything_arrives(
        tmp_path: Path, receivers: tuple[FakePagerDuty, FakeSlack]) -> None:
    pd, slack = receivers
    state = tmp_path / "state"
    # First PagerDuty answers 503 and Slack's port refuses connections.
    pd.script(*[FakeResponse.server_error(503)] * 50)
    config = write_config(tmp_path, pd.url, "http://127.0.0.1:9/services/T/B/x",
                          max_attempts=50, retry_deadline=600)
    alerts = write_alerts(tmp_path, 3)
    res = run_cli("send", str(alerts), "--config", str(config), "--wait", "0.5",
                  env=cli_env(state))
    assert res.returncode == 3, res.stdout + res.stderr
    queued = outbox(state)
    assert {d["state"] for d in queued} >= {"queued"}
    pd_attempts = [h for d in queued if d["destination"] == "pd" for h in d["history"]]
    assert pd_attempts and all("503" in h["reason"] for h in pd_attempts)
    # Both come back: PagerDuty stops failing, Slack moves to a live receiver.
    pd.script()
    with pd._lock:
        pd._script.clear()
    write_config(tmp_path, pd.url, slack.url, max_attempts=50, retry_deadline=600)
    retried = run_cli("outbox", "retry", env=cli_env(state))
    assert retried.returncode == 0 and "due now" in retried.stdout
    final = run_cli("worker", "--config", str(config), "--once", env=cli_env(state), timeout=60)
    assert final.returncode == 0, final.stdout + final.stderr
    assert {d["state"] for d in outbox(state)} == {"delivered"}
    assert set(slack_titles(slack)) == {"alert_000", "alert_001", "alert_002"}
    for d in outbox(state):
        starts = [datetime.fromisoformat(h["started_at"]) for h in d["history"]]
        assert starts == sorted(starts)


def test_a_permanent_error_goes_to_failed_at_once(
        tmp_path: Path, receivers: tuple[FakePagerDuty, FakeSlack]) -> None:
    pd, slack = receivers
    state = tmp_path / "state"
    pd.revoked_keys.add(PD_KEY)
    config = write_config(tmp_path, pd.url, slack.url)
    res = run_cli("send", str(write_alerts(tmp_path, 1)), "--config", str(config),
                  env=cli_env(state))
    assert res.returncode == 1
    states = {d["destination"]: (d["state"], d["attempts"]) for d in outbox(state)}
    assert states == {"pd": ("failed", 1), "slack": ("delivered", 1)}
    shown = run_cli("outbox", "list", "--state", "failed", env=cli_env(state))
    assert "failed" in shown.stdout and PD_KEY not in shown.stdout


def test_two_workers_never_send_one_delivery_twice(
        tmp_path: Path, receivers: tuple[FakePagerDuty, FakeSlack]) -> None:
    pd, slack = receivers
    state = tmp_path / "state"
    # A timeout far above the receivers' answer time: an attempt that timed out on a busy machine
    # is sent again (at least once), and this test counts exactly once.
    config = write_config(tmp_path, pd.url, slack.url, timeout=10)
    count = 30
    assert run_cli("send", str(write_alerts(tmp_path, count)), "--config", str(config),
                   "--wait", "0", env=cli_env(state)).returncode == 3
    workers = [start_worker(config, state, "--once", "--json") for _ in range(2)]
    outputs = [w.communicate(timeout=60) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    finished = [json.loads(line) for out, _ in outputs for line in out.splitlines()]
    assert len(finished) == 2 * count
    assert len({d["id"] for d in finished}) == 2 * count  # each finished by exactly one worker
    assert all(count_ == 1 for count_ in Counter(
        r.body["dedup_key"] for r in pd.requests).values())
    assert len(pd.requests) == count and len(slack.requests) == count


def test_rate_limits_hold_across_processes(
        tmp_path: Path, receivers: tuple[FakePagerDuty, FakeSlack]) -> None:
    pd, slack = receivers
    state = tmp_path / "state"
    config = write_config(tmp_path, pd.url, slack.url, rate_limit="5/second", rate_burst=1)
    count = 8
    assert run_cli("send", str(write_alerts(tmp_path, count)), "--config", str(config),
                   "--wait", "0", env=cli_env(state)).returncode == 3
    workers = [start_worker(config, state, "--once") for _ in range(2)]
    for w in workers:
        w.communicate(timeout=60)
    starts = sorted(datetime.fromisoformat(h["started_at"]).timestamp()
                    for d in outbox(state) if d["destination"] == "pd" for h in d["history"])
    assert len(starts) == count
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.2 - 0.002  # 5/second: one every 0.2 s, whichever process sends


def test_send_wait_zero_then_worker_and_outbox_commands(
        tmp_path: Path, receivers: tuple[FakePagerDuty, FakeSlack]) -> None:
    pd, slack = receivers
    state = tmp_path / "state"
    config = write_config(tmp_path, pd.url, slack.url)
    alerts = write_alerts(tmp_path, 1)
    assert run_cli("send", str(alerts), "--config", str(config), "--wait", "0",
                   env=cli_env(state)).returncode == 3
    listed = run_cli("outbox", "list", env=cli_env(state))
    assert listed.stdout.count("queued") == 2
    ran = run_cli("worker", "--config", str(config), "--once", env=cli_env(state))
    assert ran.returncode == 0
    assert ran.stdout.count("delivered") == 2
    first = outbox(state)[0]
    shown = run_cli("outbox", "show", first["id"][:10], env=cli_env(state))
    assert shown.returncode == 0 and "attempt 1:" in shown.stdout and PD_KEY not in shown.stdout
    again = run_cli("send", str(alerts), "--config", str(config), env=cli_env(state))
    assert again.returncode == 0 and "already accepted" in again.stdout
    assert len(pd.requests) == 1  # the repeat was not sent
    purged = run_cli("outbox", "purge", "--older-than", "0", "--json", env=cli_env(state))
    assert json.loads(purged.stdout) == {"purged": 2}
    assert "the outbox is empty" in run_cli("outbox", "list", env=cli_env(state)).stdout


def test_corrupt_and_locked_state_files_get_clear_errors(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "outbox.sqlite3").write_bytes(b"garbage" * 1000)
    res = run_cli("outbox", "list", env=cli_env(state))
    assert res.returncode == 2
    assert "damaged or is not an armor-notify outbox" in res.stderr
    assert "Traceback" not in res.stderr

    other = tmp_path / "other"
    assert run_cli("outbox", "list", env=cli_env(other)).returncode == 0
    holder = sqlite3.connect(other / "outbox.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        res = run_cli("outbox", "retry", env=cli_env(other))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert res.returncode == 2
    assert "locked by another process" in res.stderr and "Traceback" not in res.stderr


def test_no_secret_is_written_to_the_state_file(
        tmp_path: Path, receivers: tuple[FakePagerDuty, FakeSlack]) -> None:
    pd, slack = receivers
    state = tmp_path / "state"
    config = write_config(tmp_path, pd.url, slack.url, rate_limit="100/second")
    assert run_cli("send", str(write_alerts(tmp_path, 2)), "--config", str(config),
                   env=cli_env(state)).returncode == 0
    raw = b"".join(p.read_bytes() for p in state.iterdir())
    assert PD_KEY.encode() not in raw
    assert b"/services/" not in raw
