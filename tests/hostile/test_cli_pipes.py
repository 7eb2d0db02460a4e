"""A reader that goes away (`armor-notify ... | head -1`) and internal errors: the command ends
quietly, delivery never stops, and a bug has its own exit code (4), never 1 (a delivery failed).

The pipe tests run the real command with its stdout on a real pipe that the test closes after
reading one line; what was delivered is counted at a loopback Slack receiver."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import SITE
from fake_slack import FakeSlack, Received, Reply

from armor_notify.cli import cli

ALERT = {"event_type": "schema_change", "severity": "critical", "title": "Column removed",
         "asset": {"id": "tbl_1", "name": "analytics.public.orders"}}


class GatedSlack(FakeSlack):
    """Answers the first request at once and holds every later answer until ``open()``, so the
    test knows the command still has deliveries to report after it closed the pipe."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self._first = threading.Lock()
        self._answered_one = False

    def _next_reply(self, received: Received) -> Reply:
        reply = super()._next_reply(received)
        with self._first:
            first, self._answered_one = not self._answered_one, True
        if not first:
            self.gate.wait(30)
        return reply

    def open(self) -> None:
        self.gate.set()


@pytest.fixture
def slack() -> Iterator[GatedSlack]:
    with GatedSlack() as fake:
        yield fake
        fake.open()


def write_config(tmp_path: Path, url: str) -> Path:
    config = {"version": 1,
              "destinations": {"chat": {"type": "slack", "webhook_url": url, "rate_limit": "none",
                                        "timeout": 30}},
              "rules": [{"name": "All changes", "event": "schema_change",
                         "destinations": ["chat"]}]}
    path = tmp_path / "armor-notify.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_alerts(tmp_path: Path, count: int, *, lines: bool = False) -> Path:
    alerts = [dict(ALERT, id=f"alert_{i:04d}", title=f"Column removed from table {i:04d}",
                   asset=dict(ALERT["asset"], id=f"tbl_{i}")) for i in range(count)]
    if lines:
        path = tmp_path / "alerts.jsonl"
        path.write_text("".join(json.dumps(a) + "\n" for a in alerts))
    else:
        path = tmp_path / "alerts.json"
        path.write_text(json.dumps(alerts))
    return path


def start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    # Buffered stdout, as users have it (PYTHONUNBUFFERED drops the rest of a partial write).
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ARMOR_NOTIFY_") and k != "PYTHONUNBUFFERED"}
    env.update(PYTHONPATH=os.pathsep.join(p for p in [str(SITE), env.get("PYTHONPATH", "")] if p),
               ARMOR_NOTIFY_STATE_DIR=str(tmp_path / "state"))
    exe = Path(sys.executable).with_name("armor-notify")
    return subprocess.Popen([str(exe), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def read_one_line_and_close(proc: subprocess.Popen[str]) -> str:
    """What `| head -1` does: read a line, then close the pipe while the command still writes."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.stdout.close()
    return line


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    assert proc.stderr is not None
    try:
        stderr = proc.stderr.read()
        return proc.wait(timeout=60), stderr
    finally:
        proc.stderr.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def slack_alert_ids(slack: FakeSlack) -> list[str]:
    """The alert of every message the receiver got (its number is in the title)."""
    titles = [re.findall(r"Column removed from table (\d{4})", r.body.decode())
              for r in slack.requests]
    assert all(titles)
    return [f"alert_{found[0]}" for found in titles]


# -- route: printing only ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("as_json", [False, True])
def test_route_into_a_closed_pipe_ends_quietly_with_exit_0(tmp_path: Path, as_json: bool) -> None:
    config = write_config(tmp_path, "https://hooks.slack.com/services/T0/B0/XXXXXXXX")
    # About 1 MB of output: far more than a pipe holds, so writes go on after the pipe closes.
    alerts = write_alerts(tmp_path, 2000, lines=True)
    proc = start(tmp_path, "route", str(alerts), "--config", str(config),
                 *(["--json"] if as_json else []))
    first = read_one_line_and_close(proc)
    code, stderr = finish(proc)
    assert first.startswith("{" if as_json else "Alert alert_0000: schema_change triggered")
    assert code == 0
    assert stderr == ""  # no "internal error: BrokenPipeError", no "Exception ignored" at exit


# -- worker and send: delivery goes on ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("as_json", [False, True])
def test_worker_keeps_delivering_after_its_stdout_is_closed(tmp_path: Path, slack: GatedSlack,
                                                            as_json: bool) -> None:
    count = 60
    config = write_config(tmp_path, slack.url)
    queued = start(tmp_path, "send", str(write_alerts(tmp_path, count)), "--config", str(config),
                   "--wait", "0")
    assert queued.communicate(timeout=60)[1] == "" and queued.returncode == 3  # queued, not sent
    assert slack.requests == []

    proc = start(tmp_path, "worker", "--once", "--config", str(config),
                 *(["--json"] if as_json else []))
    first = read_one_line_and_close(proc)
    slack.open()  # only now do the other answers come, so their lines meet a closed pipe
    code, stderr = finish(proc)
    assert ("delivered" in first) if not as_json else json.loads(first)["state"] == "delivered"
    assert code == 0
    assert stderr == ""
    # Every queued delivery was posted, each exactly once, although nobody read the output.
    assert sorted(slack_alert_ids(slack)) == [f"alert_{i:04d}" for i in range(count)]
    left = start(tmp_path, "outbox", "list", "--state", "queued", "--state", "in_flight")
    assert left.communicate(timeout=60)[0].strip() == "no deliveries in those states"


@pytest.mark.slow
def test_send_into_a_closed_pipe_delivers_everything_and_keeps_its_exit_code(
        tmp_path: Path) -> None:
    count = 250
    with FakeSlack() as slack:
        config = write_config(tmp_path, slack.url)
        # --json prints ~200 KB, far more than a pipe holds: the write meets the closed pipe.
        proc = start(tmp_path, "send", str(write_alerts(tmp_path, count)), "--config",
                     str(config), "--json")
        first = read_one_line_and_close(proc)
        code, stderr = finish(proc)
    assert first == "{\n"
    assert code == 0 and stderr == ""
    assert sorted(slack_alert_ids(slack)) == [f"alert_{i:04d}" for i in range(count)]


@pytest.mark.slow
def test_ctrl_c_during_send_exits_130_and_a_worker_finishes_the_rest(
        tmp_path: Path, slack: GatedSlack) -> None:
    config = write_config(tmp_path, slack.url)
    # A short timeout keeps the interrupted attempt's lease short, so the worker takes it over soon.
    config.write_text(config.read_text().replace("timeout: 30", "timeout: 1"))
    proc = start(tmp_path, "send", str(write_alerts(tmp_path, 3)), "--config", str(config))
    deadline = threading.Event()
    while len(slack.requests) < 2 and proc.poll() is None:  # one answered, one held
        deadline.wait(0.02)
    proc.send_signal(signal.SIGINT)
    _out, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted" in stderr and "armor-notify worker" in stderr
    assert "Traceback" not in stderr and "Aborted" not in stderr
    slack.open()
    worker = start(tmp_path, "worker", "--once", "--config", str(config))
    _out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    # Nothing accepted was lost: every alert reached Slack (the interrupted one possibly twice:
    # its answer was never read, so it counts as not delivered: at least once, never zero).
    assert set(slack_alert_ids(slack)) == {f"alert_{i:04d}" for i in range(3)}


# -- internal errors --------------------------------------------------------------------------------


def route_args(tmp_path: Path) -> list[str]:
    config = write_config(tmp_path, "https://hooks.slack.com/services/T0/B0/XXXXXXXX")
    return ["route", str(write_alerts(tmp_path, 1)), "--config", str(config)]


def test_an_internal_error_exits_4_with_a_message_and_no_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug\x1b[2J")

    monkeypatch.setattr("armor_notify.api.Notifier.route", broken)
    res = CliRunner().invoke(cli, route_args(tmp_path))
    assert res.exit_code == 4  # never 1: that means "a delivery failed"
    assert "armor-notify: internal error: ZeroDivisionError: a bug\\x1b[2J" in res.stderr
    assert "please report it" in res.stderr
    assert "Traceback" not in res.stderr and "\x1b" not in res.stderr

    debug = CliRunner().invoke(cli, ["--debug", *route_args(tmp_path)])
    assert debug.exit_code == 4
    assert "Traceback (most recent call last)" in debug.stderr
    assert "ZeroDivisionError: a bug\\x1b[2J" in debug.stderr and "\x1b" not in debug.stderr


def test_a_broken_pipe_that_is_not_stdout_is_an_internal_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a closed stdout ends quietly: a BrokenPipeError from anywhere else is a bug."""
    def broken(*args: object, **kwargs: object) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("armor_notify.api.Notifier.route", broken)
    res = CliRunner().invoke(cli, route_args(tmp_path))
    assert res.exit_code == 4
    assert "internal error: BrokenPipeError" in res.stderr


def test_user_errors_still_exit_2(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, [*route_args(tmp_path), "--at", "yesterday"])
    assert res.exit_code == 2
    assert "'yesterday' is not an ISO 8601 time" in res.stderr
