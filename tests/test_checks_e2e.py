"""The check-state ledger and mutes (issue 18) as a new user meets them: the real
``armor-notify`` commands (``send``, ``worker``, ``run --mute``, ``checks``, ``mute list``,
``outbox list``) in their own processes, PagerDuty and Slack on loopback fakes, one outbox shared
by every process (a SQLite state directory, or a PostgreSQL database from ``postgres.py``).

- a check that fails, fails, passes, fails and passes pages twice and resolves twice, with the
  trigger's dedup key (native JSON and a dbt target directory);
- a check that stops reporting raises ``check_missing`` under ``worker`` after twice its
  interval, once, and its next result resolves that incident;
- ``run --mute … -- CMD`` holds what CMD causes, delivers what still fails when CMD exits, and
  exits with CMD's code;
- all of it with two workers sharing the outbox.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import postgres
import pytest
import yaml
from conftest import SITE, run_cli, wait_for
from fake_pagerduty import FakePagerDuty
from fake_slack import FakeSlack

pytestmark = pytest.mark.slow  # real processes, some for several seconds

PD_KEY = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"
EXE = Path(sys.executable).with_name("armor-notify")
PD = "pagerduty-data"
SLACK = "slack-data"
CHECK = "not_null_orders_id"
ASSET = {"id": "ast_orders", "name": "db.marts.orders"}
SEQUENCE = ("fail", "fail", "pass", "fail", "pass")


# -- helpers --------------------------------------------------------------------------------------


@pytest.fixture
def pd() -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as fake:
        yield fake


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def write_config(tmp_path: Path, pd: FakePagerDuty, slack: FakeSlack) -> Path:
    """PagerDuty and Slack for failing checks; ``check_missing`` to PagerDuty only. Rate limits
    off so the tests are not paced by Slack's one-a-second."""
    config = {
        "version": 1,
        "destinations": {
            PD: {"type": "pagerduty", "integration_key": PD_KEY, "url": pd.url, "timeout": 2,
                 "retry_backoff": 0.05, "rate_limit": "none"},
            SLACK: {"type": "slack", "webhook_url": slack.url, "timeout": 2,
                    "retry_backoff": 0.05, "rate_limit": "none"},
        },
        "rules": [
            {"name": "Data checks", "event": "validity_failure", "destinations": [PD, SLACK]},
            {"name": "Missing checks", "event": "check_missing", "destinations": [PD]},
        ],
    }
    path = tmp_path / "armor-notify.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def check_result(tmp_path: Path, run: int, status: str, *, check: str = CHECK,
                 expect_every: str | None = None, name: str | None = None) -> Path:
    """One native check result (its own alert id and run id), written to a file for ``send``."""
    result: dict[str, Any] = {"id": check, "status": status, "run_id": f"run-{run}"}
    if expect_every is not None:
        result["expect_every"] = expect_every
    alert = {"id": f"{check}-run-{run}", "event_type": "validity_failure", "severity": "critical",
             "title": f"{check}: null ids in orders", "asset": ASSET, "check": result}
    path = tmp_path / (name or f"{check}-{run}-{status}.json")
    path.write_text(json.dumps(alert))
    return path


DBT_TEST = "test.shop.not_null_orders_id.5c8a1f0e2b"
DBT_MODEL = "model.shop.orders"


def dbt_target(tmp_path: Path, run: int, status: str) -> Path:
    """A dbt target directory after ``dbt build``: the manifest and the run's results (the
    model built; its not_null test ``status``), invocation ``inv-<run>``."""
    target = tmp_path / f"target-{run}"
    target.mkdir()
    manifest = {"nodes": {
        DBT_MODEL: {"resource_type": "model", "database": "db", "schema": "marts",
                    "name": "orders", "alias": "orders", "package_name": "shop", "tags": []},
        DBT_TEST: {"resource_type": "test", "name": "not_null_orders_id", "package_name": "shop",
                   "attached_node": DBT_MODEL, "column_name": "id",
                   "test_metadata": {"name": "not_null"},
                   "depends_on": {"nodes": [DBT_MODEL]}},
    }}
    failed = status != "pass"
    results = {"metadata": {"invocation_id": f"inv-{run}",
                            "generated_at": "2026-11-30T10:00:00Z"},
               "results": [
                   {"unique_id": DBT_MODEL, "status": "success", "message": "OK"},
                   {"unique_id": DBT_TEST, "status": status, "failures": 3 if failed else 0,
                    "message": "Got 3 results, configured to fail if != 0" if failed else None},
               ]}
    (target / "manifest.json").write_text(json.dumps(manifest))
    (target / "run_results.json").write_text(json.dumps(results))
    return target


def popen_cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """``armor-notify`` in the background, with the environment ``run_cli`` gives."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("ARMOR_NOTIFY_")}
    full.update(env, PYTHONPATH=str(SITE))
    return subprocess.Popen([str(EXE), *args], env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def start_worker(config: Path, state: list[str], env: dict[str, str] | None = None
                 ) -> subprocess.Popen[str]:
    return popen_cli("worker", "--config", str(config), "--poll", "0.1s", *state, env=env or {})


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    return out, err


def actions(pd: FakePagerDuty) -> list[tuple[str, str]]:
    return [(e["event_action"], e["dedup_key"]) for e in pd.events]


def missing_triggers(pd: FakePagerDuty) -> list[dict[str, Any]]:
    return [e for e in pd.events if e["event_action"] == "trigger"
            and e["dedup_key"].startswith("armor-notify-missing-")]


def assert_paged_twice_and_resolved_twice(pd: FakePagerDuty, key: str | None = None) -> None:
    """trigger, resolve, trigger, resolve, each resolve with the dedup key of the trigger before
    it, every event valid by PagerDuty's schema."""
    events = [(a, k) for a, k in actions(pd) if not k.startswith("armor-notify-missing-")]
    assert [a for a, _ in events] == ["trigger", "resolve", "trigger", "resolve"], events
    assert events[1][1] == events[0][1] and events[3][1] == events[2][1]
    if key is not None:
        assert {k for _, k in events} == {key}
    assert all(r.schema_errors == [] for r in pd.requests)


def resolved_flags(slack: FakeSlack) -> list[bool]:
    """For each Slack message, whether it says the check recovered (the resolved form: a
    ``Resolved`` headline and ``Resolved:`` before the title)."""
    flags = []
    for request in slack.requests:
        body = request.json()
        sections = [b["text"]["text"] for b in body["blocks"] if b["type"] == "section"
                    and "text" in b]
        resolved = "Resolved" in body["text"]
        assert resolved == any(s.startswith("Resolved: ") for s in sections), body
        flags.append(resolved)
    return flags


def cli_json(*args: str, env: dict[str, str]) -> Any:
    res = run_cli(*args, "--json", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


# -- a: fail, fail, pass, fail, pass through `send` ------------------------------------------------


@pytest.mark.parametrize("given", ["native", "dbt"])
def test_a_check_that_fails_twice_and_recovers_twice_pages_twice_and_resolves_twice(
        tmp_path: Path, pd: FakePagerDuty, slack: FakeSlack, given: str) -> None:
    config = write_config(tmp_path, pd, slack)
    env = {"ARMOR_NOTIFY_STATE_DIR": str(tmp_path / "state")}
    notes = []
    for run, status in enumerate(SEQUENCE, 1):
        if given == "native":
            args = [str(check_result(tmp_path, run, status))]
        else:
            args = [str(dbt_target(tmp_path, run, status)), "--source", "dbt"]
        sent = run_cli("send", *args, "-c", str(config), "--json", env=env)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        report = json.loads(sent.stdout)
        checked = [a for a in report["alerts"] if "check" in a and a["event_type"] ==
                   "validity_failure"]
        assert len(checked) == 1, report["alerts"]
        notes.append(checked[0]["check"])
        states = sorted((d["destination"], d["state"]) for d in report["deliveries"])
        if run == 2:  # still failing: written, not sent
            assert states == [(PD, "suppressed"), (SLACK, "suppressed")]
            assert all(d["reason"].startswith("check still failing since")
                       and d["reason"].endswith(": no new page") for d in report["deliveries"])
            failing = cli_json("checks", "--failing", "-c", str(config), env=env)["checks"]
            assert [(c["check"], c["state"], c["last_run_id"]) for c in failing] == [
                (DBT_TEST if given == "dbt" else CHECK, "failing",
                 "inv-2" if given == "dbt" else "run-2")]
            assert failing[0]["dedup_keys"] == [actions(pd)[0][1]]
            assert failing[0]["destinations"] == [PD, SLACK]
        else:
            assert states == [(PD, "delivered"), (SLACK, "delivered")], report
    assert notes[0] == notes[3] == "check started failing: paged"
    assert notes[1].startswith("check still failing since")
    assert notes[2].startswith("check passed: resolves its incident")

    assert_paged_twice_and_resolved_twice(pd, f"dbt-{DBT_TEST}" if given == "dbt" else None)
    assert len(slack.requests) == 4
    assert resolved_flags(slack) == [False, True, False, True]

    ledger = cli_json("checks", "-c", str(config), env=env)["checks"]
    assert [(c["check"], c["state"], c["dedup_keys"]) for c in ledger
            if c["check"] != "build"] == [(DBT_TEST if given == "dbt" else CHECK, "passing", [])]
    assert cli_json("checks", "--failing", "-c", str(config), env=env) == {"checks": []}

    # The last result posted again (the same run): nothing new is written or sent.
    again = run_cli("send", *args, "-c", str(config), "--json", env=env)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["deliveries"] == []
    assert any(a.get("check", "").endswith("was already recorded: nothing new")
               for a in report["alerts"])
    assert len(pd.events) == 4 and len(slack.requests) == 4


# -- b: a check that stops reporting, under `worker` -----------------------------------------------


def test_a_check_that_stops_reporting_raises_check_missing_once_and_its_next_result_resolves_it(
        tmp_path: Path, pd: FakePagerDuty, slack: FakeSlack) -> None:
    config = write_config(tmp_path, pd, slack)
    state = ["--state-dir", str(tmp_path / "state")]
    worker = start_worker(config, state)
    try:
        began = time.monotonic()
        first = run_cli("send", str(check_result(tmp_path, 1, "pass", expect_every="1s")),
                        "-c", str(config), *state)
        assert first.returncode == 0, first.stdout + first.stderr
        assert pd.events == []  # a pass while passing sends nothing
        assert wait_for(lambda: missing_triggers(pd), 15), (pd.events, worker.poll())
        took = time.monotonic() - began
        assert took >= 2.0  # not before twice the interval (1 s) since the result
        (missing,) = missing_triggers(pd)
        assert missing["payload"]["summary"].startswith(
            f"Check {CHECK} on db.marts.orders has not reported since")
        assert "expected every 1s" in missing["payload"]["summary"]
        assert slack.requests == []  # check_missing is routed to PagerDuty only
        # The chore runs every 0.5 s (5 × --poll): several more rounds raise nothing more.
        time.sleep(2.0)
        assert len(pd.events) == 1, actions(pd)
        (row,) = cli_json("checks", "--failing", "-c", str(config), *state, env={})["checks"]
        assert row["missing_since"] is not None and row["state"] == "passing"
        assert [*row["dedup_keys"], *row.get("missing_dedup_keys", [])] == [missing["dedup_key"]]

        # It reports again: that send writes (and delivers) the resolve of the missing incident.
        again = run_cli("send", str(check_result(tmp_path, 2, "pass", expect_every="1s")),
                        "-c", str(config), *state, "--json")
        assert again.returncode == 0, again.stdout + again.stderr
        (resolve,) = json.loads(again.stdout)["deliveries"]
        assert (resolve["destination"], resolve["state"]) == (PD, "delivered")
        assert actions(pd) == [("trigger", missing["dedup_key"]),
                               ("resolve", missing["dedup_key"])]
        assert cli_json("checks", "--failing", "-c", str(config), *state, env={}) == {
            "checks": []}
        # Silent again after reporting: a new check_missing (the incident opens again).
        assert wait_for(lambda: len(missing_triggers(pd)) == 2, 15), actions(pd)
    finally:
        _, err = stop(worker)
    assert "Traceback" not in err, err
    assert all(r.schema_errors == [] for r in pd.requests)


# -- c: `run --mute … -- CMD` ----------------------------------------------------------------------


def test_run_holds_what_its_command_triggers_and_delivers_what_still_fails_after_it(
        tmp_path: Path, pd: FakePagerDuty, slack: FakeSlack) -> None:
    config = write_config(tmp_path, pd, slack)
    env = {"ARMOR_NOTIFY_STATE_DIR": str(tmp_path / "state")}
    fail = check_result(tmp_path, 1, "fail")
    sent_code, go = tmp_path / "sent-code", tmp_path / "go"
    # The command sends a failure, says so, and waits for the test to let it end (exit 3).
    script = (f'"{EXE}" send "{fail}" -c "{config}" --json > "{tmp_path}/sent.json"; '
              f'echo $? > "{sent_code}"; '
              f'while [ ! -e "{go}" ]; do sleep 0.05; done; exit 3')
    run = popen_cli("run", "--mute", "db.marts.*", "--reason", "backfill", "-c", str(config),
                    "--", "sh", "-c", script, env=env)
    try:
        assert wait_for(lambda: sent_code.exists() and sent_code.read_text().strip(), 30), \
            run.poll()
        # Held, not sent: send left them queued for later (exit 3), nothing reached anyone.
        assert sent_code.read_text().strip() == "3"
        report = json.loads((tmp_path / "sent.json").read_text())
        assert sorted((d["destination"], d["state"]) for d in report["deliveries"]) == [
            (PD, "queued"), (SLACK, "queued")]
        assert all(d["muted_by"] == 1 and d["reason"].startswith("muted by #1 until")
                   and d["reason"].endswith(": backfill") for d in report["deliveries"])
        (mute,) = cli_json("mute", "list", "-c", str(config), env=env)["mutes"]
        assert (mute["id"], mute["state"], mute["held"], mute["reason"], mute["assets"]) == (
            1, "active", 2, "backfill", ["db.marts.*"])
        time.sleep(0.3)
        assert pd.events == [] and slack.requests == []
        go.touch()
        code = run.wait(timeout=60)
    finally:
        _, err = stop(run)
    assert code == 3, err
    # run lifted the mute and delivered what it held (the check still fails) before returning.
    assert [action for action, _ in actions(pd)] == ["trigger"], err
    assert len(slack.requests) == 1 and resolved_flags(slack) == [False]
    assert "mute #1 ended; delivering 2 held deliveries" in err
    listed = cli_json("outbox", "list", "-c", str(config), env=env)["deliveries"]
    assert sorted((d["destination"], d["state"]) for d in listed) == [
        (PD, "delivered"), (SLACK, "delivered")]
    (ended,) = cli_json("mute", "list", "--all", "-c", str(config), env=env)["mutes"]
    assert (ended["state"], ended["held"]) == ("lifted", 0)
    assert cli_json("mute", "list", "-c", str(config), env=env) == {"mutes": []}


def test_run_whose_command_fails_and_recovers_a_check_sends_nothing_at_all(
        tmp_path: Path, pd: FakePagerDuty, slack: FakeSlack) -> None:
    config = write_config(tmp_path, pd, slack)
    env = {"ARMOR_NOTIFY_STATE_DIR": str(tmp_path / "state")}
    fail, ok = check_result(tmp_path, 1, "fail"), check_result(tmp_path, 2, "pass")
    script = (f'"{EXE}" send "{fail}" -c "{config}" && exit 1; '
              f'"{EXE}" send "{ok}" -c "{config}"; exit 5')
    ran = run_cli("run", "--mute", "db.marts.*", "--reason", "backfill", "-c", str(config),
                  "--", "sh", "-c", script, env=env)
    assert ran.returncode == 5, ran.stdout + ran.stderr
    assert "mute #1 ended; 0 held" in ran.stderr
    assert pd.events == [] and slack.requests == []
    listed = cli_json("outbox", "list", "-c", str(config), env=env)["deliveries"]
    by_status = sorted((d["status"], d["destination"], d["state"]) for d in listed)
    assert by_status == [("resolved", PD, "suppressed"), ("resolved", SLACK, "suppressed"),
                         ("triggered", PD, "suppressed"), ("triggered", SLACK, "suppressed")]
    triggers = [d for d in listed if d["state"] == "suppressed" and d["muted_by"] == 1]
    assert len(triggers) == 2
    assert all(d["reason"] == "resolved while muted by #1: never sent" for d in triggers)
    # The ledger saw both: the check is passing, with no incident open.
    (row,) = cli_json("checks", "-c", str(config), env=env)["checks"]
    assert (row["state"], row["dedup_keys"]) == ("passing", [])


def test_run_lifts_its_mute_when_the_command_is_killed(
        tmp_path: Path, pd: FakePagerDuty, slack: FakeSlack) -> None:
    config = write_config(tmp_path, pd, slack)
    env = {"ARMOR_NOTIFY_STATE_DIR": str(tmp_path / "state")}
    fail = check_result(tmp_path, 1, "fail")
    ran = run_cli("run", "--mute", "db.marts.*", "-c", str(config), "--wait", "10", "--",
                  "sh", "-c", f'"{EXE}" send "{fail}" -c "{config}"; kill -9 $$', env=env)
    assert ran.returncode == 128 + signal.SIGKILL, ran.stdout + ran.stderr
    assert len(pd.events) == 1 and actions(pd)[0][0] == "trigger"
    (ended,) = cli_json("mute", "list", "--all", "-c", str(config), env=env)["mutes"]
    assert ended["state"] == "lifted" and ended["reason"].startswith("sh -c ")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_stopped_by_a_signal_passes_it_on_lifts_its_mute_and_delivers_what_it_held(
        tmp_path: Path, pd: FakePagerDuty, slack: FakeSlack, sig: signal.Signals) -> None:
    # Ctrl-C (SIGINT) or a service manager's SIGTERM while the command runs.
    config = write_config(tmp_path, pd, slack)
    env = {"ARMOR_NOTIFY_STATE_DIR": str(tmp_path / "state")}
    fail, ready = check_result(tmp_path, 1, "fail"), tmp_path / "ready"
    run = popen_cli("run", "--mute", "db.marts.*", "--reason", "backfill", "-c", str(config),
                    "--", "sh", "-c", f'"{EXE}" send "{fail}" -c "{config}" >/dev/null; '
                                      f'touch "{ready}"; exec sleep 60', env=env)
    try:
        assert wait_for(ready.exists, 30), run.poll()
        assert pd.events == []
        run.send_signal(sig)
        code = run.wait(timeout=30)
    finally:
        _, err = stop(run)
    assert code == 128 + sig, err  # the command's end, as a shell reports it
    assert [a for a, _ in actions(pd)] == ["trigger"] and len(slack.requests) == 1, err
    (ended,) = cli_json("mute", "list", "--all", "-c", str(config), env=env)["mutes"]
    assert (ended["state"], ended["held"]) == ("lifted", 0)


def test_run_takes_its_wait_as_a_duration_like_every_other_option(
        tmp_path: Path, pd: FakePagerDuty, slack: FakeSlack) -> None:
    # `run --wait 30s`, as documented (and as `send --wait`, `run --max` take it).
    config = write_config(tmp_path, pd, slack)
    env = {"ARMOR_NOTIFY_STATE_DIR": str(tmp_path / "state")}
    ran = run_cli("run", "--mute", "db.marts.*", "--wait", "30s", "-c", str(config), "--",
                  "sh", "-c", "exit 0", env=env)
    assert ran.returncode == 0, ran.stderr
    assert "mute #1 ended; 0 held" in ran.stderr


# -- d: two workers sharing one outbox -------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """The option naming one outbox for every process: a SQLite state directory, or a fresh
    PostgreSQL database (skipped, or failed under CI=true, without a server)."""
    if request.param == "sqlite":
        yield ["--state-dir", str(tmp_path / "state")]
        return
    database = postgres.fresh_database()
    try:
        yield ["--state", database.url]
    finally:
        database.drop()


def test_two_workers_sharing_the_outbox_page_resolve_and_notice_a_missing_check_once(
        tmp_path: Path, pd: FakePagerDuty, slack: FakeSlack, shared_state: list[str]) -> None:
    config = write_config(tmp_path, pd, slack)
    workers = [start_worker(config, shared_state) for _ in range(2)]
    try:
        fresh = run_cli("send", str(check_result(tmp_path, 1, "pass", check="orders_fresh",
                                                 expect_every="1s")),
                        "-c", str(config), *shared_state, "--wait", "0")
        assert fresh.returncode == 0, fresh.stdout + fresh.stderr
        # Accepted and queued for the workers (3); or, as send reads its deliveries back, one
        # of the workers (woken at once by PostgreSQL's NOTIFY) has already delivered them (0).
        expected = {"fail": {0, 3}, "pass": {0, 3}}
        for run, status in enumerate(SEQUENCE, 1):
            sent = run_cli("send", str(check_result(tmp_path, run, status)), "-c", str(config),
                           *shared_state, "--wait", "0", "--json")
            report = json.loads(sent.stdout)
            if run == 2:
                assert sent.returncode == 0, report  # still failing: nothing to send
                assert {d["state"] for d in report["deliveries"]} == {"suppressed"}
            else:
                assert sent.returncode in expected[status], sent.stdout + sent.stderr
        assert wait_for(lambda: len(pd.events) >= 5 and len(slack.requests) >= 4, 30), (
            actions(pd), [w.poll() for w in workers])
        time.sleep(2.0)  # both workers' chores run several times more
        assert len(missing_triggers(pd)) == 1, actions(pd)
        assert len(pd.events) == 5, actions(pd)
        assert_paged_twice_and_resolved_twice(pd)
        assert resolved_flags(slack) == [False, True, False, True]
        # Stopped once every outcome is recorded (none queued or in flight).
        assert wait_for(lambda: not cli_json("outbox", "list", "--state", "queued", "--state",
                                             "in_flight", "-c", str(config), *shared_state,
                                             env={})["deliveries"], 10)
    finally:
        outputs = [stop(w) for w in workers]
    for _, err in outputs:
        assert "Traceback" not in err, err
    delivered = [line for out, _ in outputs for line in out.splitlines()
                 if line.startswith("delivered")]
    assert len(delivered) == 9  # 5 to PagerDuty, 4 to Slack: each by one worker, once


# -- mutes on the command line, under a worker -----------------------------------------------------


def test_a_mute_running_out_under_a_worker_delivers_the_still_failing_check_once_and_unmute_at_once(
        tmp_path: Path, pd: FakePagerDuty, slack: FakeSlack) -> None:
    config = write_config(tmp_path, pd, slack)
    env = {"ARMOR_NOTIFY_STATE_DIR": str(tmp_path / "state")}
    began = time.monotonic()  # the mute starts after this
    made = run_cli("mute", "--asset", "db.marts.*", "--for", "3s", "--reason", "backfill", "-c",
                   str(config), env=env)
    assert made.returncode == 0 and made.stdout.startswith("mute #1: asset db.marts.* until"), \
        made.stdout + made.stderr
    held = run_cli("send", str(check_result(tmp_path, 1, "fail")), "-c", str(config), env=env)
    assert held.returncode == 3, held.stdout + held.stderr  # held: queued for a worker
    again = run_cli("send", str(check_result(tmp_path, 2, "fail")), "-c", str(config), env=env)
    assert again.returncode == 0 and "no new page" in again.stdout, again.stdout
    worker = start_worker(config, [], env)
    try:
        assert wait_for(lambda: len(pd.events) >= 1 and len(slack.requests) >= 1, 15)
        assert time.monotonic() - began >= 3.0  # not before the mute ran out
        time.sleep(0.5)
        assert [a for a, _ in actions(pd)] == ["trigger"] and len(slack.requests) == 1
        (ended,) = cli_json("mute", "list", "--all", "-c", str(config), env=env)["mutes"]
        assert (ended["state"], ended["held"]) == ("expired", 0)

        # A longer mute, ended by hand: the new failure it held is due at once.
        run_cli("send", str(check_result(tmp_path, 3, "pass")), "-c", str(config), env=env)
        assert wait_for(lambda: len(pd.events) == 2, 10)  # the resolve is never held
        made = run_cli("mute", "--asset", "db.marts.*", "--for", "1h", "--reason", "migration",
                       "-c", str(config), env=env)
        assert made.returncode == 0, made.stderr
        held = run_cli("send", str(check_result(tmp_path, 4, "fail")), "-c", str(config),
                       env=env)
        assert held.returncode == 3, held.stdout
        time.sleep(0.5)
        assert len(pd.events) == 2  # held by mute #2 for an hour
        lifted = cli_json("unmute", "2", "-c", str(config), env=env)
        assert lifted["mute"]["state"] == "lifted" and len(lifted["released"]) == 2
        assert wait_for(lambda: len(pd.events) == 3 and len(slack.requests) == 3, 10)
    finally:
        _, err = stop(worker)
    assert "Traceback" not in err, err
    assert [a for a, _ in actions(pd)] == ["trigger", "resolve", "trigger"]
    assert resolved_flags(slack) == [False, True, False]


# -- what the ledger must not lose -----------------------------------------------------------------


def open_incidents(pd: FakePagerDuty) -> set[str]:
    """The dedup keys PagerDuty has an open incident for, after every event it received."""
    opened: set[str] = set()
    for action, key in actions(pd):
        if action == "trigger":
            opened.add(key)
        elif action == "resolve":
            opened.discard(key)
    return opened


def assert_every_failing_check_is_open_on_pagerduty(pd: FakePagerDuty, config: Path,
                                                   env: dict[str, str]) -> None:
    failing = cli_json("checks", "--failing", "-c", str(config), env=env)["checks"]
    for row in failing:
        assert row["dedup_keys"], row
        for key in row["dedup_keys"]:
            assert key in open_incidents(pd), (
                f"check {row['check']} is failing, but PagerDuty's incident {key} was resolved: "
                f"{actions(pd)}")


def test_two_failing_checks_on_one_asset_keep_their_incidents_apart(
        tmp_path: Path, pd: FakePagerDuty, slack: FakeSlack) -> None:
    # Two checks of one table (native results carry no dedup key of their own): the first
    # passing must not resolve the page the second one still stands behind.
    config = write_config(tmp_path, pd, slack)
    env = {"ARMOR_NOTIFY_STATE_DIR": str(tmp_path / "state")}
    for run, (check, status) in enumerate([("not_null_orders_id", "fail"),
                                           ("unique_orders_id", "fail"),
                                           ("not_null_orders_id", "pass")], 1):
        sent = run_cli("send", str(check_result(tmp_path, run, status, check=check)), "-c",
                       str(config), env=env)
        assert sent.returncode == 0, sent.stdout + sent.stderr
    ledger = {c["check"]: c["state"]
              for c in cli_json("checks", "-c", str(config), env=env)["checks"]}
    assert ledger == {"not_null_orders_id": "passing", "unique_orders_id": "failing"}
    assert_every_failing_check_is_open_on_pagerduty(pd, config, env)


@pytest.mark.parametrize("statuses", [("fail", "pass"), ("fail", "fail")])
def test_results_of_one_check_in_one_batch_are_judged_one_after_the_other(
        tmp_path: Path, pd: FakePagerDuty, slack: FakeSlack, statuses: tuple[str, str]) -> None:
    # A producer that posts an hour's results at once (a JSON list): the ledger must judge the
    # second against the first as if they had come one at a time.
    config = write_config(tmp_path, pd, slack)
    env = {"ARMOR_NOTIFY_STATE_DIR": str(tmp_path / "state")}
    batch = [json.loads(check_result(tmp_path, run, status).read_text())
             for run, status in enumerate(statuses, 1)]
    path = tmp_path / "batch.json"
    path.write_text(json.dumps(batch))
    sent = run_cli("send", str(path), "-c", str(config), env=env)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    (row,) = cli_json("checks", "-c", str(config), env=env)["checks"]
    if statuses[-1] == "pass":  # paged and resolved (or neither): no incident left open
        assert row["state"] == "passing"
        assert open_incidents(pd) == set(), actions(pd)
    else:  # one page, then "still failing"
        assert row["state"] == "failing"
        assert [a for a, _ in actions(pd)] == ["trigger"], actions(pd)
        assert len(slack.requests) == 1
    assert_every_failing_check_is_open_on_pagerduty(pd, config, env)
