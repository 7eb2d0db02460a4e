"""Matching alerts to rules and routing them to destinations (SPEC §3), and dedup keys (SPEC §4)."""

from __future__ import annotations

import random
from typing import Any

import pytest
import yaml

from armor_notify import matching
from armor_notify.alert import Alert
from armor_notify.config import parse_config
from armor_notify.dedup import dedup_key
from armor_notify.intake import parse_alerts
from armor_notify.matching import Route, Router, Rule
from armor_notify.plugins import Registry
from armor_notify.rules import RuleModel

DESTINATIONS = ("d1", "d2", "d3")


def rule(name: str = "r", event: Any = "schema_change", destinations: Any = ("d1",),
         **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "event": list(event) if isinstance(event, tuple) else event,
        "destinations": list(destinations) if isinstance(destinations, tuple) else destinations,
    }
    data.update(extra)
    return data


def make_router(registry: Registry, *rules: dict[str, Any]) -> Router:
    """A router from a real config file (YAML text through parse_config) with scripted destinations."""
    text = yaml.safe_dump({
        "version": 1,
        "destinations": {name: {"type": "scripted"} for name in DESTINATIONS},
        "rules": list(rules),
    }, sort_keys=False)
    return parse_config(text, registry, source="test.yaml", environ={}).router


def make_alert(registry: Registry, event_type: str = "schema_change", *,
               asset: dict[str, Any] | None = None, **fields: Any) -> Alert:
    data: dict[str, Any] = {
        "event_type": event_type,
        "title": "something happened",
        "asset": {"id": "asset-1", "name": "analytics.public.orders", **(asset or {})},
        **fields,
    }
    [alert] = parse_alerts(data, registry.event_types)
    return alert


def matched(registry: Registry, alert: Alert, **rule_fields: Any) -> bool:
    router = make_router(registry, rule(**rule_fields))
    return [r.name for r in router.matching_rules(alert)] == ["r"]


def routes_by_destination(routes: list[Route]) -> dict[str, Route]:
    out = {r.destination: r for r in routes}
    assert len(out) == len(routes), f"a destination is routed twice: {routes}"
    return out


# -- event types ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("event_type", "expected"),
                         [("schema_change", True), ("metric_anomaly", True),
                          ("freshness_violation", False), ("asset_removed", False)])
def test_event_type_list(registry: Registry, event_type: str, expected: bool) -> None:
    alert = make_alert(registry, event_type)
    assert matched(registry, alert, event=["schema_change", "metric_anomaly"]) is expected


def test_single_event_type(registry: Registry) -> None:
    assert matched(registry, make_alert(registry, "asset_removed"), event="asset_removed")
    assert not matched(registry, make_alert(registry, "asset_discovered"), event="asset_removed")


def test_plugin_event_type_rule(registry: Registry) -> None:
    alert = make_alert(registry, "dbt_test_failed")
    assert matched(registry, alert, event="dbt_test_failed")
    assert not matched(registry, alert, event="validity_failure")


def test_event_listed_twice_is_evaluated_once(registry: Registry) -> None:
    router = make_router(registry, rule(event=["schema_change", "schema_change"]))
    assert [r.name for r in router.matching_rules(make_alert(registry))] == ["r"]


# -- scope ----------------------------------------------------------------------------------------

SCOPE_CASES = [
    # environments
    ("env-listed", {"environments": ["production"]}, {"environment": "production"}, True),
    ("env-case", {"environments": ["production"]}, {"environment": "PRODUCTION"}, True),
    ("env-pattern-case", {"environments": ["Prod*"]}, {"environment": "production"}, True),
    ("env-other", {"environments": ["production"]}, {"environment": "staging"}, False),
    ("env-prefix-only", {"environments": ["prod"]}, {"environment": "production"}, False),
    ("env-string-shorthand", {"environments": "production"}, {"environment": "production"}, True),
    ("env-excluded", {"environments": {"include": ["*"], "exclude": ["dev*"]}},
     {"environment": "Development"}, False),
    ("env-not-excluded", {"environments": {"include": ["*"], "exclude": ["dev*"]}},
     {"environment": "production"}, True),
    ("env-include-absent", {"environments": ["production"]}, {}, False),
    ("env-include-star-absent", {"environments": {"include": ["*"]}}, {}, False),
    ("env-exclude-only-absent", {"environments": {"exclude": ["dev"]}}, {}, True),
    ("env-exclude-only-hit", {"environments": {"exclude": ["dev"]}}, {"environment": "DEV"}, False),
    # data sources
    ("ds-glob", {"data_sources": ["warehouse-*"]}, {"data_source": "warehouse-eu"}, True),
    ("ds-glob-case", {"data_sources": ["warehouse-*"]}, {"data_source": "WAREHOUSE-EU"}, True),
    ("ds-glob-miss", {"data_sources": ["warehouse-*"]}, {"data_source": "lake-1"}, False),
    ("ds-include-exclude", {"data_sources": {"include": ["warehouse-*"], "exclude": ["*-test"]}},
     {"data_source": "warehouse-test"}, False),
    ("ds-include-absent", {"data_sources": ["warehouse-*"]}, {}, False),
    ("ds-exclude-only-absent", {"data_sources": {"exclude": ["*-test"]}}, {}, True),
    ("ds-question-mark", {"data_sources": ["wh-?"]}, {"data_source": "wh-1"}, True),
    ("ds-question-mark-miss", {"data_sources": ["wh-?"]}, {"data_source": "wh-12"}, False),
    ("ds-char-class", {"data_sources": ["wh-[ab]"]}, {"data_source": "wh-b"}, True),
    ("ds-char-class-miss", {"data_sources": ["wh-[ab]"]}, {"data_source": "wh-c"}, False),
    # schemas (explicit, or derived from the qualified name)
    ("schema-derived", {"schemas": {"include": ["*"], "exclude": ["test_*"]}},
     {"name": "analytics.public.orders"}, True),
    ("schema-derived-excluded", {"schemas": {"include": ["*"], "exclude": ["test_*"]}},
     {"name": "analytics.test_area.orders"}, False),
    ("schema-explicit-wins", {"schemas": ["raw"]},
     {"name": "analytics.public.orders", "schema": "raw"}, True),
    ("schema-explicit-wins-miss", {"schemas": ["public"]},
     {"name": "analytics.public.orders", "schema": "raw"}, False),
    ("schema-case", {"schemas": ["PUBLIC"]}, {"name": "analytics.public.orders"}, True),
    ("schema-include-absent", {"schemas": ["*"]}, {"name": "orders"}, False),
    ("schema-exclude-only-absent", {"schemas": {"exclude": ["test_*"]}}, {"name": "orders"}, True),
    # kinds
    ("kind", {"kinds": ["view"]}, {"kind": "VIEW"}, True),
    ("kind-miss", {"kinds": ["view"]}, {"kind": "table"}, False),
    ("kind-absent", {"kinds": ["view"]}, {}, False),
    ("kind-exclude-only-absent", {"kinds": {"exclude": ["view"]}}, {}, True),
    # assets: a pattern with a dot matches the qualified name, without one the table's name
    ("asset-table-prefix", {"assets": ["orders*"]}, {"name": "analytics.public.orders_2024"}, True),
    ("asset-table-prefix-not-schema", {"assets": ["orders*"]},
     {"name": "analytics.orders_mart.items"}, False),
    ("asset-table-prefix-not-db", {"assets": ["orders*"]}, {"name": "orders_db.public.items"}, False),
    ("asset-unqualified-name", {"assets": ["orders"]}, {"name": "orders"}, True),
    ("asset-table-case", {"assets": ["ORDERS"]}, {"name": "analytics.public.orders"}, True),
    ("asset-exclude-staging", {"assets": {"exclude": ["*_staging"]}},
     {"name": "analytics.public.orders_staging"}, False),
    ("asset-exclude-staging-schema", {"assets": {"exclude": ["*_staging"]}},
     {"name": "analytics.my_staging.orders"}, True),
    ("asset-exclude-staging-other", {"assets": {"exclude": ["*_staging"]}},
     {"name": "analytics.public.orders"}, True),
    ("asset-qualified", {"assets": ["analytics.public.*"]}, {"name": "analytics.public.orders"}, True),
    ("asset-qualified-miss", {"assets": ["analytics.public.*"]},
     {"name": "analytics.private.orders"}, False),
    ("asset-qualified-case", {"assets": ["Analytics.Public.Orders"]},
     {"name": "analytics.public.orders"}, True),
    ("asset-qualified-suffix", {"assets": ["*.orders"]}, {"name": "db.public.orders"}, True),
    ("asset-qualified-suffix-miss", {"assets": ["*.orders"]}, {"name": "db.public.orders_v2"}, False),
    ("asset-qualified-not-table", {"assets": ["public.orders"]}, {"name": "analytics.public.orders"},
     False),
    ("asset-mixed-include-exclude", {"assets": {"include": ["analytics.*"], "exclude": ["*_tmp"]}},
     {"name": "analytics.public.orders_tmp"}, False),
    ("asset-mixed-include", {"assets": {"include": ["analytics.*"], "exclude": ["*_tmp"]}},
     {"name": "analytics.public.orders"}, True),
    ("asset-mixed-include-miss", {"assets": {"include": ["analytics.*"], "exclude": ["*_tmp"]}},
     {"name": "raw.public.orders"}, False),
    ("asset-either-kind-of-pattern", {"assets": ["nothing.here.*", "ord*"]},
     {"name": "db.public.orders"}, True),
    # tags
    ("tags-any", {"tags": {"any": ["gold"]}}, {"tags": ["Gold", "pii"]}, True),
    ("tags-any-miss", {"tags": {"any": ["gold"]}}, {"tags": ["silver"]}, False),
    ("tags-any-absent", {"tags": {"any": ["gold"]}}, {}, False),
    ("tags-list-is-any", {"tags": ["gold", "silver"]}, {"tags": ["silver"]}, True),
    ("tags-list-is-any-miss", {"tags": ["gold", "silver"]}, {"tags": ["bronze"]}, False),
    ("tags-string-is-any", {"tags": "gold"}, {"tags": ["GOLD"]}, True),
    ("tags-all", {"tags": {"all": ["gold", "finance"]}}, {"tags": ["finance", "GOLD", "x"]}, True),
    ("tags-all-miss", {"tags": {"all": ["gold", "finance"]}}, {"tags": ["gold"]}, False),
    ("tags-none", {"tags": {"none": ["pii"]}}, {"tags": ["PII"]}, False),
    ("tags-none-absent", {"tags": {"none": ["pii"]}}, {}, True),
    ("tags-none-other", {"tags": {"none": ["pii"]}}, {"tags": ["gold"]}, True),
    ("tags-any-and-none", {"tags": {"any": ["gold"], "none": ["deprecated"]}},
     {"tags": ["gold", "deprecated"]}, False),
    ("tags-any-and-all", {"tags": {"any": ["gold", "silver"], "all": ["finance"]}},
     {"tags": ["silver", "finance"]}, True),
    # every filter must hold
    ("all-filters-hold",
     {"environments": ["production"], "data_sources": ["warehouse-*"], "schemas": ["public"],
      "kinds": ["table"], "assets": ["orders"], "tags": ["gold"]},
     {"environment": "production", "data_source": "warehouse-1", "kind": "table", "tags": ["gold"]},
     True),
    ("one-filter-fails",
     {"environments": ["production"], "data_sources": ["warehouse-*"], "schemas": ["public"],
      "kinds": ["table"], "assets": ["orders"], "tags": ["gold"]},
     {"environment": "production", "data_source": "lake-1", "kind": "table", "tags": ["gold"]},
     False),
]


@pytest.mark.parametrize(("scope", "asset", "expected"), [c[1:] for c in SCOPE_CASES],
                         ids=[c[0] for c in SCOPE_CASES])
def test_scope(registry: Registry, scope: dict[str, Any], asset: dict[str, Any],
               expected: bool) -> None:
    alert = make_alert(registry, asset=asset)
    assert matched(registry, alert, scope=scope) is expected


@pytest.mark.parametrize("asset", [
    {},
    {"name": "orders"},
    {"environment": "dev", "data_source": "x", "schema": "s", "kind": "view", "tags": ["a"]},
])
def test_absent_filters_match_everything(registry: Registry, asset: dict[str, Any]) -> None:
    alert = make_alert(registry, asset=asset)
    assert matched(registry, alert)
    assert matched(registry, alert, scope={})
    assert matched(registry, alert, conditions={})


# -- conditions -----------------------------------------------------------------------------------

CHANGES_CASES = [
    ("any", [{"type": "column_added"}], True),
    ("breaking", [{"type": "column_added"}], False),
    ("breaking", [{"type": "column_added"}, {"type": "column_removed"}], True),
    ("breaking", [], False),
    ("breaking", [{"type": "column_removed", "breaking": False}], False),
    ("breaking", [{"type": "column_added", "breaking": True}], True),
    ("non_breaking", [{"type": "column_added"}, {"type": "nullability_changed"}], True),
    ("non_breaking", [{"type": "column_added"}, {"type": "type_changed"}], False),
    ("non_breaking", [], False),
    ("non_breaking", [{"type": "column_removed", "breaking": False}], True),
    (["column_removed", "type_changed"], [{"type": "column_added"}], False),
    (["column_removed", "type_changed"], [{"type": "column_added"}, {"type": "TYPE_CHANGED"}], True),
    (["Column_Removed"], [{"type": "column_removed"}], True),
    (["table_removed"], [], False),
]


@pytest.mark.parametrize(("condition", "changes", "expected"), CHANGES_CASES)
def test_changes_condition(registry: Registry, condition: Any, changes: list[dict[str, Any]],
                           expected: bool) -> None:
    alert = make_alert(registry, changes=changes)
    assert matched(registry, alert, conditions={"changes": condition}) is expected


@pytest.mark.parametrize(("freshness", "expected"),
                         [(None, False), ({"delay_hours": 1.5}, False), ({"delay_hours": 2}, True),
                          ({"delay_hours": 30, "threshold_hours": 24}, True)])
def test_min_delay_hours(registry: Registry, freshness: dict[str, Any] | None,
                         expected: bool) -> None:
    extra = {"freshness": freshness} if freshness else {}
    alert = make_alert(registry, "freshness_violation", **extra)
    assert matched(registry, alert, event="freshness_violation",
                   conditions={"min_delay_hours": 2}) is expected


@pytest.mark.parametrize(("minimum", "severity", "expected"), [
    ("warning", "info", False),
    ("warning", "warning", True),
    ("warning", "critical", True),
    ("critical", "warning", False),
    ("critical", "critical", True),
    ("info", "info", True),
])
def test_min_severity(registry: Registry, minimum: str, severity: str, expected: bool) -> None:
    alert = make_alert(registry, severity=severity)
    assert matched(registry, alert, conditions={"min_severity": minimum}) is expected


def test_conditions_and_scope_must_all_hold(registry: Registry) -> None:
    fields = {"scope": {"environments": ["production"]},
              "conditions": {"changes": "breaking", "min_severity": "critical"}}
    breaking = [{"type": "column_removed"}]
    assert matched(registry, make_alert(registry, asset={"environment": "production"},
                                        severity="critical", changes=breaking), **fields)
    assert not matched(registry, make_alert(registry, asset={"environment": "production"},
                                            severity="warning", changes=breaking), **fields)
    assert not matched(registry, make_alert(registry, asset={"environment": "staging"},
                                            severity="critical", changes=breaking), **fields)


# -- disabled rules -------------------------------------------------------------------------------


def test_disabled_rule_never_matches(registry: Registry) -> None:
    router = make_router(registry, rule(enabled=False))
    alert = make_alert(registry)
    assert router.matching_rules(alert) == []
    assert router.route(alert) == []


def test_disabled_rule_does_not_own_a_destination(registry: Registry) -> None:
    router = make_router(registry,
                         rule("off", destinations=["d1"], enabled=False),
                         rule("on", destinations=["d1"]))
    [route] = router.route(make_alert(registry))
    assert route.rule == "on"
    assert route.also_matched == ()


def test_explicitly_enabled_rule_matches(registry: Registry) -> None:
    assert matched(registry, make_alert(registry), enabled=True)


# -- routing: once per destination, first rule owns ------------------------------------------------


def test_once_per_destination_and_first_rule_owns(registry: Registry) -> None:
    router = make_router(
        registry,
        rule("A", destinations=["d1", "d2"]),
        rule("B", destinations=["d2", "d3"]),
        rule("C", destinations=["d1"]),
        rule("D", destinations=["d2"]),
    )
    alert = make_alert(registry)
    assert [r.name for r in router.matching_rules(alert)] == ["A", "B", "C", "D"]
    routes = router.route(alert)
    assert [r.destination for r in routes] == ["d1", "d2", "d3"]
    by_dest = routes_by_destination(routes)
    assert (by_dest["d1"].rule, by_dest["d1"].also_matched) == ("A", ("C",))
    assert (by_dest["d2"].rule, by_dest["d2"].also_matched) == ("A", ("B", "D"))
    assert (by_dest["d3"].rule, by_dest["d3"].also_matched) == ("B", ())
    assert by_dest["d1"].dedup_key == dedup_key("A", "schema_change", "asset-1")
    assert by_dest["d3"].dedup_key == dedup_key("B", "schema_change", "asset-1")
    assert by_dest["d1"].dedup_key != by_dest["d3"].dedup_key


def test_first_matching_rule_owns_not_first_listed(registry: Registry) -> None:
    router = make_router(
        registry,
        rule("prod only", destinations=["d1"], scope={"environments": ["production"]}),
        rule("everything", destinations=["d1", "d2"]),
    )
    staging = routes_by_destination(router.route(make_alert(registry,
                                                            asset={"environment": "staging"})))
    assert {d: r.rule for d, r in staging.items()} == {"d1": "everything", "d2": "everything"}
    assert staging["d1"].also_matched == ()
    prod = routes_by_destination(router.route(make_alert(registry,
                                                         asset={"environment": "production"})))
    assert {d: r.rule for d, r in prod.items()} == {"d1": "prod only", "d2": "everything"}
    assert prod["d1"].also_matched == ("everything",)


def test_rules_for_other_event_types_do_not_route(registry: Registry) -> None:
    router = make_router(registry,
                         rule("late", event="freshness_violation", destinations=["d1"]),
                         rule("schema", destinations=["d2"]))
    assert [r.destination for r in router.route(make_alert(registry))] == ["d2"]


def test_no_matching_rule_routes_nowhere(registry: Registry) -> None:
    router = make_router(registry, rule(scope={"environments": ["production"]}))
    assert router.route(make_alert(registry, asset={"environment": "dev"})) == []


def test_destination_listed_twice_in_one_rule_is_routed_once(registry: Registry) -> None:
    router = make_router(registry, rule("A", destinations=["d1", "d1"]))
    [route] = router.route(make_alert(registry))
    assert (route.destination, route.rule, route.also_matched) == ("d1", "A", ())


@pytest.mark.parametrize("status", ["acknowledged", "resolved"])
def test_acknowledged_and_resolved_route_like_triggered(registry: Registry, status: str) -> None:
    router = make_router(
        registry,
        rule("A", destinations=["d1"], conditions={"changes": "breaking"}),
        rule("B", destinations=["d1", "d2"]),
        rule("C", destinations=["d3"], scope={"environments": ["dev"]}),
    )
    common = {"asset": {"environment": "production"}, "changes": [{"type": "column_removed"}]}
    triggered = router.route(make_alert(registry, **common))
    other = router.route(make_alert(registry, status=status, **common))
    assert len(triggered) == 2
    assert other == triggered


def test_alert_dedup_key_overrides_every_route(registry: Registry) -> None:
    router = make_router(registry, rule("A", destinations=["d1"]), rule("B", destinations=["d2"]))
    routes = router.route(make_alert(registry, dedup_key="my-incident-7"))
    assert [r.dedup_key for r in routes] == ["my-incident-7", "my-incident-7"]


# -- dedup keys -----------------------------------------------------------------------------------


def test_dedup_key_is_deterministic_and_readable() -> None:
    key = dedup_key("Production Breaking Changes", "schema_change", "tbl_Orders-42")
    assert key == dedup_key("Production Breaking Changes", "schema_change", "tbl_Orders-42")
    assert key.startswith("anomalyarmor-")
    assert "production-breaking-changes" in key
    assert "schema_change" in key
    assert key.endswith("tbl_Orders-42")  # asset id kept verbatim: PagerDuty keys are case-sensitive


def test_dedup_key_is_stable_across_router_instances(registry: Registry) -> None:
    alert = make_alert(registry)
    first = make_router(registry, rule("A")).route(alert)[0].dedup_key
    second = make_router(registry, rule("A")).route(make_alert(registry))[0].dedup_key
    assert first == second


@pytest.mark.parametrize("status", ["triggered", "acknowledged", "resolved"])
def test_dedup_key_same_for_trigger_acknowledge_resolve(registry: Registry, status: str) -> None:
    router = make_router(registry, rule("A"))
    [route] = router.route(make_alert(registry, status=status))
    assert route.dedup_key == dedup_key("A", "schema_change", "asset-1")


@pytest.mark.parametrize("other", [
    ("Rule B", "schema_change", "asset-1"),
    ("Rule A", "metric_anomaly", "asset-1"),
    ("Rule A", "schema_change", "asset-2"),
    ("Rule A", "schema_change", "Asset-1"),
])
def test_dedup_key_differs_by_rule_event_and_asset(other: tuple[str, str, str]) -> None:
    assert dedup_key("Rule A", "schema_change", "asset-1") != dedup_key(*other)


def test_alert_dedup_key_overrides_the_derived_one() -> None:
    assert dedup_key("Rule A", "schema_change", "asset-1", "custom-key") == "custom-key"
    assert dedup_key("Rule A", "schema_change", "asset-1", None) == dedup_key(
        "Rule A", "schema_change", "asset-1")


def test_dedup_key_at_most_255_with_hashed_tail() -> None:
    long_id = "db.schema." + "x" * 600
    key = dedup_key("Rule A", "schema_change", long_id)
    assert len(key) == 255
    assert key.startswith("anomalyarmor-rule-a-schema_change-db.schema.xxx")
    tail = key.rsplit("-", 1)[1]
    assert len(tail) >= 8
    assert all(c in "0123456789abcdef" for c in tail)
    assert key == dedup_key("Rule A", "schema_change", long_id)


def test_long_dedup_keys_differing_only_at_the_end_stay_unique() -> None:
    base = "warehouse/" + "a" * 480
    first = dedup_key("Rule A", "schema_change", base + "1")
    second = dedup_key("Rule A", "schema_change", base + "2")
    assert len(first) <= 255
    assert len(second) <= 255
    assert first != second
    assert first.startswith("anomalyarmor-") and second.startswith("anomalyarmor-")


def test_short_dedup_key_is_not_hashed() -> None:
    prefix_len = len(dedup_key("r", "schema_change", ""))
    exact = "i" * (255 - prefix_len)
    assert dedup_key("r", "schema_change", exact).endswith(exact)
    assert len(dedup_key("r", "schema_change", exact)) == 255
    assert not dedup_key("r", "schema_change", exact + "j").endswith(exact + "j")
    assert len(dedup_key("r", "schema_change", exact + "j")) == 255


def test_routes_for_long_asset_ids_are_unique_and_short(registry: Registry) -> None:
    router = make_router(registry, rule("A"))
    base = "a" * 500
    keys = [router.route(make_alert(registry, asset={"id": base + end}))[0].dedup_key
            for end in ("1", "2")]
    assert all(len(k) <= 255 for k in keys)
    assert keys[0] != keys[1]


def test_rules_named_in_other_scripts_get_different_dedup_keys() -> None:
    assert dedup_key("本番の破壊的変更", "schema_change", "asset-1") != dedup_key(
        "テスト環境", "schema_change", "asset-1")


# -- the event-type index -------------------------------------------------------------------------


def test_router_only_evaluates_rules_for_the_alerts_event_type(
        registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    models = [RuleModel.model_validate({"name": f"late-{i}", "event": "freshness_violation",
                                        "destinations": ["d1"]}) for i in range(5000)]
    models.append(RuleModel.model_validate({"name": "schema", "event": "schema_change",
                                            "destinations": ["d2"]}))
    router = Router([Rule.compile(i, m) for i, m in enumerate(models)])

    calls: list[str] = []
    original = Rule.matches

    def counting(self: Rule, alert: Alert) -> bool:
        calls.append(self.name)
        return original(self, alert)

    monkeypatch.setattr(Rule, "matches", counting)

    [route] = router.route(make_alert(registry, "schema_change"))
    assert (route.destination, route.rule) == ("d2", "schema")
    assert calls == ["schema"]

    calls.clear()
    assert router.route(make_alert(registry, "metric_anomaly")) == []
    assert calls == []

    # the counter does see every rule of the alert's own type
    calls.clear()
    routes = router.route(make_alert(registry, "freshness_violation",
                                     freshness={"delay_hours": 1}))
    assert len(calls) == 5000
    assert [(r.destination, r.rule, len(r.also_matched)) for r in routes] == [("d1", "late-0", 4999)]


# -- the per-field masks give exactly the plain answer --------------------------------------------


def plain_matching(rules: list[Rule], alert: Alert) -> list[str]:
    """What matching means, without any index: every enabled rule of the alert's type, in order."""
    return [r.name for r in rules
            if r.model.enabled and alert.event_type in r.model.event and r.matches(alert)]


def random_rule(rnd: random.Random, i: int) -> dict[str, Any]:
    def globs(values: list[str]) -> Any:
        include = rnd.sample(values, rnd.randint(1, 2))
        exclude = rnd.sample(values, rnd.randint(0, 1))
        return rnd.choice([include, {"include": include, "exclude": exclude},
                           {"exclude": exclude or ["none"]}])

    scope: dict[str, Any] = {}
    if rnd.random() < 0.6:
        scope["environments"] = globs(["production", "prod*", "staging", "dev", "*"])
    if rnd.random() < 0.6:
        scope["data_sources"] = globs(["warehouse-*", "wh-?", "lake-[12]", "lake-1", "*-eu"])
    if rnd.random() < 0.4:
        scope["schemas"] = globs(["public", "test_*", "finance", "*"])
    if rnd.random() < 0.3:
        scope["kinds"] = globs(["table", "view", "model"])
    if rnd.random() < 0.3:
        scope["assets"] = globs(["orders*", "*_staging", "db.public.*", "*.finance.ledger"])
    if rnd.random() < 0.4:
        scope["tags"] = {rnd.choice(["any", "all", "none"]): rnd.sample(["gold", "PII", "team-a"],
                                                                      rnd.randint(1, 2))}
    conditions: dict[str, Any] = {}
    if rnd.random() < 0.3:
        conditions["min_severity"] = rnd.choice(["info", "warning", "critical"])
    if rnd.random() < 0.2:
        conditions["changes"] = rnd.choice(["any", "breaking", "non_breaking", ["column_added"]])
    if rnd.random() < 0.2:
        conditions["min_delay_hours"] = rnd.choice([1, 2])
    return {"name": f"rule {i}",
            "event": rnd.sample(["schema_change", "freshness_violation", "metric_anomaly"],
                                rnd.randint(1, 2)),
            "scope": scope, "conditions": conditions,
            "destinations": rnd.sample(["d1", "d2", "d3", "d4"], rnd.randint(1, 2)),
            "enabled": rnd.random() < 0.9}


def random_alert(rnd: random.Random, registry: Registry) -> Alert:
    def maybe(values: list[str]) -> str | None:
        return rnd.choice([*values, None])

    asset: dict[str, Any] = {
        "id": f"asset-{rnd.randrange(5)}",
        "name": rnd.choice(["db.public.orders", "db.public.orders_staging", "orders",
                            "db.finance.ledger", "db.test_x.t", "x.y"]),
        "environment": maybe(["production", "Production", "staging", "dev"]),
        "data_source": maybe(["warehouse-eu", "wh-1", "wh-12", "lake-1", "lake-2", "lake-3"]),
        "schema": maybe(["public", "finance", "test_a"]),
        "kind": maybe(["table", "view", "TABLE"]),
        "tags": rnd.sample(["gold", "Gold", "pii", "team-a"], rnd.randint(0, 3)),
    }
    event = rnd.choice(["schema_change", "freshness_violation", "metric_anomaly",
                        "asset_removed"])
    extra: dict[str, Any] = {"severity": rnd.choice(["info", "warning", "critical"])}
    if event == "schema_change":
        extra["changes"] = [{"type": rnd.choice(["column_added", "column_removed"])}
                            for _ in range(rnd.randint(0, 2))]
    if event == "freshness_violation" and rnd.random() < 0.8:
        extra["freshness"] = {"delay_hours": rnd.choice([0.5, 1, 2, 3])}
    return make_alert(registry, event, asset={k: v for k, v in asset.items() if v is not None},
                      **extra)


@pytest.mark.parametrize("seed", range(8))
def test_masked_routing_equals_checking_every_rule(registry: Registry, seed: int) -> None:
    rnd = random.Random(seed)
    models = [RuleModel.model_validate(random_rule(rnd, i)) for i in range(rnd.randint(1, 90))]
    rules = [Rule.compile(i, m) for i, m in enumerate(models)]
    router = Router(rules)
    alerts = [random_alert(rnd, registry) for _ in range(150)]
    for alert in alerts + alerts:  # the second pass is answered from the memos
        assert [r.name for r in router.matching_rules(alert)] == plain_matching(rules, alert)
        routes = router.route(alert)
        names = plain_matching(rules, alert)
        owners = {}
        for name in names:
            for dest in models[int(name.split()[1])].destinations:
                owners.setdefault(dest, name)
        assert {r.destination: r.rule for r in routes} == owners
        assert list(owners) == [r.destination for r in routes]  # first owner first


def test_memos_starting_afresh_change_nothing(registry: Registry,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(matching, "MEMO_LIMIT", 2)
    rnd = random.Random(99)
    rules = [Rule.compile(i, RuleModel.model_validate(random_rule(rnd, i))) for i in range(60)]
    router = Router(rules)
    alerts = [random_alert(rnd, registry) for _ in range(200)]
    for alert in alerts:
        assert [r.name for r in router.matching_rules(alert)] == plain_matching(rules, alert)


def test_rules_sharing_a_filter_are_each_routed(registry: Registry) -> None:
    # Equal scopes are evaluated once per value: every rule that has one must still be found.
    same = {"environments": ["production"], "data_sources": ["warehouse-*"]}
    router = make_router(registry, rule("A", scope=same, destinations=["d1"]),
                         rule("B", scope=same, destinations=["d2"], event="metric_anomaly"),
                         rule("C", scope=same, destinations=["d1", "d3"]))
    alert = make_alert(registry, asset={"environment": "production", "data_source": "warehouse-1"})
    routes = routes_by_destination(router.route(alert))
    assert {d: (r.rule, r.also_matched) for d, r in routes.items()} == {
        "d1": ("A", ("C",)), "d3": ("C", ())}
    other = make_alert(registry, asset={"environment": "staging", "data_source": "warehouse-1"})
    assert router.route(other) == []
    assert [r.name for r in router.matching_rules(make_alert(
        registry, "metric_anomaly", asset={"environment": "production",
                                           "data_source": "warehouse-1"}))] == ["B"]
