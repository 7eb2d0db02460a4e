"""The shared message content (``armor_notify.message``, plugin API) that every destination shows."""

from __future__ import annotations

import ast
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import armor_notify.message
from armor_notify import Alert, Notification
from armor_notify.alert import BUILTIN_EVENT_TYPES
from armor_notify.message import (
    DEFAULT_MAX_CHANGES,
    ChangeLine,
    Field,
    and_more,
    build_message,
    event_label,
    event_noun,
    format_time,
    one_line,
)


def make_alert(**overrides: Any) -> Alert:
    data: dict[str, Any] = {
        "id": "alert_abc123",
        "event_type": "schema_change",
        "severity": "critical",
        "title": "Columns removed from orders",
        "description": "Dropped by the nightly migration.",
        "asset": {
            "id": "asset-42",
            "name": "analytics.public.orders",
            "data_source": "warehouse-prod",
            "environment": "production",
        },
        "changes": [
            {"type": "column_added", "column": "discount_code", "to": "varchar"},
            {"type": "column_removed", "column": "customer_email", "from": "varchar"},
            {"type": "column_renamed", "column": "total", "from": "amount"},
            {"type": "type_changed", "column": "qty", "from": "int", "to": "text"},
            {"type": "table_added"},
        ],
        "link": "https://app.anomalyarmor.ai/alerts/alert_abc123",
        "occurred_at": "2024-05-01T14:34:56+02:00",
    }
    data.update(overrides)
    return Alert.model_validate(data)


def make_notification(alert: Alert | None = None, *, test: bool = False) -> Notification:
    return Notification(
        alert=alert or make_alert(),
        destination="slack-data-incidents",
        rule="Production Breaking Changes",
        dedup_key="anomalyarmor-x",
        source="anomalyarmor",
        link_text="View in AnomalyArmor",
        timeout=5.0,
        test=test,
    )


def test_triggered_message_has_every_part() -> None:
    message = build_message(make_notification())
    assert message.state == "triggered"
    assert message.headline == "CRITICAL · Schema change"
    assert message.title == "Columns removed from orders"
    assert message.summary == "CRITICAL · Schema change: Columns removed from orders"
    assert message.fields == (
        Field("Rule", "Production Breaking Changes"),
        Field("Event type", "schema_change"),
        Field("Asset", "analytics.public.orders"),
        Field("Severity", "critical"),
        Field("Data source", "warehouse-prod"),
        Field("Environment", "production"),
    )
    assert message.description == "Dropped by the nightly migration."
    assert message.changes_summary == "5 changes (3 breaking)"
    assert message.link == "https://app.anomalyarmor.ai/alerts/alert_abc123"
    assert message.link_text == "View in AnomalyArmor"
    assert message.time_text == "2024-05-01 12:34 UTC"
    assert message.alert_id == "alert_abc123"
    assert message.test is False and message.test_notice is None
    assert message.freshness is None


def test_change_lines_put_breaking_changes_first_in_plain_words() -> None:
    message = build_message(make_notification())
    assert message.change_lines() == [
        "Column removed: customer_email (was varchar) — breaking",
        "Column renamed: total (was amount) — breaking",
        "Type changed: qty (int → text) — breaking",
        "Column added: discount_code (varchar)",
        "Table added",
    ]
    assert message.more_changes == 0
    assert message.changes[0] == ChangeLine("Column removed", "customer_email", "was varchar", True)


def test_long_change_lists_end_with_and_n_more() -> None:
    changes = [{"type": "column_added", "column": f"c{i}"} for i in range(25)]
    message = build_message(make_notification(make_alert(changes=changes)))
    assert len(message.changes) == DEFAULT_MAX_CHANGES
    assert message.more_changes == 25 - DEFAULT_MAX_CHANGES
    assert message.change_lines()[-1] == "and 15 more"
    assert len(message.change_lines()) == DEFAULT_MAX_CHANGES + 1

    few = build_message(make_notification(make_alert(changes=changes)), max_changes=3)
    assert [c.column for c in few.changes] == ["c0", "c1", "c2"]
    assert few.change_lines()[-1] == and_more(22) == "and 22 more"

    none_listed = build_message(make_notification(make_alert(changes=changes)), max_changes=0)
    assert none_listed.change_lines() == ["and 25 more"]


def test_no_changes_means_no_change_summary() -> None:
    message = build_message(make_notification(make_alert(changes=[])))
    assert message.changes == () and message.changes_summary is None
    assert message.change_lines() == []
    one = build_message(make_notification(make_alert(changes=[{"type": "column_added"}])))
    assert one.changes_summary == "1 change"


@pytest.mark.parametrize(
    ("status", "headline"),
    [("resolved", "Resolved · Schema change"), ("acknowledged", "Acknowledged · Schema change")],
)
def test_resolved_and_acknowledged_forms(status: str, headline: str) -> None:
    message = build_message(make_notification(make_alert(status=status)))
    assert message.state == status
    assert message.headline == headline
    assert message.summary == f"{headline}: Columns removed from orders"


def test_test_notification_says_so() -> None:
    message = build_message(make_notification(test=True))
    assert message.test is True
    assert message.headline == "[Test] CRITICAL · Schema change"
    assert message.test_notice is not None
    assert "test notification" in message.test_notice
    assert "'slack-data-incidents'" in message.test_notice


def test_optional_parts_are_left_out() -> None:
    alert = make_alert(
        asset={"id": "a", "name": "orders"}, description="   ", link=None, severity="info"
    )
    message = build_message(make_notification(alert))
    assert [f.label for f in message.fields] == ["Rule", "Event type", "Asset", "Severity"]
    assert message.description is None
    assert message.link is None
    assert message.headline == "INFO · Schema change"


@pytest.mark.parametrize(
    ("freshness", "line"),
    [
        ({"delay_hours": 5, "threshold_hours": 2}, "Data is 5 hours late (threshold 2 hours)"),
        ({"delay_hours": 1}, "Data is 1 hour late"),
        ({"delay_hours": 0.5}, "Data is 30 minutes late"),
        ({"delay_hours": 26.25}, "Data is 26.2 hours late"),
        (
            {"delay_hours": 3, "last_updated_at": "2024-05-01T09:00:00Z"},
            "Data is 3 hours late; last updated 2024-05-01 09:00 UTC",
        ),
    ],
)
def test_freshness_line(freshness: dict[str, Any], line: str) -> None:
    alert = make_alert(event_type="freshness_violation", changes=[], freshness=freshness)
    message = build_message(make_notification(alert))
    assert message.freshness == line
    assert message.event == "Freshness violation"


def test_event_labels() -> None:
    assert event_label("schema_change") == "Schema change"
    assert event_label("asset_discovered") == "New asset discovered"
    assert event_label("dbt_test_failed") == "Dbt test failed"


@pytest.mark.parametrize(
    ("event_type", "one", "many"),
    [
        ("schema_change", "schema change", "schema changes"),
        ("metric_anomaly", "metric anomaly", "metric anomalies"),
        ("discovery_failed", "discovery failure", "discovery failures"),
        ("asset_discovered", "new asset", "new assets"),
        ("dbt_test_failed", "dbt test failed", "dbt test failed"),
    ],
)
def test_event_nouns_for_one_and_many(event_type: str, one: str, many: str) -> None:
    assert event_noun(event_type, 1) == one
    assert event_noun(event_type, 3) == many


def test_every_built_in_event_type_has_its_own_words() -> None:
    # Only a plugin's event type is worded from its name: a plural noun shows the table has it.
    for event_type in BUILTIN_EVENT_TYPES:
        assert event_noun(event_type, 2) != event_type.replace("_", " "), event_type


def test_the_plugin_api_is_documented() -> None:
    # armor_notify.message is part of the plugin API: every public name exists and says what it is.
    for name in armor_notify.message.__all__:
        value = getattr(armor_notify.message, name)
        if callable(value):
            assert value.__doc__ and value.__doc__.strip(), name
    assert armor_notify.message.__doc__ and "plugin API" in armor_notify.message.__doc__


PLUGIN_API = {"armor_notify", "armor_notify.http", "armor_notify.secrets", "armor_notify.message",
              "armor_notify.sources", "armor_notify.templates",
              "armor_notify.testing"}


def test_the_built_in_destinations_use_only_the_plugin_api() -> None:
    # Built-ins read like third-party plugins: what they need from the core, a plugin may use too.
    plugins = Path(__file__).parent.parent / "plugins"
    used: dict[str, str] = {}
    for path in sorted(plugins.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            used.update((name, path.name) for name in names if name.startswith("armor_notify"))
    assert used and set(used) <= PLUGIN_API, {n: p for n, p in used.items() if n not in PLUGIN_API}


def test_one_line_makes_any_text_fit_a_subject_or_header() -> None:
    assert one_line("Columns removed\r\nfrom  orders\u2028(prod)\n") == "Columns removed from orders (prod)"


def test_times_are_shown_in_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert format_time(datetime(2024, 5, 1, 14, 34, tzinfo=plus_two)) == "2024-05-01 12:34 UTC"
    assert format_time(datetime(2024, 5, 1, 14, 34)) == "2024-05-01 14:34 UTC"


def test_nothing_is_escaped() -> None:
    hostile = "<!channel> & <b>bold</b> *x*"
    alert = make_alert(title=hostile, description=hostile, asset={"id": "a", "name": hostile},
                       changes=[{"type": "column_removed", "column": hostile}])
    message = build_message(make_notification(alert))
    assert message.title == hostile
    assert message.description == hostile
    assert Field("Asset", hostile) in message.fields
    assert message.changes[0].column == hostile
