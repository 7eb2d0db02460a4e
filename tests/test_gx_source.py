"""The ``great_expectations`` source against results a real Great Expectations 1.x run wrote
(``examples/sources/great_expectations/``, made by the ``generate.py`` beside them)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from armor_notify_plugins.great_expectations import GREAT_EXPECTATIONS as GX
from conftest import EXAMPLES, run_cli

from armor_notify.alert import Alert
from armor_notify.intake import read_source
from armor_notify.sources import Source, SourceError, SourceInput
from armor_notify.testing import SourceConformance

HERE = EXAMPLES / "sources" / "great_expectations"
CHECKPOINT = HERE / "checkpoint_result.json"
VALIDATION = HERE / "validation_result.json"


def data(path: Path = VALIDATION) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def as_input(value: Any) -> SourceInput:
    return SourceInput.from_bytes(json.dumps(value).encode(), "result.json")


class TestGreatExpectationsConformance(SourceConformance):
    def source(self) -> Source:
        return GX

    def good_inputs(self) -> list[tuple[SourceInput, int]]:
        passing = data()
        passing["success"] = True
        # Every validation is a check result (passes too: they resolve).
        return [(SourceInput.from_path(CHECKPOINT), 2), (SourceInput.from_path(VALIDATION), 1),
                (as_input([data(), data()]), 2), (as_input(passing), 1),
                (SourceInput.from_path(HERE), 3)]  # a directory: both files

    def bad_inputs(self) -> list[tuple[SourceInput, str]]:
        no_asset = data()
        del no_asset["meta"]["active_batch_definition"]
        return [(as_input({"results": 3}), "expected a validation result"),
                (as_input(no_asset), "names no data asset"),
                (as_input({"run_results": {"x": []}}), "run_results['x']")]


def test_a_failed_suite_is_one_alert_listing_its_failed_expectations() -> None:
    passed: list[Alert] = []
    (alert,) = read_source(GX, SourceInput.from_path(CHECKPOINT), passed=passed)
    assert alert.id == "gx:warehouse/orders:orders_quality"
    assert (alert.event_type, alert.status, alert.severity.value) == (
        "validity_failure", "triggered", "critical")
    assert alert.title == "orders_quality failed on orders: 2 of 3 expectations"
    assert alert.description == (
        "Failed expectations:\n"
        "- expect_column_values_to_not_be_null on customer_id: 1 of 5 rows\n"
        "- expect_column_values_to_be_in_set on status: 1 of 5 rows")
    assert (alert.asset.id, alert.asset.name, alert.asset.data_source) == (
        "warehouse/orders", "orders", "warehouse")
    assert alert.dedup_key == "gx-warehouse/orders-orders_quality"
    assert [p.id for p in passed] == ["gx:warehouse/orders:orders_volume"]  # kept, not sent


def test_values_of_the_data_never_reach_the_alert() -> None:
    (alert,) = read_source(GX, SourceInput.from_path(VALIDATION))
    text = alert.model_dump_json()
    assert "lost_in_transit" in VALIDATION.read_text()  # GX's result holds the failing value
    assert "lost_in_transit" not in text


def test_the_severity_is_the_highest_of_the_failed_expectations() -> None:
    result = data()
    for item in result["results"]:
        item["expectation_config"]["severity"] = "warning"
    (alert,) = read_source(GX, as_input(result))
    assert alert.severity.value == "warning"
    mixed = copy.deepcopy(result)
    mixed["results"][1]["expectation_config"]["severity"] = "critical"
    (alert,) = read_source(GX, as_input(mixed))
    assert alert.severity.value == "critical"


def test_ids_are_the_same_for_every_run_of_a_suite_on_an_asset() -> None:
    later = data()
    later["meta"]["validation_time"] = "2026-12-01T00:00:00+00:00"
    later["meta"]["run_id"] = {"run_name": "tomorrow", "run_time": "2026-12-01T00:00:00+00:00"}
    (first,) = read_source(GX, SourceInput.from_path(VALIDATION))
    (second,) = read_source(GX, as_input(later))
    assert (first.id, first.dedup_key) == (second.id, second.dedup_key)
    assert first.occurred_at != second.occurred_at


def test_an_empty_directory_says_so(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no validation results"):
        read_source(GX, SourceInput.from_path(tmp_path))


@pytest.mark.slow
def test_routed_from_the_command_line(tmp_path: Path) -> None:
    config = tmp_path / "armor-notify.yaml"
    config.write_text(json.dumps({"version": 1, "destinations": {
        "pd": {"type": "pagerduty", "integration_key": "0123456789abcdef0123456789abcdef"}},
        "rules": [{"name": "Data quality", "event": "validity_failure",
                   "scope": {"data_sources": ["warehouse"]}, "destinations": ["pd"]}]}))
    routed = run_cli("route", str(CHECKPOINT), "--source", "great_expectations", "-c",
                     str(config), "--json")
    assert routed.returncode == 0, routed.stderr
    alert, passing = json.loads(routed.stdout)["alerts"]
    assert passing["check"]["note"] == "check passing: nothing to send"  # orders_volume passed
    assert alert["matching_rules"] == ["Data quality"]
    assert alert["routes"][0]["dedup_key"] == "gx-warehouse/orders-orders_quality"
