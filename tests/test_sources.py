"""Alert sources (issue 16): the ``register_sources`` hook, ``--source`` on the command line and
the API, the conformance suite in the test kit, and the built-in ``alertmanager`` source."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from armor_notify_plugins.alertmanager import ALERTMANAGER
from conftest import EXAMPLES, run_cli
from fake_pagerduty import FakePagerDuty

from armor_notify.errors import AlertError, PluginError
from armor_notify.intake import read_source
from armor_notify.sources import Source, SourceAlert, SourceError, SourceInput
from armor_notify.testing import (
    SourceConformance,
    build_notifier,
    inline_plugin,
    plugin_manager,
)

PAYLOAD = EXAMPLES / "sources" / "alertmanager_webhook.json"
PD_KEY = "0123456789abcdef0123456789abcdef"


def payload(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(PAYLOAD.read_text())
    data.update(changes)
    return data


def as_input(data: Any) -> SourceInput:
    return SourceInput.from_bytes(json.dumps(data).encode(), "hook.json")


# -- the built-in alertmanager source, through the kit's conformance suite --------------------------


class TestAlertmanagerConformance(SourceConformance):
    def source(self) -> Source:
        return ALERTMANAGER

    def good_inputs(self) -> list[tuple[SourceInput, int]]:
        return [(SourceInput.from_path(PAYLOAD), 2), (as_input(payload(alerts=[])), 0),
                (SourceInput.from_bytes(PAYLOAD.read_bytes(), "POST /alertmanager"), 2)]

    def bad_inputs(self) -> list[tuple[SourceInput, str]]:
        broken = payload()
        broken["alerts"][1]["status"] = "pending"
        no_print = payload()
        del no_print["alerts"][0]["fingerprint"]
        return [(as_input(payload(version="3")), "version"), (as_input(broken), "alerts[1].status"),
                (as_input(no_print), "alerts[0].fingerprint"),
                (as_input([1, 2]), "webhook payload")]


class TestNagiosConformance(SourceConformance):
    """The third-party source in tests/site passes the same suite."""

    def source(self) -> Source:
        import armor_notify_nagios

        return armor_notify_nagios.NAGIOS  # type: ignore[no-any-return]

    def good_inputs(self) -> list[tuple[SourceInput, int]]:
        data = {"notifications": [{"host": "db1", "service": "disk", "state": "CRITICAL"}]}
        return [(as_input(data), 1)]

    def bad_inputs(self) -> list[tuple[SourceInput, str]]:
        return [(as_input({"notifications": [{"service": "disk"}]}), "notifications[0]")]


# -- the alertmanager mapping -----------------------------------------------------------------------


def test_firing_and_resolved_alerts_map_to_triggered_and_resolved() -> None:
    firing, resolved = read_source(ALERTMANAGER, SourceInput.from_path(PAYLOAD))
    assert firing.status == "triggered" and resolved.status == "resolved"
    assert firing.id == "alertmanager:8d6a1c0c2f1e9b3a:2026-11-30T10:00:00Z"
    assert firing.dedup_key == "alertmanager-8d6a1c0c2f1e9b3a"
    assert firing.event_type == "freshness_violation"  # from its event_type label
    assert resolved.event_type == "metric_anomaly"  # the default
    assert firing.severity.value == "critical" and resolved.severity.value == "warning"
    assert firing.title == "analytics.public.orders has not been loaded for 6 hours"
    assert firing.description and "threshold is 2 hours" in firing.description
    asset = firing.asset
    assert (asset.id, asset.name, asset.data_source, asset.environment) == (
        "ast_orders_01", "analytics.public.orders", "warehouse-prod", "production")
    assert asset.tags == ("gold", "finance", "team=data-platform")
    assert firing.freshness is not None and firing.freshness.delay_hours == 6.0
    assert firing.freshness.threshold_hours == 2.0 and resolved.freshness is None
    assert firing.link and firing.link.startswith("https://prometheus.example.com/")
    assert resolved.link is None  # Prometheus's plain-http link is not an alert link
    assert resolved.occurred_at.isoformat() == "2026-11-30T09:30:00+00:00"  # its endsAt


def test_a_resolve_carries_the_id_and_dedup_key_of_its_trigger() -> None:
    firing = payload()
    resolved = copy.deepcopy(firing)
    resolved["alerts"][0].update(status="resolved", endsAt="2026-11-30T11:00:00Z")
    (trigger, _), (resolve, _) = (read_source(ALERTMANAGER, as_input(p)) for p in (firing, resolved))
    assert (trigger.id, trigger.dedup_key) == (resolve.id, resolve.dedup_key)
    assert (trigger.status, resolve.status) == ("triggered", "resolved")
    again = copy.deepcopy(firing)  # the same alert firing again later: a new alert, same incident
    again["alerts"][0]["startsAt"] = "2026-12-01T10:00:00Z"
    (later, _) = read_source(ALERTMANAGER, as_input(again))
    assert later.id != trigger.id and later.dedup_key == trigger.dedup_key


def test_severity_labels_map_as_documented() -> None:
    for label, severity in [("page", "critical"), ("ERROR", "critical"), ("warn", "warning"),
                            ("none", "info"), ("whatever", "warning")]:
        data = payload()
        data["alerts"] = [data["alerts"][1]]
        data["alerts"][0]["labels"]["severity"] = label
        (alert,) = read_source(ALERTMANAGER, as_input(data))
        assert alert.severity.value == severity, label


def test_what_the_source_makes_is_validated_with_its_place() -> None:
    data = payload()
    data["alerts"][0]["labels"]["event_type"] = "dbt_test_failled"
    data["alerts"][1]["annotations"]["summary"] = "x" * 0 + "   "  # blank after stripping
    data["alerts"][1]["labels"]["alertname"] = ""
    with pytest.raises(AlertError) as caught:
        read_source(ALERTMANAGER, as_input(data))
    text = "\n".join(str(p) for p in caught.value.problems)
    assert "hook.json: alerts[0].event_type: unknown event type 'dbt_test_failled'" in text
    assert "(as made by the alertmanager source)" in text


def test_problems_in_the_payload_are_all_reported_with_their_places() -> None:
    data = payload()
    data["alerts"][0]["labels"] = {"alertname": 3}
    data["alerts"][1]["startsAt"] = None
    with pytest.raises(SourceError) as caught:
        read_source(ALERTMANAGER, as_input(data))
    places = [p.path for p in caught.value.problems]
    assert places == ["alerts[0].labels", "alerts[1].startsAt"]


# -- the plugin machinery ---------------------------------------------------------------------------


def echo_source(name: str = "echo", read: Any = None) -> Source:
    def default(given: SourceInput) -> list[SourceAlert]:
        return [SourceAlert(f"[{i}]", item) for i, item in enumerate(given.read_json())]

    return Source(name, "alerts as they are", read or default)


def test_two_plugins_registering_one_source_name_is_an_error_naming_both() -> None:
    with pytest.raises(PluginError, match="source 'echo' is registered by both plugin "
                                          "'inline-0' and plugin 'inline-1'"):
        plugin_manager(inline_plugin(echo_source()), inline_plugin(echo_source()))


def test_a_source_name_must_be_a_lower_case_identifier() -> None:
    with pytest.raises(PluginError, match="registered source 'Not-OK': use a lower-case"):
        plugin_manager(echo_source("Not-OK"))


def test_a_source_that_breaks_is_named_and_nothing_is_sent() -> None:
    def broken(given: SourceInput) -> list[SourceAlert]:
        raise KeyError("labels")

    with pytest.raises(AlertError, match="the echo source failed: KeyError: 'labels'"):
        read_source(echo_source(read=broken), as_input([]))
    with pytest.raises(AlertError, match="the echo source returned dict, not SourceAlert"):
        read_source(echo_source(read=lambda given: [{"id": 1}]), as_input([]))


def test_a_directory_is_refused_by_a_source_that_reads_files(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is a directory; the alertmanager source reads file"):
        read_source(ALERTMANAGER, SourceInput.from_path(tmp_path))


# -- the API and the command line -------------------------------------------------------------------


@pytest.fixture
def pagerduty() -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as fake:
        yield fake


def test_a_resolve_from_alertmanager_closes_the_incident_its_trigger_opened(
        pagerduty: FakePagerDuty, tmp_path: Path) -> None:
    config = {"version": 1, "destinations": {
        "pd": {"type": "pagerduty", "integration_key": PD_KEY, "url": pagerduty.url}},
        "rules": [{"name": "Prometheus", "event": ["freshness_violation", "metric_anomaly"],
                   "destinations": ["pd"]}]}
    firing = payload()
    firing["alerts"] = firing["alerts"][:1]
    resolved = copy.deepcopy(firing)
    resolved["status"] = "resolved"
    resolved["alerts"][0].update(status="resolved", endsAt="2026-11-30T11:00:00Z")
    with build_notifier(config, installed=True) as notifier:
        for data in (firing, resolved):
            report = notifier.send(notifier.read_source("alertmanager", as_input(data)))
            assert report.exit_code == 0, [d.reason for d in report.deliveries]
    actions = [(e["event_action"], e["dedup_key"]) for e in pagerduty.events]
    assert actions == [("trigger", "alertmanager-8d6a1c0c2f1e9b3a"),
                       ("resolve", "alertmanager-8d6a1c0c2f1e9b3a")]
    assert not any(r.schema_errors for r in pagerduty.requests)


@pytest.mark.slow
def test_send_and_route_take_a_source_on_the_command_line(pagerduty: FakePagerDuty,
                                                          tmp_path: Path) -> None:
    config = tmp_path / "armor-notify.yaml"
    config.write_text(json.dumps({"version": 1, "destinations": {
        "pd": {"type": "pagerduty", "integration_key": PD_KEY, "url": pagerduty.url}},
        "rules": [{"name": "All", "event": ["freshness_violation", "metric_anomaly"],
                   "destinations": ["pd"]}]}))
    routed = run_cli("route", str(PAYLOAD), "--source", "alertmanager", "-c", str(config),
                     "--json")
    assert routed.returncode == 0, routed.stderr
    alerts = json.loads(routed.stdout)["alerts"]
    assert [a["alert_id"] for a in alerts] == [
        "alertmanager:8d6a1c0c2f1e9b3a:2026-11-30T10:00:00Z",
        "alertmanager:3f2b9c1d7a6e5b4c:2026-11-30T08:00:00Z"]
    sent = run_cli("send", "-", "--source", "alertmanager", "-c", str(config),
                   stdin=PAYLOAD.read_text())
    assert sent.returncode == 0, sent.stderr
    # Two different alerts of one payload, sent at once: in either order.
    assert sorted((e["event_action"], e["dedup_key"]) for e in pagerduty.events) == [
        ("resolve", "alertmanager-3f2b9c1d7a6e5b4c"), ("trigger", "alertmanager-8d6a1c0c2f1e9b3a")]
    wrong = run_cli("send", str(PAYLOAD), "--source", "alertmanagr", "-c", str(config))
    assert wrong.returncode == 2
    assert "unknown source 'alertmanagr' (did you mean 'alertmanager'?)" in wrong.stderr
    assert "Traceback" not in wrong.stderr


@pytest.mark.slow
def test_plugins_lists_sources_with_a_third_party_one_installed_from_a_package() -> None:
    listed = run_cli("plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    plugins = {p["name"]: p for p in json.loads(listed.stdout)["plugins"]}
    assert plugins["alertmanager"]["sources"] == ["alertmanager"]
    assert plugins["alertmanager"]["builtin"]
    assert plugins["nagios"]["sources"] == ["nagios"]
    assert plugins["nagios"]["distribution"] == "armor-notify-nagios"
    table = run_cli("plugins").stdout
    assert "SOURCES" in table and "nagios" in table
