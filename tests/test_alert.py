"""The alert model and alert intake (SPEC §1): strict validation, every problem reported at once."""

from __future__ import annotations

import io
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from armor_notify.alert import BUILTIN_EVENT_TYPES, Alert, Severity
from armor_notify.errors import AlertError, ArmorNotifyError, Problem
from armor_notify.intake import parse_alerts, parse_alerts_text, read_alerts

CREDENTIAL_MESSAGE = "looks like a connection string with credentials"


def alert_data(**overrides: Any) -> dict[str, Any]:
    """A minimal valid alert as a JSON-like dict, with top-level overrides."""
    data: dict[str, Any] = {
        "event_type": "schema_change",
        "title": "Column removed from orders",
        "asset": {"id": "asset-1", "name": "analytics.public.orders"},
    }
    data.update(overrides)
    return data


def asset_data(**overrides: Any) -> dict[str, Any]:
    asset: dict[str, Any] = {"id": "asset-1", "name": "analytics.public.orders"}
    asset.update(overrides)
    return asset


def one(data: Any, **kwargs: Any) -> Alert:
    alerts = parse_alerts(data, **kwargs)
    assert len(alerts) == 1
    return alerts[0]


def problems_of(data: Any, **kwargs: Any) -> list[Problem]:
    with pytest.raises(AlertError) as info:
        parse_alerts(data, **kwargs)
    return info.value.problems


def by_path(problems: list[Problem]) -> dict[str, Problem]:
    out = {p.path: p for p in problems}
    assert len(out) == len(problems), f"two problems share a path: {problems}"
    return out


# -- a valid alert and its defaults ----------------------------------------------------------------


def test_minimal_alert_gets_documented_defaults() -> None:
    before = datetime.now(timezone.utc)
    alert = one(alert_data())
    after = datetime.now(timezone.utc)

    assert alert.event_type == "schema_change"
    assert alert.status == "triggered"
    assert alert.severity is Severity.warning
    assert alert.title == "Column removed from orders"
    assert alert.description is None
    assert alert.changes == ()
    assert alert.freshness is None
    assert alert.link is None
    assert alert.dedup_key is None
    assert alert.asset.id == "asset-1"
    assert alert.asset.name == "analytics.public.orders"
    assert alert.asset.tags == ()
    # occurred_at defaults to now, as an aware UTC timestamp
    assert alert.occurred_at.tzinfo is not None
    assert alert.occurred_at.utcoffset() == timedelta(0)
    assert before <= alert.occurred_at <= after


def test_full_alert_keeps_every_field() -> None:
    alert = one(alert_data(
        id="alert-42",
        status="resolved",
        severity="critical",
        description="Column `customer_id` was dropped.",
        asset=asset_data(data_source="warehouse-prod", schema="public", kind="table",
                         environment="production", tags=["gold", "finance"]),
        changes=[{"type": "column_removed", "column": "customer_id", "from": "bigint"}],
        link="https://app.anomalyarmor.ai/alerts/42",
        dedup_key="my-own-key",
        occurred_at="2024-05-01T12:30:00Z",
    ))
    assert alert.id == "alert-42"
    assert alert.status == "resolved"
    assert alert.severity is Severity.critical
    assert alert.description == "Column `customer_id` was dropped."
    assert alert.asset.data_source == "warehouse-prod"
    assert alert.asset.schema_ == "public"
    assert alert.asset.kind == "table"
    assert alert.asset.environment == "production"
    assert alert.asset.tags == ("gold", "finance")
    assert alert.changes[0].column == "customer_id"
    assert alert.changes[0].from_ == "bigint"
    assert alert.link == "https://app.anomalyarmor.ai/alerts/42"
    assert alert.dedup_key == "my-own-key"
    assert alert.occurred_at == datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)


def test_an_absent_id_is_derived_from_the_content() -> None:
    first, same, other = parse_alerts([alert_data(), alert_data(), alert_data(title="Other")])
    assert first.id.startswith("alert_") and len(first.id) == len("alert_") + 32
    assert first.id == same.id  # the same content sent twice is the same alert ...
    assert first.id != other.id  # ... and different content a different one
    # Key order and spacing do not matter; the content as given does (occurred_at defaults to
    # now when absent, yet the id stays the same whenever the alert is read).
    text = json.dumps(alert_data(), indent=2)
    reordered = json.dumps(dict(reversed(list(alert_data().items()))))
    assert parse_alerts_text(text)[0].id == parse_alerts_text(reordered)[0].id == first.id
    assert one(alert_data(occurred_at="2026-01-01T00:00:00Z")).id != first.id
    assert one(alert_data(status="resolved")).id != first.id


def test_explicit_id_is_kept() -> None:
    assert one(alert_data(id="abc-123")).id == "abc-123"


def test_alert_is_immutable() -> None:
    alert = one(alert_data())
    with pytest.raises(ValidationError):
        alert.title = "changed"  # type: ignore[misc]


# -- required fields ------------------------------------------------------------------------------


def test_missing_required_fields_are_all_reported() -> None:
    problems = by_path(problems_of({}))
    assert set(problems) == {"event_type", "title", "asset"}
    for field in ("event_type", "title", "asset"):
        assert problems[field].message == f"missing required field '{field}'"


def test_asset_requires_id_and_name() -> None:
    problems = by_path(problems_of(alert_data(asset={})))
    assert set(problems) == {"asset.id", "asset.name"}
    assert "missing required field 'id'" in problems["asset.id"].message
    assert "missing required field 'name'" in problems["asset.name"].message


@pytest.mark.parametrize("field", ["title", "asset.id", "asset.name"])
def test_required_text_may_not_be_blank(field: str) -> None:
    if field == "title":
        data = alert_data(title="   ")
    else:
        data = alert_data(asset=asset_data(**{field.split(".")[1]: "  "}))
    assert [p.path for p in problems_of(data)] == [field]


# -- unknown fields -------------------------------------------------------------------------------


def test_unknown_top_level_field_rejected_with_suggestion() -> None:
    [problem] = problems_of(alert_data(titel="x"))
    assert problem.path == "titel"
    assert "unknown field 'titel'" in problem.message
    assert "(did you mean 'title'?)" in problem.message


def test_unknown_top_level_field_without_a_close_match_has_no_suggestion() -> None:
    [problem] = problems_of(alert_data(query_result=[{"email": "a@example.com"}]))
    assert problem.path == "query_result"
    assert "unknown field 'query_result'" in problem.message
    assert "did you mean" not in problem.message


def test_unknown_field_inside_asset_rejected() -> None:
    [problem] = problems_of(alert_data(asset=asset_data(row_count=123)))
    assert problem.path == "asset.row_count"
    assert "unknown field 'row_count'" in problem.message


def test_unknown_field_inside_changes_rejected() -> None:
    changes = [{"type": "column_added", "column": "a"},
               {"type": "type_changed", "column": "b", "sample_values": [1, 2]}]
    [problem] = problems_of(alert_data(changes=changes))
    assert problem.path == "changes[1].sample_values"
    assert "unknown field 'sample_values'" in problem.message


def test_unknown_field_inside_freshness_rejected() -> None:
    [problem] = problems_of(alert_data(event_type="freshness_violation",
                                       freshness={"delay_hours": 3, "latest_row": {"id": 1}}))
    assert problem.path == "freshness.latest_row"


# -- every problem at once ------------------------------------------------------------------------


def test_every_problem_in_an_array_is_reported_with_its_index() -> None:
    data = [
        alert_data(),
        {"title": "no event type", "asset": asset_data()},
        alert_data(asset={"id": "x"}, severity="loud", evnt_type="oops"),
    ]
    problems = by_path(problems_of(data))
    assert set(problems) == {"[1].event_type", "[2].asset.name", "[2].severity", "[2].evnt_type"}
    assert problems["[1].event_type"].message == "missing required field 'event_type'"
    assert "(did you mean 'event_type'?)" in problems["[2].evnt_type"].message
    assert "info" in problems["[2].severity"].message


def test_single_object_problems_have_no_index_prefix() -> None:
    problems = by_path(problems_of(alert_data(status="open", asset=asset_data(nam="x"))))
    assert set(problems) == {"status", "asset.nam"}


def test_array_item_that_is_not_an_object_is_reported_at_its_index() -> None:
    problems = problems_of([alert_data(), "not an alert"])
    assert [p.path for p in problems] == ["[1]"]


def test_alert_error_message_lists_every_problem() -> None:
    with pytest.raises(AlertError) as info:
        parse_alerts({"asset": {}}, source="alerts.json")
    error = info.value
    assert isinstance(error, ArmorNotifyError)
    text = str(error)
    assert text.startswith("4 problems in the alert input:")
    for problem in error.problems:
        assert problem.file == "alerts.json"
        assert f"alerts.json: {problem.path}: {problem.message}" in text


# -- credentials ----------------------------------------------------------------------------------

CONNECTION_STRINGS = [
    "postgres://user:pw@host/db",
    "postgresql://etl:hunter2secret@db.internal:5432/analytics",
    "mongodb+srv://admin:s3cret@cluster0.example.net/app",
    "jdbc:mysql://root:toor@10.0.0.5/prod",
    "snowflake://svc:p%40ss@acct.snowflakecomputing.com/db",
]


@pytest.mark.parametrize("value", CONNECTION_STRINGS)
def test_credentials_rejected_in_data_source(value: str) -> None:
    [problem] = problems_of(alert_data(asset=asset_data(data_source=value)))
    assert problem.path == "asset.data_source"
    assert CREDENTIAL_MESSAGE in problem.message


@pytest.mark.parametrize(
    ("field", "path"),
    [
        ("description", "description"),
        ("title", "title"),
        ("asset.name", "asset.name"),
        ("asset.id", "asset.id"),
        ("asset.environment", "asset.environment"),
        ("changes.column", "changes[0].column"),
        ("changes.to", "changes[0].to"),
    ],
)
def test_credentials_rejected_in_any_text_field(field: str, path: str) -> None:
    value = "Moved to postgres://user:pw@host/db today"
    if field in ("description", "title"):
        data = alert_data(**{field: value})
    elif field.startswith("asset."):
        data = alert_data(asset=asset_data(**{field.split(".")[1]: value}))
    else:
        data = alert_data(changes=[{"type": "column_renamed", field.split(".")[1]: value}])
    [problem] = problems_of(data)
    assert problem.path == path
    assert CREDENTIAL_MESSAGE in problem.message


def test_credentials_rejected_in_tags() -> None:
    [problem] = problems_of(alert_data(asset=asset_data(tags=["ok", "redis://:pw@cache:6379"])))
    assert problem.path == "asset.tags[1]"
    assert CREDENTIAL_MESSAGE in problem.message


def test_credential_error_does_not_echo_the_password() -> None:
    with pytest.raises(AlertError) as info:
        parse_alerts(alert_data(asset=asset_data(
            data_source="postgresql://etl:hunter2secret@db/analytics")))
    assert "hunter2secret" not in str(info.value)


@pytest.mark.parametrize(
    "value",
    [
        "warehouse-prod",
        "see https://app.example.com/alerts/1 for details",
        "owner: data-eng@example.com",
        "ratio 3:1 at 10:30",
    ],
)
def test_text_without_credentials_is_accepted(value: str) -> None:
    alert = one(alert_data(description=value, asset=asset_data(data_source=value)))
    assert alert.description == value
    assert alert.asset.data_source == value


# -- one-line fields ------------------------------------------------------------------------------


@pytest.mark.parametrize("brk", ["\n", "\r\n", "\r", "\u2028", "\u2029", "\x85", "\v", "\f"])
def test_line_breaks_in_title_collapse_to_one_space(brk: str) -> None:
    assert one(alert_data(title=f"first{brk}second")).title == "first second"


def test_runs_of_line_breaks_and_spaces_collapse_to_one_space() -> None:
    title = "  Column removed \r\n\r\n  from\u2028\u2028orders\n"
    assert one(alert_data(title=title)).title == "Column removed from orders"


def test_line_breaks_in_asset_name_collapse() -> None:
    assert one(alert_data(asset=asset_data(name="db.public\n.orders"))).asset.name == "db.public .orders"


def test_description_keeps_its_lines() -> None:
    text = "first line\nsecond line"
    assert one(alert_data(description=text)).description == text


# -- schema changes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change_type", "breaking"),
    [
        ("column_removed", True),
        ("column_renamed", True),
        ("type_changed", True),
        ("table_removed", True),
        ("column_added", False),
        ("nullability_changed", False),
        ("table_added", False),
    ],
)
def test_breaking_defaults_from_change_type(change_type: str, breaking: bool) -> None:
    alert = one(alert_data(changes=[{"type": change_type, "column": "c"}]))
    assert alert.changes[0].breaking is breaking


@pytest.mark.parametrize(("change_type", "explicit"),
                         [("column_removed", False), ("column_added", True)])
def test_explicit_breaking_overrides_the_default(change_type: str, explicit: bool) -> None:
    alert = one(alert_data(changes=[{"type": change_type, "breaking": explicit}]))
    assert alert.changes[0].breaking is explicit


@pytest.mark.parametrize(("raw", "lowered", "breaking"),
                         [("COLUMN_REMOVED", "column_removed", True),
                          (" Type_Changed ", "type_changed", True),
                          ("Column_Added", "column_added", False)])
def test_change_types_are_lowered(raw: str, lowered: str, breaking: bool) -> None:
    change = one(alert_data(changes=[{"type": raw}])).changes[0]
    assert change.type == lowered
    assert change.breaking is breaking


def test_breaking_changes_property() -> None:
    alert = one(alert_data(changes=[{"type": "column_added", "column": "a"},
                                    {"type": "column_removed", "column": "b"}]))
    assert [c.column for c in alert.breaking_changes] == ["b"]


@pytest.mark.parametrize("bad", ["column removed", "1column", "", "col-removed"])
def test_malformed_change_type_rejected(bad: str) -> None:
    [problem] = problems_of(alert_data(changes=[{"type": bad}]))
    assert problem.path == "changes[0].type"


def test_change_requires_type() -> None:
    [problem] = problems_of(alert_data(changes=[{"column": "a"}]))
    assert problem.path == "changes[0].type"
    assert problem.message == "missing required field 'type'"


# -- link, enums, event types ---------------------------------------------------------------------


@pytest.mark.parametrize("link", ["https://app.anomalyarmor.ai/a/1", "HTTPS://APP.EXAMPLE.COM/x"])
def test_https_link_accepted(link: str) -> None:
    assert one(alert_data(link=link)).link == link


@pytest.mark.parametrize("link", ["http://app.example.com/a/1", "javascript:alert(1)",
                                  "ftp://example.com/x", "app.example.com/a/1"])
def test_non_https_link_rejected(link: str) -> None:
    [problem] = problems_of(alert_data(link=link))
    assert problem.path == "link"
    assert "https" in problem.message


@pytest.mark.parametrize("event_type", BUILTIN_EVENT_TYPES)
def test_builtin_event_types_accepted(event_type: str) -> None:
    assert one(alert_data(event_type=event_type)).event_type == event_type


def test_builtin_event_types_are_the_documented_ones() -> None:
    assert set(BUILTIN_EVENT_TYPES) == {
        "schema_change", "freshness_violation", "metric_anomaly", "validity_failure",
        "discovery_failed", "asset_removed", "asset_discovered",
        "check_missing",  # raised by the check ledger (docs/checks.md)
    }


def test_unknown_event_type_rejected_with_suggestion() -> None:
    [problem] = problems_of(alert_data(event_type="schema_chnage"))
    assert problem.path == "event_type"
    assert "unknown event type 'schema_chnage'" in problem.message
    assert "(did you mean 'schema_change'?)" in problem.message


def test_unknown_event_type_without_close_match_lists_known_types() -> None:
    [problem] = problems_of(alert_data(event_type="zzz"))
    assert "did you mean" not in problem.message
    assert "freshness_violation" in problem.message


def test_plugin_event_type_needs_the_registry() -> None:
    from armor_notify.plugins import PluginManager

    registry = PluginManager().load().registry
    assert "dbt_test_failed" in registry.event_types
    # without the plugin's event types the alert is rejected...
    [problem] = problems_of(alert_data(event_type="dbt_test_failed"))
    assert problem.path == "event_type"
    # ...and with them it is accepted
    alert = one(alert_data(event_type="dbt_test_failed"), event_types=registry.event_types)
    assert alert.event_type == "dbt_test_failed"


def test_restricted_event_types_reject_builtins_not_listed() -> None:
    [problem] = problems_of(alert_data(event_type="schema_change"), event_types=["metric_anomaly"])
    assert problem.path == "event_type"


@pytest.mark.parametrize("status", ["triggered", "acknowledged", "resolved"])
def test_statuses_accepted(status: str) -> None:
    assert one(alert_data(status=status)).status == status


@pytest.mark.parametrize("status", ["open", "TRIGGERED", "closed", ""])
def test_unknown_status_rejected(status: str) -> None:
    [problem] = problems_of(alert_data(status=status))
    assert problem.path == "status"


@pytest.mark.parametrize("severity", ["info", "warning", "critical"])
def test_severities_accepted(severity: str) -> None:
    assert one(alert_data(severity=severity)).severity.value == severity


@pytest.mark.parametrize("severity", ["error", "high", "page", ""])
def test_unknown_severity_rejected(severity: str) -> None:
    [problem] = problems_of(alert_data(severity=severity))
    assert problem.path == "severity"


def test_severities_are_ordered() -> None:
    assert Severity.info.rank < Severity.warning.rank < Severity.critical.rank


# -- timestamps -----------------------------------------------------------------------------------


def test_naive_timestamp_is_taken_as_utc() -> None:
    alert = one(alert_data(occurred_at="2024-01-02T03:04:05"))
    assert alert.occurred_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert alert.occurred_at.utcoffset() == timedelta(0)


def test_timestamp_with_offset_keeps_its_instant() -> None:
    alert = one(alert_data(occurred_at="2024-01-02T05:04:05+02:00"))
    assert alert.occurred_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert alert.occurred_at.utcoffset() == timedelta(hours=2)


def test_invalid_timestamp_rejected() -> None:
    [problem] = problems_of(alert_data(occurred_at="yesterday"))
    assert problem.path == "occurred_at"


# -- freshness, dedup key -------------------------------------------------------------------------


def test_freshness_fields() -> None:
    alert = one(alert_data(event_type="freshness_violation",
                           freshness={"delay_hours": 3.5, "threshold_hours": 2,
                                      "last_updated_at": "2024-01-01T00:00:00Z"}))
    assert alert.freshness is not None
    assert alert.freshness.delay_hours == 3.5
    assert alert.freshness.threshold_hours == 2


def test_negative_delay_rejected() -> None:
    [problem] = problems_of(alert_data(event_type="freshness_violation",
                                       freshness={"delay_hours": -1}))
    assert problem.path == "freshness.delay_hours"


def test_dedup_key_longer_than_255_rejected() -> None:
    assert one(alert_data(dedup_key="k" * 255)).dedup_key == "k" * 255
    [problem] = problems_of(alert_data(dedup_key="k" * 256))
    assert problem.path == "dedup_key"


# -- asset names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "schema", "schema_name", "table_name"),
    [
        ("analytics.public.orders", None, "public", "orders"),
        ("public.orders", None, "public", "orders"),
        ("orders", None, None, "orders"),
        ("analytics.public.orders", "raw", "raw", "orders"),
    ],
)
def test_schema_and_table_names(name: str, schema: str | None, schema_name: str | None,
                                table_name: str) -> None:
    extra = {"schema": schema} if schema else {}
    asset = one(alert_data(asset=asset_data(name=name, **extra))).asset
    assert asset.schema_name == schema_name
    assert asset.table_name == table_name


# -- JSON text and files --------------------------------------------------------------------------


def test_parse_alerts_text_accepts_object_and_array() -> None:
    assert len(parse_alerts_text(json.dumps(alert_data()))) == 1
    assert len(parse_alerts_text(json.dumps([alert_data(), alert_data(), alert_data()]))) == 3


def test_invalid_json_reports_its_line() -> None:
    text = '[\n  {\n    "event_type": "schema_change",\n  }\n]\n'
    with pytest.raises(AlertError) as info:
        parse_alerts_text(text, source="alerts.json")
    [problem] = info.value.problems
    assert problem.file == "alerts.json"
    assert problem.line == 4
    assert problem.message.startswith("not valid JSON")
    assert str(problem).startswith("alerts.json:4: not valid JSON")


@pytest.mark.parametrize("text", ["[]", '"an alert"', "42", "null"])
def test_empty_array_and_non_objects_rejected(text: str) -> None:
    with pytest.raises(AlertError) as info:
        parse_alerts_text(text)
    [problem] = info.value.problems
    assert "non-empty array" in problem.message


def test_read_alerts_from_file(tmp_path: Path) -> None:
    path = tmp_path / "alert.json"
    path.write_text(json.dumps(alert_data(title="from a file")), encoding="utf-8")
    [alert] = read_alerts(str(path))
    assert alert.title == "from a file"


def test_read_alerts_problems_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "alert.json"
    path.write_text(json.dumps(alert_data(titel="typo")), encoding="utf-8")
    with pytest.raises(AlertError) as info:
        read_alerts(str(path))
    problems = by_path(info.value.problems)
    assert problems["titel"].file == str(path)


def test_read_alerts_missing_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.json")
    with pytest.raises(AlertError) as info:
        read_alerts(missing)
    [problem] = info.value.problems
    assert problem.file == missing
    assert "not found" in problem.message


def test_read_alerts_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps([alert_data(title="piped")])))
    [alert] = read_alerts("-")
    assert alert.title == "piped"


def test_read_alerts_stdin_problems_name_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("{"))
    with pytest.raises(AlertError) as info:
        read_alerts("-")
    assert info.value.problems[0].file == "<stdin>"


def test_read_alerts_passes_event_types(tmp_path: Path) -> None:
    path = tmp_path / "alert.json"
    path.write_text(json.dumps(alert_data(event_type="dbt_test_failed")), encoding="utf-8")
    with pytest.raises(AlertError):
        read_alerts(str(path))
    [alert] = read_alerts(str(path), event_types=[*BUILTIN_EVENT_TYPES, "dbt_test_failed"])
    assert alert.event_type == "dbt_test_failed"


def test_naive_freshness_timestamps_are_utc() -> None:
    from datetime import timezone

    from armor_notify.intake import parse_alerts

    (alert,) = parse_alerts({
        "event_type": "freshness_violation", "title": "late",
        "asset": {"id": "a", "name": "db.s.t"},
        "freshness": {"delay_hours": 3, "last_updated_at": "2026-11-26T05:12:00"},
    })
    assert alert.freshness is not None and alert.freshness.last_updated_at is not None
    assert alert.freshness.last_updated_at.tzinfo == timezone.utc


def test_json_lines_are_accepted_with_line_numbers_for_problems() -> None:
    from armor_notify.errors import AlertError
    from armor_notify.intake import parse_alerts_text

    line = '{"event_type": "schema_change", "title": "t", "asset": {"id": "a", "name": "d.s.t"}}'
    alerts = parse_alerts_text(f"{line}\n\n{line}\n", source="alerts.jsonl")
    assert len(alerts) == 2
    with pytest.raises(AlertError) as info:
        parse_alerts_text(f"{line}\n{{broken\n{line}\n", source="alerts.jsonl")
    (problem,) = info.value.problems
    assert problem.line == 2 and "JSON lines" in problem.message


def test_alert_input_streams_json_lines_and_reports_every_problem(tmp_path: Path) -> None:
    from armor_notify.errors import AlertError
    from armor_notify.intake import AlertInput

    good = json.dumps(alert_data())
    path = tmp_path / "alerts.jsonl"
    path.write_text(f"{good}\n\n{good}\n")
    with AlertInput(str(path)) as source:
        assert source.json_lines
        assert len(list(source)) == 2
        assert len(list(source)) == 2  # read again from the file, not kept
    path.write_text(f"{good}\n[1, 2]\n" + json.dumps(dict(alert_data(), severity="dire")) + "\n")
    with AlertInput(str(path)) as source, pytest.raises(AlertError) as info:
        source.check()
    first, second = info.value.problems
    assert (first.line, second.line, second.path) == (2, 3, "severity")
    assert "one alert object a line" in first.message


def test_alert_input_counts_problems_beyond_the_first_hundred(tmp_path: Path) -> None:
    from armor_notify.errors import AlertError
    from armor_notify.intake import MAX_PROBLEMS, AlertInput

    path = tmp_path / "alerts.jsonl"
    path.write_text(json.dumps(alert_data()) + "\n" + "{broken\n" * (MAX_PROBLEMS + 7))
    with AlertInput(str(path)) as source, pytest.raises(AlertError) as info:
        source.check()
    assert len(info.value.problems) == MAX_PROBLEMS + 1
    assert info.value.problems[-1].message == "and 7 more problems"


def test_a_pretty_printed_object_or_an_array_is_read_whole(tmp_path: Path) -> None:
    from armor_notify.intake import AlertInput

    for name, text in (("one.json", json.dumps(alert_data(), indent=2)),
                       ("many.json", json.dumps([alert_data(), alert_data()]))):
        path = tmp_path / name
        path.write_text(text)
        with AlertInput(str(path)) as source:
            assert not source.json_lines
            assert len(list(source)) == text.count('"event_type"')


def test_read_alerts_keeps_its_16_mib_limit_for_json_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from armor_notify import intake
    from armor_notify.errors import AlertError

    monkeypatch.setattr(intake, "MAX_INPUT_BYTES", 2000)
    path = tmp_path / "alerts.jsonl"
    path.write_text((json.dumps(alert_data()) + "\n") * 20)
    with pytest.raises(AlertError) as info:
        read_alerts(str(path))
    assert "larger than" in str(info.value)
    with intake.AlertInput(str(path)) as source:  # streaming has no total limit
        assert len(list(source)) == 20


def test_standard_input_is_spooled_within_a_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from armor_notify import intake
    from armor_notify.errors import AlertError

    line = json.dumps(alert_data()) + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(line * 3))
    with intake.AlertInput("-") as source:
        assert source.json_lines and len(list(source)) == 3
        assert len(list(source)) == 3  # read twice: from the spool
    monkeypatch.setattr(intake, "MAX_STDIN_BYTES", 2**20)
    monkeypatch.setattr("sys.stdin", io.StringIO(line * (2**20 // len(line) + 1)))
    with pytest.raises(AlertError) as info:
        intake.AlertInput("-")
    assert "standard input is larger than" in str(info.value)
    monkeypatch.setattr(intake, "MAX_INPUT_BYTES", 1000)
    monkeypatch.setattr("sys.stdin", io.StringIO(line * 100))
    with pytest.raises(AlertError) as info:
        read_alerts("-")
    assert "larger than" in str(info.value)
