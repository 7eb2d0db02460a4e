"""Hostile and broken alert input: each is refused at intake with a located message (never a
traceback, a hang, or an alert that cannot be read back later), on every path alerts come in:
text (``parse_alerts_text``), files and JSON lines (``AlertInput``, ``read_alerts``) and Python
data (``parse_alerts``)."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from datetime import timezone
from pathlib import Path

import pytest
from conftest import run_cli

from armor_notify.alert import Alert
from armor_notify.errors import AlertError, Problem
from armor_notify.intake import AlertInput, parse_alerts, parse_alerts_text, read_alerts

BASE = '"event_type": "freshness_violation", "asset": {"id": "a1", "name": "db.public.orders"}'


def alert_text(fields: str) -> str:
    """One alert object as JSON text, with ``fields`` (raw JSON members) added."""
    return "{" + BASE + ', "title": "Late data"' + (", " + fields if fields else "") + "}"


def refused(text: str, tmp_path: Path) -> dict[str, list[Problem]]:
    """The problems each intake path reports for ``text`` (which must be refused by all)."""
    file = tmp_path / "alerts.json"
    file.write_text(text)
    found: dict[str, list[Problem]] = {}
    readers: dict[str, Callable[[], object]] = {
        "text": lambda: parse_alerts_text(text, source="alerts.json"),
        "read_alerts": lambda: read_alerts(str(file)),
        "stream": lambda: _stream(str(file)),
    }
    for name, read in readers.items():
        with pytest.raises(AlertError) as info:
            read()
        found[name] = info.value.problems
    return found


def _stream(path: str) -> list[Alert]:
    with AlertInput(path) as source:  # JSON lines are checked line by line, as `route` does
        source.check()
        return list(source)


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, problems
    return problems[0]


# -- numbers that are not finite -----------------------------------------------------------------


@pytest.mark.parametrize(("number", "says"), [
    ("1e999", "not a finite number"),
    ("-1e999", "not a finite number"),
    ("Infinity", "Infinity is not a JSON number"),
    ("-Infinity", "-Infinity is not a JSON number"),
    ("NaN", "NaN is not a JSON number"),
])
@pytest.mark.parametrize("field", ["delay_hours", "threshold_hours"])
def test_numbers_that_are_not_finite_are_refused_where_they_are(
        number: str, says: str, field: str, tmp_path: Path) -> None:
    freshness = {"delay_hours": "3", "threshold_hours": "2"}
    freshness[field] = number
    members = ", ".join(f'"{k}": {v}' for k, v in freshness.items())
    for problems in refused(alert_text(f'"freshness": {{{members}}}'), tmp_path).values():
        problem = only(problems)
        assert problem.path == f"freshness.{field}"
        assert says in problem.message


def test_an_integer_too_long_to_convert_is_refused_where_it_is(tmp_path: Path) -> None:
    # Python refuses to convert integers of more than 4,300 digits (a ValueError, not a JSON
    # error): such a number is located like any other number that is not finite.
    text = alert_text('"freshness": {"delay_hours": ' + "9" * 5000 + "}")
    for problems in refused(text, tmp_path).values():
        problem = only(problems)
        assert problem.path == "freshness.delay_hours"
        assert "not a finite number" in problem.message


def test_a_byte_order_mark_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = alert_text('"freshness": {"delay_hours": 3}')
    file = tmp_path / "alerts.json"
    file.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert [a.title for a in read_alerts(str(file))] == ["Late data"]
    assert [a.title for a in _stream(str(file))] == ["Late data"]
    monkeypatch.setattr("sys.stdin", io.StringIO("\ufeff" + text))
    assert [a.title for a in read_alerts("-")] == ["Late data"]


def test_python_data_with_infinity_is_refused_too() -> None:
    data = json.loads(alert_text('"freshness": {"delay_hours": 1}'))
    for bad in (math.inf, -math.inf, math.nan):
        data["freshness"]["delay_hours"] = bad
        with pytest.raises(AlertError) as info:
            parse_alerts(data)
        assert only(info.value.problems).path == "freshness.delay_hours"
    # A model built directly refuses it as well (read-back validates the same way).
    with pytest.raises(ValueError, match="finite"):
        Alert.model_validate({**data, "freshness": {"delay_hours": math.inf}})


def test_large_finite_numbers_are_accepted_and_read_back() -> None:
    (alert,) = parse_alerts_text(alert_text('"freshness": {"delay_hours": 1e308}'))
    assert alert.freshness is not None and alert.freshness.delay_hours == 1e308
    assert read_back(alert) == alert


# -- dates ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("moment", [
    "0001-01-01T00:00:00+05:00",  # before year 1 in UTC: used to pass, then crash in Slack
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:00:00-05:00",  # past year 9999 in UTC
    "9999-12-31T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "3000-01-01T00:00:00Z",
    "2999-12-31T23:00:00-05:00",
])
def test_dates_outside_1970_to_2999_utc_are_refused(moment: str, tmp_path: Path) -> None:
    for problems in refused(alert_text(f'"occurred_at": "{moment}"'), tmp_path).values():
        problem = only(problems)
        assert problem.path == "occurred_at"
        assert "between 1970-01-01 and 2999-12-31 (UTC)" in problem.message
    late = alert_text(f'"freshness": {{"delay_hours": 2, "last_updated_at": "{moment}"}}')
    for problems in refused(late, tmp_path).values():
        assert only(problems).path == "freshness.last_updated_at"


@pytest.mark.parametrize("moment", ["1970-01-01T00:00:00Z", "1970-01-01T05:00:00+05:00",
                                    "2999-12-31T23:59:59Z", "2999-12-31T18:00:00-05:00",
                                    "2026-11-30T12:00:00+14:00", "2026-11-30 12:00"])
def test_accepted_dates_convert_to_utc_and_unix_time(moment: str) -> None:
    (alert,) = parse_alerts_text(alert_text(f'"occurred_at": "{moment}"'))
    utc = alert.occurred_at.astimezone(timezone.utc)
    assert 0 <= alert.occurred_at.timestamp() < 32503680000  # year 3000
    assert utc.isoformat()
    assert read_back(alert) == alert


# -- JSON that a parser would choke on -----------------------------------------------------------


def test_a_whole_file_nested_3000_deep_is_located_not_a_recursion_error(tmp_path: Path) -> None:
    text = "\n" + "[" * 3000 + "]" * 3000
    for problems in refused(text, tmp_path).values():
        problem = only(problems)
        assert "nested too deeply" in problem.message
        assert problem.line == 2


def test_one_field_nested_3000_deep_is_located(tmp_path: Path) -> None:
    deep = "[" * 3000 + "]" * 3000
    found = refused(alert_text(f'"changes": {deep}'), tmp_path)
    for problems in found.values():
        assert "nested too deeply" in only(problems).message
        assert only(problems).line == 1


def test_nesting_past_the_limit_but_within_the_parser_is_refused_at_its_path() -> None:
    deep = "[" * 200 + "]" * 200
    with pytest.raises(AlertError) as info:
        parse_alerts_text("[" + alert_text("") + "," + alert_text(f'"changes": {deep}') + "]")
    problem = only(info.value.problems)
    assert problem.path == "[1].changes[0]"
    assert "nested too deeply (more than 32 levels" in problem.message


def test_a_deep_line_among_json_lines_is_reported_with_its_line(tmp_path: Path) -> None:
    good = alert_text("")
    text = "\n".join([good, good.replace("Late", "Later"), "[" * 5000 + "]" * 5000, good]) + "\n"
    for problems in refused(text, tmp_path).values():
        problem = only(problems)
        assert problem.line == 3
        assert "nested too deeply" in problem.message


def test_a_repeated_key_is_refused_with_the_key_and_where_it_is(tmp_path: Path) -> None:
    text = "{" + BASE + ', "title": "Late data", "title": "All good, ignore this"}'
    for problems in refused(text, tmp_path).values():
        problem = only(problems)
        assert problem.path == "title"
        assert "'title' appears more than once" in problem.message
    nested = '{"event_type": "schema_change", "title": "t", "asset": {"id": "a1", "name": "n", ' \
             '"id": "a2"}}'
    for problems in refused(nested, tmp_path).values():
        assert only(problems).path == "asset.id"


def test_a_repeated_key_in_an_array_or_a_json_line_is_located(tmp_path: Path) -> None:
    good = alert_text("")
    bad = "{" + BASE + ', "title": "a", "title": "b"}'
    with pytest.raises(AlertError) as info:
        parse_alerts_text(f"[{good}, {bad}]")
    assert only(info.value.problems).path == "[1].title"
    found = refused(f"{good}\n{bad}\n", tmp_path)
    for name in ("read_alerts", "stream"):
        problem = only(found[name])
        assert (problem.line, problem.path) == (2, "title")


# -- ids that could forge output -----------------------------------------------------------------


@pytest.mark.parametrize("char", ["\n", "\r", "\x1b", "\x00", "\x07", "\x7f", "\x85", "\u2028",
                                  "\u202e"])
@pytest.mark.parametrize("where", ["id", "asset.id", "dedup_key"])
def test_control_characters_in_ids_are_refused(char: str, where: str) -> None:
    data = json.loads(alert_text('"id": "alert-1", "dedup_key": "key-1"'))
    value = f"abc{char}def"
    if where == "asset.id":
        data["asset"]["id"] = value
    else:
        data[where] = value
    text = json.dumps(data)  # JSON escapes them: the parser gives the raw character back
    with pytest.raises(AlertError) as info:
        parse_alerts_text(text)
    problem = only(info.value.problems)
    assert problem.path == where
    assert f"control characters (found U+{ord(char):04X}" in problem.message


def test_a_newline_in_an_id_cannot_forge_a_line_but_titles_keep_their_handling() -> None:
    forged = json.loads(alert_text(""))
    forged["id"] = "x\nall 3 alerts delivered"
    with pytest.raises(AlertError):
        parse_alerts(forged)
    (alert,) = parse_alerts({**forged, "id": "x", "title": "Late\ndata\u2028now"})
    assert alert.title == "Late data now"


# -- every accepted alert can be stored and read back --------------------------------------------


def read_back(alert: Alert) -> Alert:
    """What the outbox does: store the alert as JSON and validate it again on reading."""
    return Alert.model_validate_json(alert.model_dump_json(by_alias=True),
                                     context={"event_types": None})


@pytest.mark.parametrize("fields", [
    '"freshness": {"delay_hours": 0, "threshold_hours": 1e300, '
    '"last_updated_at": "1970-01-01T00:00:00+00:00"}',
    '"occurred_at": "2999-12-31T23:59:59.999999Z", "severity": "critical"',
    '"id": "\u00e9\u00e8-\U0001f600", "dedup_key": "k" ',
    '"changes": [{"type": "COLUMN_REMOVED", "column": "c\\u0000x"}]',
])
def test_what_intake_accepts_reads_back(fields: str) -> None:
    (alert,) = parse_alerts_text(alert_text(fields))
    assert read_back(alert) == alert


# -- on the command line: exit 2, a located message, no traceback --------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("content", "says"), [
    ("[" * 3000 + "]" * 3000, "nested too deeply"),
    (alert_text('"freshness": {"delay_hours": 1e999}'), "freshness.delay_hours: not a finite"),
    (alert_text('"freshness": {"delay_hours": Infinity}'), "Infinity is not a JSON number"),
    ("{" + BASE + ', "title": "a", "title": "b"}', "title: 'title' appears more than once"),
    (alert_text('"occurred_at": "9999-12-31T23:00:00-05:00"'), "occurred_at: the date must be"),
    (alert_text('"id": "a\\nb"'), "id: must not contain control characters"),
])
def test_bad_alerts_exit_2_with_a_located_message(content: str, says: str,
                                                   tmp_path: Path) -> None:
    config = tmp_path / "armor-notify.yaml"
    config.write_text("version: 1\ndestinations:\n  d: {type: scripted}\nrules:\n"
                      "  - {name: All, event: freshness_violation, destinations: [d]}\n")
    alerts = tmp_path / "alerts.json"
    alerts.write_text(content)
    for command in ("send", "route"):
        result = run_cli(command, str(alerts), "--config", str(config), timeout=30)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert says in result.stderr
        assert "alerts.json" in result.stderr
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr
