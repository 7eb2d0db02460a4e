"""The command line, run as a user runs it: a new process, real files, exit codes, output."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import EXAMPLES, SITE, run_cli

from armor_notify.alert import Alert, Asset
from armor_notify.api import SendReport
from armor_notify.cli import SUMMARY_OVER, SUMMARY_REASONS, _print_summary, cli
from armor_notify.delivery import Delivery, State

PD_KEY = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"
TOKEN = "tok-0123456789abcdefghij-SECRET"
EXAMPLE_ENV = {
    "PAGERDUTY_INTEGRATION_KEY": PD_KEY,
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/SECRETPATHxxxxxxxx",
    "SLACK_DEV_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B111/SECRETDEVPATHxxxxx",
    "SMTP_PASSWORD": "smtp-secret-password",
}
ALERT = {
    "id": "alert_cli_1",
    "event_type": "schema_change",
    "title": "Column removed",
    "severity": "critical",
    "asset": {"id": "tbl_1", "name": "analytics.public.orders", "environment": "production"},
    "changes": [{"type": "column_removed", "column": "customer_id"}],
}


def write_config(tmp_path: Path, destinations: dict[str, object], extra_rules: str = "") -> Path:
    lines = ["version: 1", "destinations:"]
    for name, spec in destinations.items():
        lines.append(f"  {name}: {json.dumps(spec)}")
    names = json.dumps(list(destinations))
    lines += ["rules:", "  - name: Prod changes", "    event: schema_change",
              f"    destinations: {names}", extra_rules]
    path = tmp_path / "armor-notify.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_alert(tmp_path: Path, data: object = ALERT) -> Path:
    path = tmp_path / "alert.json"
    path.write_text(json.dumps(data))
    return path


def assert_no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text


# -- validate ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_validate_the_example_config() -> None:
    res = run_cli("validate", "--config", str(EXAMPLES / "armor-notify.yaml"), env=EXAMPLE_ENV)
    assert res.returncode == 0, res.stderr
    assert "valid — 4 destinations, 7 rules" in res.stdout
    assert "a1b2…c5d6" in res.stdout
    for secret in EXAMPLE_ENV.values():
        assert secret not in res.stdout + res.stderr


@pytest.mark.slow
def test_validate_reports_every_mistake_with_its_path(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "version: 1\n"
        "destinations:\n"
        "  pagerduty-data-platform: {type: scripted, token: '${MISSING_TOKEN}'}\n"
        "  slack: {type: slak}\n"
        "  other: {type: scripted, scirpt: [ok]}\n"
        "rules:\n"
        "  - name: Prod\n"
        "    event: schema_chnage\n"
        "    destinations: [pagerduty-data-platform, pagerduty-dta-platform]\n"
        "    conditons: {changes: breaking}\n"
    )
    res = run_cli("validate", "--config", str(config))
    assert res.returncode == 2
    err = res.stderr
    assert_no_traceback(err, res.stdout)
    expected = [
        f"{config}:3: destinations.pagerduty-data-platform.token: environment variable MISSING_TOKEN "
        "is not set",
        f"{config}:4: destinations.slack.type: unknown destination type 'slak' "
        "(did you mean 'slack'?)",
        f"{config}:5: destinations.other.scirpt: unknown key 'scirpt' (did you mean 'script'?)",
        f"{config}:10: rules[0].conditons: unknown key 'conditons' (did you mean 'conditions'?)",
        f"{config}:8: rules[0].event: unknown event type 'schema_chnage' "
        "(did you mean 'schema_change'?)",
        f"{config}:9: rules[0].destinations[1]: unknown destination 'pagerduty-dta-platform' "
        "(did you mean 'pagerduty-data-platform'?)",
    ]
    for line in expected:
        assert line in err, f"missing: {line}\n--- got:\n{err}"


@pytest.mark.slow
def test_validate_json_lists_problems(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("version: 2\ndestinations: {}\n")
    res = run_cli("validate", "--config", str(config), "--json")
    assert res.returncode == 2
    doc = json.loads(res.stdout)
    assert doc["problems"][0]["path"] == "version"
    assert "version: 1" in doc["problems"][0]["message"]


@pytest.mark.slow
def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    res = run_cli("validate", cwd=tmp_path)
    assert res.returncode == 2
    assert "armor-notify.yaml: config file not found" in res.stderr
    assert "--config" in res.stderr
    res = run_cli("validate", cwd=tmp_path, env={"ARMOR_NOTIFY_CONFIG": str(tmp_path / "x.yaml")})
    assert f"{tmp_path / 'x.yaml'}: config file not found" in res.stderr


@pytest.mark.slow
def test_config_found_through_the_environment_and_the_current_directory(tmp_path: Path) -> None:
    write_config(tmp_path, {"d": {"type": "scripted"}})
    assert run_cli("validate", cwd=tmp_path).returncode == 0
    other = tmp_path / "sub"
    other.mkdir()
    res = run_cli("validate", cwd=other,
                  env={"ARMOR_NOTIFY_CONFIG": str(tmp_path / "armor-notify.yaml")})
    assert res.returncode == 0, res.stderr


# -- route ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_route_example_alert_through_overlapping_rules() -> None:
    args = ("route", str(EXAMPLES / "alerts" / "freshness_violation.json"), "--config",
            str(EXAMPLES / "armor-notify.yaml"), "--json")
    first = run_cli(*args, env=EXAMPLE_ENV)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)["alerts"][0]
    assert doc["matching_rules"] == ["Gold Table Freshness SLA", "Late data"]
    routes = {r["destination"]: r for r in doc["routes"]}
    assert list(routes) == ["pagerduty-data-platform", "slack-data-incidents"]
    assert routes["slack-data-incidents"]["rule"] == "Gold Table Freshness SLA"
    assert routes["slack-data-incidents"]["also_matched"] == ["Late data"]
    key = routes["pagerduty-data-platform"]["dedup_key"]
    assert key == "anomalyarmor-gold-table-freshness-sla-freshness_violation-ast_orders_01"
    again = json.loads(run_cli(*args, env=EXAMPLE_ENV).stdout)["alerts"][0]
    assert [r["dedup_key"] for r in again["routes"]] == [r["dedup_key"] for r in doc["routes"]]
    assert PD_KEY not in first.stdout


@pytest.mark.slow
def test_route_streams_json_lines_with_the_same_answers_as_an_array(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"d": {"type": "scripted"}})
    alerts = [dict(ALERT, id=f"a{i}", asset=dict(ALERT["asset"], id=f"tbl_{i}"))
              for i in range(5)]
    array = tmp_path / "alerts.json"
    array.write_text(json.dumps(alerts))
    lines = tmp_path / "alerts.jsonl"
    lines.write_text("".join(json.dumps(a) + "\n\n" for a in alerts))
    as_array = run_cli("route", str(array), "--config", str(config), "--json")
    as_lines = run_cli("route", str(lines), "--config", str(config), "--json")
    from_stdin = run_cli("route", "-", "--config", str(config), "--json",
                         stdin=lines.read_text())
    assert as_array.returncode == as_lines.returncode == from_stdin.returncode == 0
    assert as_lines.stdout == as_array.stdout == from_stdin.stdout  # the very same document
    assert [a["alert_id"] for a in json.loads(as_lines.stdout)["alerts"]] == [
        f"a{i}" for i in range(5)]
    text = run_cli("route", str(lines), "--config", str(config))
    assert text.stdout == run_cli("route", str(array), "--config", str(config)).stdout


@pytest.mark.slow
def test_route_checks_every_line_before_printing_anything(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"d": {"type": "scripted"}})
    good = json.dumps(ALERT)
    bad = json.dumps(dict(ALERT, asset={"id": "x"}))
    lines = tmp_path / "alerts.jsonl"
    lines.write_text("\n".join([good, good, bad, "{not json", good, bad]) + "\n")
    as_json = run_cli("route", str(lines), "--config", str(config), "--json")
    assert as_json.returncode == 2
    doc = json.loads(as_json.stdout)  # the error document only: no alert was printed first
    assert "alerts" not in doc and [p["line"] for p in doc["problems"]] == [3, 4, 6]
    res = run_cli("route", str(lines), "--config", str(config))
    assert res.returncode == 2 and res.stdout == ""
    assert f"{lines}:3: asset.name: missing required field 'name'" in res.stderr
    assert f"{lines}:4: not valid JSON" in res.stderr
    assert f"{lines}:6: asset.name: missing required field 'name'" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_route_human_output_and_no_match(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"d": {"type": "scripted"}})
    res = run_cli("route", str(write_alert(tmp_path)), "--config", str(config))
    assert res.returncode == 0
    assert "DEDUP KEY" in res.stdout and "anomalyarmor-prod-changes-schema_change-tbl_1" in res.stdout
    fresh = dict(ALERT, event_type="freshness_violation")
    res = run_cli("route", str(write_alert(tmp_path, fresh)), "--config", str(config))
    assert res.returncode == 0
    assert "no rule matched" in res.stdout


@pytest.mark.slow
def test_route_shows_resolved_alerts_suppressed_where_send_resolved_is_off(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"yes-dest": {"type": "scripted"},
                                     "no-dest": {"type": "scripted", "send_resolved": False}})
    alert = write_alert(tmp_path, dict(ALERT, status="resolved"))
    doc = json.loads(run_cli("route", str(alert), "--config", str(config), "--json").stdout)
    assert {r["destination"]: r["sent"] for r in doc["alerts"][0]["routes"]} == {
        "yes-dest": True, "no-dest": False}
    assert "send_resolved is off" in doc["alerts"][0]["routes"][1]["not_sent_because"]
    human = run_cli("route", str(alert), "--config", str(config)).stdout
    assert "no: send_resolved is off for this destination" in human


# -- send -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_send_reports_each_outcome_and_exit_code(tmp_path: Path) -> None:
    config = write_config(tmp_path, {
        "good": {"type": "scripted", "script": ["ok"]},
        "recovers": {"type": "scripted", "script": ["retry", "ok"], "retry_backoff": 0.01},
        "hangs": {"type": "scripted", "script": ["hang"], "timeout": 0.3, "max_attempts": 1},
        "raises": {"type": "scripted", "script": ["raise"]},
        "rejects": {"type": "scripted", "script": ["fail"], "token": TOKEN},
    })
    res = run_cli("send", str(write_alert(tmp_path)), "--config", str(config), "--json")
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    states = {d["destination"]: (d["state"], d["attempts"]) for d in doc["deliveries"]}
    assert states == {"good": ("delivered", 1), "recovers": ("delivered", 2),
                      "hangs": ("dead", 1), "raises": ("failed", 1), "rejects": ("failed", 1)}
    assert doc["summary"]["delivered"] == 2 and doc["summary"]["failed"] == 2
    assert doc["summary"]["dead"] == 1
    assert doc["exit_code"] == 1
    assert TOKEN not in res.stdout + res.stderr

    human = run_cli("send", str(write_alert(tmp_path)), "--config", str(config))
    assert human.returncode == 1
    assert "2 delivered, 2 failed, 1 dead" in human.stdout
    assert "hint: fix the token" in human.stdout
    assert TOKEN not in human.stdout + human.stderr
    assert_no_traceback(human.stdout, human.stderr)


@pytest.mark.slow
def test_send_all_delivered_exits_0_and_reads_stdin(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"a": {"type": "scripted"}, "b": {"type": "scripted"}})
    res = run_cli("send", "-", "--config", str(config), stdin=json.dumps([ALERT, ALERT]))
    assert res.returncode == 0, res.stderr
    assert "4 delivered" in res.stdout


@pytest.mark.slow
def test_send_dry_run_sends_nothing(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    config = write_config(tmp_path, {"a": {"type": "scripted", "record": str(record)}})
    res = run_cli("send", str(write_alert(tmp_path)), "--config", str(config), "--dry-run")
    assert res.returncode == 0
    assert "skipped" in res.stdout
    assert not record.exists()


@pytest.mark.slow
@pytest.mark.parametrize(("payload", "message"), [
    ("{not json", "not valid JSON"),
    (json.dumps({k: v for k, v in ALERT.items() if k != "title"}), "title: missing required field"),
    (json.dumps(dict(ALERT, query_result=[1, 2])), "unknown field 'query_result'"),
    (json.dumps(dict(ALERT, asset=dict(ALERT["asset"], data_source="postgres://u:pw@db/x"))),
     "asset.data_source: looks like a connection string with credentials"),
])
def test_send_bad_input_exits_2_and_sends_nothing(tmp_path: Path, payload: str,
                                                 message: str) -> None:
    record = tmp_path / "record.jsonl"
    config = write_config(tmp_path, {"a": {"type": "scripted", "record": str(record)}})
    res = run_cli("send", "-", "--config", str(config), stdin=payload)
    assert res.returncode == 2
    assert message in res.stderr
    assert "pw@" not in res.stderr
    assert_no_traceback(res.stderr)
    assert not record.exists()


@pytest.mark.slow
def test_send_with_a_bad_config_sends_nothing(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    config = write_config(tmp_path, {"a": {"type": "scripted", "record": str(record)},
                                     "b": {"type": "nope"}})
    res = run_cli("send", str(write_alert(tmp_path)), "--config", str(config))
    assert res.returncode == 2
    assert "unknown destination type 'nope'" in res.stderr
    assert not record.exists()


def many_alerts(count: int) -> list[dict[str, object]]:
    return [dict(ALERT, id=f"alert_{i:04d}", asset=dict(ALERT["asset"], id=f"tbl_{i}"))
            for i in range(count)]


@pytest.mark.slow
def test_send_of_many_alerts_prints_a_summary_instead_of_a_block_per_alert(
        tmp_path: Path) -> None:
    config = write_config(tmp_path, {"good": {"type": "scripted", "rate_limit": "none"},
                                     "bad": {"type": "scripted", "script": ["fail"],
                                             "token": TOKEN}})
    res = run_cli("send", str(write_alert(tmp_path, many_alerts(SUMMARY_OVER + 5))),
                  "--config", str(config))
    assert res.returncode == 1
    assert res.stderr == ""  # no progress bar: stderr is not a terminal
    lines = res.stdout.splitlines()
    assert lines[0] == (f"{SUMMARY_OVER + 5} alerts, {2 * SUMMARY_OVER + 10} deliveries "
                        "(every delivery: --json, or `armor-notify outbox list`)")
    assert re.match(r"  DESTINATION +TYPE +DELIVERED +FAILED$", lines[1])
    assert re.match(r"  good +scripted +25 +0$", lines[2])
    assert re.match(r"  bad +scripted +0 +25$", lines[3])
    assert "Failed or dead: 25 deliveries, 1 reason" in lines
    assert ("  bad (failed, 25: alert_0000, alert_0001, alert_0002, …): 400 invalid event "
            "(token tok-…CRET)") in lines
    assert "    hint: fix the token" in lines
    assert lines[-1] == "25 delivered, 25 failed"
    assert "Alert alert_" not in res.stdout and TOKEN not in res.stdout
    # Up to the threshold, one block per alert as before.
    few = run_cli("send", str(write_alert(tmp_path, many_alerts(SUMMARY_OVER))),
                  "--config", str(config))
    assert f"Alert alert_{SUMMARY_OVER - 1:04d}: schema_change triggered" in few.stdout
    assert "deliveries (every delivery" not in few.stdout


def test_the_summary_lists_a_bounded_number_of_failure_reasons(
        capsys: pytest.CaptureFixture[str]) -> None:
    alerts = [Alert(id=f"a{i}", event_type="schema_change", title="t",
                    asset=Asset(id=f"t{i}", name="db.t")) for i in range(SUMMARY_OVER + 10)]
    deliveries = []
    for i, alert in enumerate(alerts):
        d = Delivery(alert=alert, destination="pd", destination_type="pagerduty", rule="r",
                     dedup_key=f"k{i}")
        d.finish(State.dead if i % 2 else State.delivered, f"503 number {i}")
        deliveries.append(d)
    _print_summary(SendReport(alerts, deliveries))
    out = capsys.readouterr().out
    dead = (SUMMARY_OVER + 10) // 2
    assert f"Failed or dead: {dead} deliveries, {dead} reasons" in out
    assert out.count("  pd (dead, 1: ") == SUMMARY_REASONS
    assert (f"  … and {dead - SUMMARY_REASONS} more reasons: "
            "`armor-notify outbox list --state failed --state dead`") in out


@pytest.mark.slow
def test_send_shows_progress_when_stderr_is_a_terminal(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"a": {"type": "scripted", "rate_limit": "none"}})
    alerts = write_alert(tmp_path, many_alerts(SUMMARY_OVER + 1))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARMOR_NOTIFY_")}
    env.update(PYTHONPATH=str(SITE), ARMOR_NOTIFY_STATE_DIR=str(tmp_path / "state"))
    controller, terminal = pty.openpty()
    exe = Path(sys.executable).with_name("armor-notify")
    proc = subprocess.Popen([str(exe), "send", str(alerts), "--config", str(config)], env=env,
                            stdout=subprocess.PIPE, stderr=terminal)
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        seen += chunk
    os.close(controller)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    shown = seen.decode()
    assert "delivering" in shown and f"{SUMMARY_OVER + 1}/{SUMMARY_OVER + 1}" in shown
    assert stdout.decode().endswith(f"{SUMMARY_OVER + 1} delivered\n")  # stdout: the summary


# -- test -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_test_command_success_and_resolve(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    config = write_config(tmp_path, {"dest": {"type": "scripted", "record": str(record)}})
    res = run_cli("test", "dest", "--config", str(config))
    assert res.returncode == 0, res.stderr
    assert "Success! Test event sent to Scripted" in res.stdout
    key = re.search(r"Dedup Key: (anomalyarmor-test-\d{5})$", res.stdout, re.M)
    assert key
    res = run_cli("test", "dest", "--config", str(config), "--resolve")
    assert res.returncode == 0
    assert "Resolved the test event in Scripted." in res.stdout
    sent = [json.loads(line) for line in record.read_text().splitlines()]
    sent = [s for s in sent if "closed" not in s]
    assert [s["action"] for s in sent] == ["trigger", "trigger", "resolve"]
    assert sent[1]["dedup_key"] == sent[2]["dedup_key"]
    assert all(s["test"] for s in sent)


@pytest.mark.slow
def test_test_command_failure_and_unknown_destination(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"dest": {"type": "scripted", "script": ["fail"],
                                              "token": TOKEN}})
    res = run_cli("test", "dest", "--config", str(config))
    assert res.returncode == 1
    assert "Test event to Scripted failed: 400 invalid event" in res.stderr
    assert "Hint: fix the token" in res.stderr
    assert TOKEN not in res.stderr + res.stdout
    res = run_cli("test", "dset", "--config", str(config))
    assert res.returncode == 2
    assert "no destination named 'dset' (did you mean 'dest'?)" in res.stderr


# -- plugins ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_plugins_json_lists_built_ins_and_third_party() -> None:
    res = run_cli("plugins", "--json")
    assert res.returncode == 0
    plugins = {p["name"]: p for p in json.loads(res.stdout)["plugins"]}
    assert plugins["pagerduty"]["builtin"] and plugins["pagerduty"]["distribution"] == "armor-notify"
    assert plugins["scripted"]["distribution"] == "armor-notify-scripted"
    assert plugins["scripted"]["version"] == "1.0"
    assert plugins["scripted"]["destination_types"] == ["scripted"]
    assert plugins["scripted"]["event_types"] == ["dbt_test_failed"]
    res = run_cli("plugins", "--json", env={"ARMOR_NOTIFY_LOAD_PLUGINS": ""})
    assert "scripted" not in {p["name"] for p in json.loads(res.stdout)["plugins"]}


@pytest.mark.slow
def test_plugins_table() -> None:
    res = run_cli("plugins")
    assert res.returncode == 0
    assert re.search(r"^scripted\s+armor-notify-scripted\s+1\.0\s+third-party", res.stdout, re.M)


@pytest.mark.slow
def test_help_and_version() -> None:
    res = run_cli("--help")
    assert res.returncode == 0
    for command in ("send", "route", "test", "validate", "plugins"):
        assert command in res.stdout
    assert run_cli("--version").stdout.startswith("armor-notify, version")


@pytest.mark.parametrize("args", [["send", "-", "--wait", "nan"], ["send", "-", "--wait", "inf"],
                                  ["worker", "--once", "--wait", "-1"],
                                  ["worker", "--poll", "0.01"],
                                  ["outbox", "purge", "--older-than", "1e999"]])
def test_duration_options_are_finite_and_bounded(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "Invalid value for" in result.output and "Traceback" not in result.output


def test_duration_options_take_the_config_syntax(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["outbox", "purge", "--older-than", "1h30m",
                                      "--state-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"purged": 0}
