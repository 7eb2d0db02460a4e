"""Control characters in data never reach the terminal raw.

Alert text, names in the config, a server's reply and the user's own arguments can hold escape
sequences that move the cursor and erase lines (forging "all delivered"), retitle the window or
write the clipboard (OSC 0 and OSC 52), C1 controls, line separators and bidi overrides. Every
human output path (send, route, test, validate, worker, outbox list/show, errors on stderr) shows
them as visible escapes; --json escapes them as JSON does. Checked character by character on what
each command printed, with and without a terminal being involved (the rule does not depend on it).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from fake_slack import FakeSlack, Reply

from armor_notify.cli import cli
from armor_notify.output import clean, safe, table

# Cursor up + erase line, then a forged line; window title (OSC 0); clipboard write (OSC 52);
# a C1 CSI (U+009B) and NEL (U+0085); line separator; right-to-left override and an isolate;
# NUL, DEL, carriage return, backspace, vertical tab, form feed, a newline and a tab.
HOSTILE = ("\x1b[1A\x1b[2K3 delivered\x07\x1b]0;owned\x07\x1b]52;c;ZXZpbA==\x07\x9b31m\x85"
           "\u2028\u202egnp.exe\u2066x\u2069\x00\x7f\r\x08\x0b\x0c\nforged line\tend")
BIDI = {"\u061c", "\u200e", "\u200f", *map(chr, range(0x202A, 0x202F)),
        *map(chr, range(0x2066, 0x206A)), "\u2028", "\u2029"}
SLACK_TOKEN = "XXXXXXXXXXXXXXXXXXXXXXXX"


def raw_controls(text: str) -> list[str]:
    """Every character a terminal would act on, other than the newlines the output lays out."""
    return [c for c in text if c != "\n" and (unicodedata.category(c) == "Cc" or c in BIDI)]


def assert_terminal_safe(res: Result) -> None:
    assert raw_controls(res.stdout) == [], res.stdout
    assert raw_controls(res.stderr) == [], res.stderr
    assert "Traceback" not in res.stderr


# -- the one place that neutralises -----------------------------------------------------------------


@pytest.mark.parametrize("code", [*range(0x00, 0x20), *range(0x7F, 0xA0),
                                  *map(ord, sorted(BIDI))])
def test_clean_shows_every_control_character_as_a_visible_escape(code: int) -> None:
    char = chr(code)
    shown = clean(f"a{char}b")
    assert raw_controls(shown) == [] and "\n" not in shown
    assert shown.startswith("a\\") and shown.endswith("b")
    assert safe(f"a{char}b") == (f"a{char}b" if char in "\n\t" else shown)


def test_clean_keeps_ordinary_text_byte_identical() -> None:
    text = "Column removed — analytics.public.orders: 2 breaking changes (ünïcode, 日本, 🙂‍🔥)"
    assert clean(text) == safe(text) == text
    assert clean("tab\there\nnew") == "tab\\there\\nnew"
    assert clean("\x1b]0;t\x07") == "\\x1b]0;t\\x07" and clean("\u202e") == "\\u202e"


def test_a_table_cell_is_one_line_of_plain_text() -> None:
    text = table(["A", "B"], [[HOSTILE, "ok"]], max_width=500)
    assert raw_controls(text) == []
    assert len(text.splitlines()) == 2  # the newline in the data did not make a row


def test_json_escapes_every_control_character() -> None:
    every = "".join(map(chr, [*range(0x00, 0x20), *range(0x7F, 0xA0), *map(ord, BIDI)]))
    text = json.dumps({"title": every}, indent=2)
    assert raw_controls(text) == []
    assert json.loads(text)["title"] == every


# -- every command ----------------------------------------------------------------------------------


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def alert(number: int = 1, **changes: Any) -> dict[str, Any]:
    return {"id": f"alert_{number:03d}", "event_type": "schema_change", "severity": "critical",
            "title": f"Column removed {HOSTILE}",
            "asset": {"id": f"tbl_{number}", "name": f"db.{HOSTILE}.orders"}, **changes}


def write(tmp_path: Path, slack: FakeSlack, alerts: list[dict[str, Any]],
          rule: str = "Prod changes") -> tuple[Path, Path]:
    config = {"version": 1,
              "destinations": {"chat": {"type": "slack", "webhook_url": slack.url,
                                        "rate_limit": "none", "max_attempts": 1}},
              "rules": [{"name": rule, "event": "schema_change", "destinations": ["chat"]}]}
    config_path = tmp_path / "armor-notify.yaml"
    config_path.write_text(yaml.safe_dump(config))
    alerts_path = tmp_path / "alerts.json"
    alerts_path.write_text(json.dumps(alerts))
    return config_path, alerts_path


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def hostile_reply(slack: FakeSlack, count: int = 1) -> None:
    """The receiver refuses with a body full of escape sequences: the reason quotes it."""
    slack.script(*[Reply(400, f"invalid_payload {HOSTILE}")] * count)


def test_send_human_and_json(tmp_path: Path, slack: FakeSlack) -> None:
    config, alerts = write(tmp_path, slack, [alert()])
    hostile_reply(slack)
    res = run("send", alerts, "--config", config, "--state-dir", tmp_path / "state")
    assert res.exit_code == 1  # the alert was accepted, and its delivery failed
    assert_terminal_safe(res)
    assert "Column removed \\x1b[1A\\x1b[2K3 delivered\\x07\\x1b]0;owned" in res.stdout
    assert "chat: invalid_payload \\x1b[1A" in res.stdout
    assert not any(line.startswith(("3 delivered", "forged line")) for line in
                   res.stdout.splitlines())

    hostile_reply(slack)
    as_json = run("send", alerts, "--config", config, "--json", "--state-dir", tmp_path / "s2")
    assert_terminal_safe(as_json)
    doc = json.loads(as_json.stdout)
    assert doc["alerts"][0]["title"].startswith("Column removed \x1b[1A")  # escaped by JSON


def test_send_summary_of_many_alerts(tmp_path: Path, slack: FakeSlack) -> None:
    config, alerts = write(tmp_path, slack, [alert(i) for i in range(25)])
    hostile_reply(slack, 25)
    res = run("send", alerts, "--config", config, "--state-dir", tmp_path / "state")
    assert res.exit_code == 1
    assert_terminal_safe(res)
    assert "invalid_payload \\x1b[1A" in res.stdout


def test_route_with_hostile_alert_and_rule_names(tmp_path: Path, slack: FakeSlack) -> None:
    config, alerts = write(tmp_path, slack, [alert()], rule=f"Prod {HOSTILE}")
    for extra in ([], ["--json"]):
        res = run("route", alerts, "--config", config, *extra)
        assert res.exit_code == 0, res.stderr
        assert_terminal_safe(res)
    assert "matching rules: Prod \\x1b[1A" in run("route", alerts, "--config", config).stdout


def test_validate_with_hostile_names_and_path(tmp_path: Path, slack: FakeSlack) -> None:
    config, _ = write(tmp_path, slack, [], rule=f"Prod {HOSTILE}")
    odd = tmp_path / "conf\x1b]0;owned\x07.yaml"
    odd.write_text(config.read_text())
    res = run("validate", "--config", odd)
    assert res.exit_code == 0, res.stderr
    assert_terminal_safe(res)
    assert "conf\\x1b]0;owned\\x07.yaml: valid" in res.stdout


def test_outbox_list_and_show_and_worker(tmp_path: Path, slack: FakeSlack) -> None:
    state = tmp_path / "state"
    config, alerts = write(tmp_path, slack, [alert()])
    assert run("send", alerts, "--config", config, "--wait", "0",
               "--state-dir", state).exit_code == 3  # queued for the worker
    hostile_reply(slack)
    worker = run("worker", "--once", "--config", config, "--state-dir", state)
    assert worker.exit_code == 1
    assert_terminal_safe(worker)
    assert worker.stdout.startswith("failed     chat  alert_001  (1 attempt): invalid_payload \\x1b")

    listed = run("outbox", "list", "--state-dir", state)
    assert listed.exit_code == 0
    assert_terminal_safe(listed)
    delivery_id = json.loads(run("outbox", "list", "--json", "--state-dir", state).stdout)[
        "deliveries"][0]["id"]
    shown = run("outbox", "show", delivery_id, "--state-dir", state)
    assert shown.exit_code == 0
    assert_terminal_safe(shown)
    assert "alert_title:      Column removed \\x1b[1A" in shown.stdout
    assert "  attempt 1:" in shown.stdout and "invalid_payload \\x1b[1A" in shown.stdout


def test_test_command_shows_a_hostile_reply_safely(tmp_path: Path, slack: FakeSlack) -> None:
    config, _ = write(tmp_path, slack, [])
    hostile_reply(slack)
    res = run("test", "chat", "--config", config)
    assert res.exit_code == 1
    assert_terminal_safe(res)
    assert "Test event to Slack failed: invalid_payload \\x1b[1A" in res.stderr


def test_error_messages_quoting_input_are_safe(tmp_path: Path, slack: FakeSlack) -> None:
    config, alerts = write(tmp_path, slack, [alert()])
    bad_at = run("route", alerts, "--config", config, "--at", f"noon{HOSTILE}")
    assert bad_at.exit_code == 2
    assert_terminal_safe(bad_at)
    assert "'noon\\x1b[1A" in bad_at.stderr

    config, alerts = write(tmp_path, slack, [dict(alert(), **{f"extra{HOSTILE}": 1})])
    bad_alert = run("send", alerts, "--config", config, "--state-dir", tmp_path / "state")
    assert bad_alert.exit_code == 2
    assert_terminal_safe(bad_alert)
    assert "unknown field 'extra\\x1b[1A" in bad_alert.stderr

    unknown = run("outbox", "show", f"abcdef{HOSTILE}", "--state-dir", tmp_path / "state")
    assert unknown.exit_code == 2
    assert_terminal_safe(unknown)

    no_command = run(f"sned{HOSTILE}")
    assert no_command.exit_code == 2
    assert_terminal_safe(no_command)

    no_option = run(f"--bogus{HOSTILE}")
    assert no_option.exit_code == 2
    assert_terminal_safe(no_option)
