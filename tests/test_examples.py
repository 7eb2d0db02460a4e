"""The examples a new user runs first: the config validates and every sample routes as documented."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import EXAMPLES, ROOT

from armor_notify.api import Notifier
from armor_notify.plugins import PluginManager

pytestmark = pytest.mark.slow  # these tests start processes

ENV = {
    "PAGERDUTY_INTEGRATION_KEY": "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX",
    "SLACK_DEV_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B111/YYYYYYYYYYYYYYYY",
    "SMTP_PASSWORD": "pw",
}

PD, SLACK, DEV, EMAIL = ("pagerduty-data-platform", "slack-data-incidents", "slack-data-dev",
                         "email-data-eng")
EXPECTED = {
    "schema_change_breaking.json": ("Production Breaking Changes", [PD, SLACK, EMAIL]),
    "schema_change_resolved.json": ("Production Breaking Changes", [PD, SLACK, EMAIL]),
    "schema_change_additive.json": ("Production Schema Additions", [SLACK, EMAIL]),
    "schema_change_dev.json": ("Development Changes", [DEV]),
    "freshness_violation.json": ("Gold Table Freshness SLA", [PD, SLACK]),
    "freshness_minor.json": (None, []),
    "metric_anomaly.json": ("Production Data Quality", [SLACK]),
    "validity_failure.json": ("Production Data Quality", [SLACK]),
    "discovery_failed.json": ("Discovery and Inventory", [SLACK, EMAIL]),
    "asset_removed.json": ("Discovery and Inventory", [SLACK, EMAIL]),
    "asset_discovered.json": ("Discovery and Inventory", [SLACK, EMAIL]),
}


@pytest.fixture
def notifier() -> Notifier:
    text = (EXAMPLES / "armor-notify.yaml").read_text()
    return Notifier.from_yaml(text, plugins=PluginManager().load(), environ=ENV)


def test_every_sample_alert_has_an_expectation() -> None:
    samples = {p.name for p in (EXAMPLES / "alerts").glob("*.json")} - {"batch.json"}
    assert samples == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_alert_routes_as_documented(notifier: Notifier, name: str) -> None:
    rule, destinations = EXPECTED[name]
    (alert,) = notifier.read_alerts(str(EXAMPLES / "alerts" / name))
    routes = notifier.route(alert)
    assert [r.destination for r in routes] == destinations
    assert {r.rule for r in routes} == ({rule} if rule else set())


def test_the_resolved_sample_shares_the_trigger_dedup_key_and_skips_email(notifier: Notifier) -> None:
    (trigger,) = notifier.read_alerts(str(EXAMPLES / "alerts" / "schema_change_breaking.json"))
    (resolved,) = notifier.read_alerts(str(EXAMPLES / "alerts" / "schema_change_resolved.json"))
    assert [r.dedup_key for r in notifier.route(trigger)] == [
        r.dedup_key for r in notifier.route(resolved)]
    states = {d.destination: d.state.value for d in notifier.send(resolved, dry_run=True).deliveries}
    assert states == {PD: "skipped", SLACK: "skipped", EMAIL: "suppressed"}


def test_the_batch_holds_one_alert_per_sample(notifier: Notifier) -> None:
    alerts = notifier.read_alerts(str(EXAMPLES / "alerts" / "batch.json"))
    assert len(alerts) == len(json.loads((EXAMPLES / "alerts" / "batch.json").read_text()))
    assert {a.event_type for a in alerts} >= {
        "schema_change", "freshness_violation", "metric_anomaly", "validity_failure",
        "discovery_failed", "asset_removed", "asset_discovered"}


def test_run_script_is_the_readme_main_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "bash examples/run.sh" in readme
    assert ".venv/bin/pytest" in readme
    script = (EXAMPLES / "run.sh").read_text()
    assert "send examples/alerts/batch.json" in script and "--dry-run" in script
    subprocess.run(["bash", "-n", str(EXAMPLES / "run.sh")], check=True)


def test_the_templates_example_previews_the_breaking_change() -> None:
    text = (EXAMPLES / "templates" / "armor-notify.yaml").read_text()
    env = {**ENV, "SLACK_BOT_TOKEN": "xoxb-1111-2222-abcdefabcdefabcdefabcdef"}
    with Notifier.from_yaml(text, plugins=PluginManager().load(), environ=env) as nt:
        alert = nt.parse_alerts(json.loads((EXAMPLES / "alerts" /
                                            "schema_change_breaking.json").read_text()))
        shown = {p["destination"]: p["payload"] for p in nt.preview(alert)}
    assert shown[PD]["event"]["payload"]["summary"] == (
        "[production] 2 breaking schema changes on analytics.public.orders")
    slack = shown[SLACK]
    assert slack["request"] == "POST https://slack.com/api/chat.postMessage"
    assert slack["payload"]["channel"] == "#data-incidents"
    assert [b["type"] for b in slack["payload"]["blocks"]] == ["header", "section", "section",
                                                                "context"]
    assert shown[EMAIL]["headers"]["Subject"] == (
        "[CRITICAL] analytics.public.orders: 2 breaking schema changes on analytics.public.orders")
    assert "- Column removed: customer_id — breaking\n" in shown[EMAIL]["text"]
    assert "xoxb-1111" not in json.dumps(shown)
