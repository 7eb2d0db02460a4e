"""Lineage (issue 19): the graph of assets from a dbt manifest, edges files and an alert's own
``asset.upstream``; found by name, id or the last two parts; walked up and down; read again when
a file changes; every unreadable file named at its place. The manifest of a real ``dbt build``
is read in ``test_dbt_lineage`` (slow)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from armor_notify.cli import cli
from armor_notify.delivery import State
from armor_notify.lineage import Lineage, LineageError, LineageFiles, load


def manifest(nodes: dict[str, dict[str, Any]], parents: dict[str, list[str]],
             sources: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": {"dbt_version": "1.11.0"}, "nodes": nodes, "sources": sources or {},
            "parent_map": parents}


def model(name: str, schema: str = "marts") -> dict[str, Any]:
    return {"database": "analytics", "schema": schema, "name": name, "alias": name,
            "resource_type": "model"}


SHOP = manifest(
    nodes={
        "model.shop.stg_orders": model("stg_orders", "staging"),
        "model.shop.fct_orders": model("fct_orders"),
        "model.shop.fct_revenue": model("fct_revenue"),
        "test.shop.not_null_fct_orders_id.abc": {"resource_type": "test", "name": "x"},
    },
    sources={"source.shop.raw.orders": {"database": "raw", "schema": "shop",
                                        "identifier": "orders", "resource_type": "source"}},
    parents={
        "model.shop.stg_orders": ["source.shop.raw.orders"],
        "model.shop.fct_orders": ["model.shop.stg_orders"],
        "model.shop.fct_revenue": ["model.shop.fct_orders", "model.shop.stg_orders"],
        "test.shop.not_null_fct_orders_id.abc": ["model.shop.fct_orders"],
    })


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data) if path.suffix == ".json" else data)
    return path


@pytest.fixture
def shop(tmp_path: Path) -> Lineage:
    return load(write(tmp_path / "manifest.json", SHOP))


def test_a_dbt_manifest_gives_its_models_and_sources_by_relation_name(shop: Lineage) -> None:
    assert sorted(shop.names) == ["analytics.marts.fct_orders", "analytics.marts.fct_revenue",
                                  "analytics.staging.stg_orders", "raw.shop.orders"]
    assert shop.edges == 4  # the test is not an asset, and its edge is not an edge
    assert shop.upstream("analytics.marts.fct_revenue", depth=10) == [
        ("analytics.marts.fct_orders", 1), ("analytics.staging.stg_orders", 1),
        ("raw.shop.orders", 2)]
    assert shop.downstream("raw.shop.orders", depth=10) == [
        ("analytics.staging.stg_orders", 1), ("analytics.marts.fct_orders", 2),
        ("analytics.marts.fct_revenue", 2)]
    assert shop.downstream("raw.shop.orders", depth=1) == [("analytics.staging.stg_orders", 1)]


def test_an_asset_is_found_by_name_id_or_its_last_two_parts(shop: Lineage) -> None:
    node = shop.find("ANALYTICS.marts.FCT_orders")
    assert node is not None and shop.names[node] == "analytics.marts.fct_orders"
    assert shop.find("whatever", "model.shop.fct_orders") == node  # a dbt unique_id
    assert shop.find("prod.marts.fct_orders") == node  # another database, same schema.table
    assert shop.find("fct_orders") is None  # a bare table name is too loose
    assert shop.find("analytics.other.fct_orders") is None


def test_two_parts_shared_by_two_nodes_find_neither(tmp_path: Path) -> None:
    graph = load(edges=[write(tmp_path / "e.json", [
        {"from": "a.s.t", "to": "b.s.t"}, {"from": "c.x.y", "to": "d.x.z"}])])
    assert graph.find("other.s.t") is None  # a.s.t and b.s.t both end in s.t
    assert graph.find("other.x.y") is not None


def test_declared_upstream_joins_the_lineage(shop: Lineage) -> None:
    found = shop.upstream("analytics.reports.daily", depth=5,
                          declared=["analytics.marts.fct_revenue"])
    assert found[0] == ("analytics.marts.fct_revenue", 1)
    assert ("raw.shop.orders", 3) in found
    assert Lineage().upstream("x.y.z", depth=3, declared=["a.b.c"]) == [("a.b.c", 1)]


def test_edges_files_in_json_yaml_and_openlineage(tmp_path: Path) -> None:
    plain = write(tmp_path / "edges.yaml", "edges:\n  - {from: raw.orders, to: stg.orders}\n")
    events = write(tmp_path / "events.json", [
        {"eventType": "COMPLETE", "inputs": [{"namespace": "pg://db", "name": "stg.orders"}],
         "outputs": [{"namespace": "pg://db", "name": "marts.orders"},
                     {"namespace": "pg://db", "name": "marts.revenue"}]}])
    graph = load(edges=[plain, events])
    assert graph.downstream("raw.orders", depth=5) == [
        ("stg.orders", 1), ("marts.orders", 2), ("marts.revenue", 2)]
    assert graph.sources == [str(plain), str(events)]


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.json", None, "edges file not found"),
    ("bad.json", "[{\"from\": 1,\n", "not valid JSON"),
    ("bad.yaml", "edges: [\n  {from: a\n", "not valid YAML"),
    ("shape.json", {"edges": 3}, "expected a list of edges"),
    ("item.json", [{"from": "a", "to": "b"}, {"from": "a"}], "[1]: expected {from: NAME"),
    ("event.json", [{"inputs": [{"namespace": "x"}], "outputs": []}], "[0].inputs[0]: a dataset"),
])
def test_an_unreadable_edges_file_is_named_with_the_place(tmp_path: Path, name: str,
                                                          content: Any, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(LineageError) as caught:
        load(edges=[path])
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_a_file_that_is_not_a_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LineageError, match="not a dbt manifest"):
        load(write(tmp_path / "manifest.json", {"results": []}))


def test_the_files_are_read_again_when_they_change_and_fail_open(tmp_path: Path) -> None:
    edges = write(tmp_path / "e.json", [{"from": "a.b", "to": "c.d"}])
    files = LineageFiles(None, [edges])
    files.CHECK_EVERY = 0.0
    first = files.current()
    assert first is not None and len(first) == 2
    assert files.current() is first  # unchanged: not read again
    write(edges, [{"from": "a.b", "to": "c.d"}, {"from": "c.d", "to": "e.f"}])
    os.utime(edges, (1, 1))  # a new stamp even within the same second
    second = files.current()
    assert second is not None and len(second) == 3
    edges.write_text("[")
    os.utime(edges, (2, 2))
    assert files.current() is None and files.error and "not valid JSON" in files.error
    assert LineageFiles(None, []).current() is None  # none configured


def test_lineage_show_and_validate(tmp_path: Path) -> None:
    write(tmp_path / "manifest.json", SHOP)
    config = tmp_path / "armor-notify.yaml"
    config.write_text("version: 1\ndestinations: {}\nlineage: {dbt_manifest: manifest.json}\n")
    runner = CliRunner()
    shown = runner.invoke(cli, ["lineage", "show", "analytics.staging.stg_orders", "-c",
                                str(config)])
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines() == [
        "analytics.staging.stg_orders (4 assets in the lineage)",
        "  upstream: 1", "    1  raw.shop.orders",
        "  downstream: 2", "    1  analytics.marts.fct_orders", "    1  analytics.marts.fct_revenue"]
    as_json = json.loads(runner.invoke(cli, ["lineage", "show", "model.shop.fct_orders",
                                             "--json", "-c", str(config)]).output)
    assert as_json["upstream"] == [{"asset": "analytics.staging.stg_orders", "distance": 1},
                                   {"asset": "raw.shop.orders", "distance": 2}]
    unknown = runner.invoke(cli, ["lineage", "show", "analytics.marts.fct_order", "-c",
                                  str(config)])
    assert unknown.exit_code == 2
    assert "did you mean 'analytics.marts.fct_orders'" in unknown.output
    valid = runner.invoke(cli, ["validate", "-c", str(config)])
    assert "lineage: 4 assets, 4 edges from" in valid.output
    (tmp_path / "manifest.json").write_text("{")
    broken = runner.invoke(cli, ["validate", "-c", str(config)])
    assert broken.exit_code == 2 and "lineage" in broken.output and "not valid JSON" in \
        broken.output
    none = tmp_path / "none.yaml"
    none.write_text("version: 1\ndestinations: {}\n")
    assert "no lineage configured" in runner.invoke(
        cli, ["lineage", "show", "x", "-c", str(none)]).output


def test_lineage_settings_are_validated(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("version: 1\ndestinations: {}\nlineage: {depth: 0, edge: e.json}\n")
    result = CliRunner().invoke(cli, ["validate", "-c", str(config)])
    assert result.exit_code == 2
    assert "lineage.depth" in result.output and "unknown key 'edge' (did you mean 'edges'?)" \
        in result.output


def test_the_failing_roots_above_an_asset_are_a_lookup(shop: Lineage) -> None:
    below = shop.below(["raw.shop.orders", "analytics.staging.stg_orders", "not.in.lineage"],
                       depth=10)
    # Furthest upstream first; found by name in any case, by a dbt unique_id, by two parts.
    assert below.roots("analytics.marts.fct_revenue") == [
        ("raw.shop.orders", 2), ("analytics.staging.stg_orders", 1)]
    assert below.roots("ANALYTICS.MARTS.FCT_ORDERS") == below.roots(
        "x", "model.shop.fct_orders") == below.roots("prod.marts.fct_orders") == [
        ("raw.shop.orders", 2), ("analytics.staging.stg_orders", 1)]
    assert below.roots("raw.shop.orders") == []  # a root is not below itself
    assert below.roots("elsewhere.marts.fct_orderz") == []
    assert shop.below(["raw.shop.orders"], depth=1).roots("analytics.marts.fct_orders") == []
    assert shop.below([], depth=10).roots("analytics.marts.fct_orders") == []


def test_dbt_owners_are_kept_per_asset(tmp_path: Path) -> None:
    data = json.loads(json.dumps(SHOP))
    data["nodes"]["model.shop.fct_orders"]["meta"] = {"owner": "finance-analytics"}
    data["nodes"]["model.shop.fct_revenue"].update(group="finance", package_name="shop")
    data["groups"] = {"group.shop.finance": {"owner": {"name": "Finance", "email": "f@x.io"}}}
    graph = load(write(tmp_path / "manifest.json", data))
    assert {o: sorted(graph.names[n] for n in nodes) for o, nodes in graph.owners.items()} == {
        "finance-analytics": ["analytics.marts.fct_orders"],
        "Finance": ["analytics.marts.fct_revenue"]}


# -- ownership routing --------------------------------------------------------------------------------


def owners_config(**more: Any) -> str:
    return json.dumps({
        "version": 1,
        "destinations": {name: {"type": "slack", "webhook_url":
                                f"https://hooks.slack.com/services/T0/B{i}/x{i}"}
                         for i, name in enumerate(["ae", "platform", "triage", "audit"])},
        "owners": {"analytics-engineering": "ae", "Data-Platform": ["platform", "audit"],
                   "fallback": ["triage"]},
        "rules": [{"name": "Owners", "event": "schema_change",
                   "destinations": ["owners", "audit"]}],
        **more})


def routed(config: str, owners: list[str]) -> list[tuple[str, str | None]]:
    from armor_notify.testing import build_notifier, make_alert

    with build_notifier(config, installed=True) as nt:
        alert = make_alert(asset={"owners": owners})
        return [(r["destination"], r["owner"]) for r in nt.explain(alert)["routes"]]


def test_a_rule_sends_to_the_owners_destinations_or_the_fallback() -> None:
    config = owners_config()
    assert routed(config, ["Analytics-Engineering"]) == [("ae", "Analytics-Engineering"),
                                                         ("audit", None)]
    assert routed(config, ["data-platform", "analytics-engineering"]) == [
        ("platform", "data-platform"), ("audit", "data-platform"),
        ("ae", "analytics-engineering")]
    assert routed(config, ["someone-else"]) == [("triage", ""), ("audit", None)]
    assert routed(config, []) == [("triage", ""), ("audit", None)]


def test_route_shows_which_owner_chose_a_destination(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(owners_config())
    alert = tmp_path / "a.json"
    from armor_notify.testing import make_alert

    alert.write_text(make_alert(asset={"owners": ["analytics-engineering"]}).model_dump_json())
    shown = CliRunner().invoke(cli, ["route", str(alert), "-c", str(config)])
    assert "Owners (owner analytics-engineering)" in shown.output
    as_json = json.loads(CliRunner().invoke(cli, ["route", str(alert), "-c", str(config),
                                                  "--json"]).output)
    assert as_json["alerts"][0]["routes"][0]["owner"] == "analytics-engineering"


def test_owners_are_validated_and_validate_lists_owners_without_destinations(
        tmp_path: Path) -> None:
    bad = json.loads(owners_config())
    bad["owners"]["analytics-engineering"] = "a"
    bad["destinations"]["owners"] = bad["destinations"]["audit"]
    config = tmp_path / "bad.yaml"
    config.write_text(json.dumps(bad))
    result = CliRunner().invoke(cli, ["validate", "-c", str(config)])
    assert result.exit_code == 2
    assert "owners.analytics-engineering: unknown destination 'a'" in result.output
    assert "a destination cannot be called 'owners'" in result.output
    plain = json.loads(owners_config())
    del plain["owners"]
    config.write_text(json.dumps(plain))
    result = CliRunner().invoke(cli, ["validate", "-c", str(config)])
    assert "unknown destination 'owners': 'owners' needs an owners: map" in result.output
    data = json.loads(json.dumps(SHOP))
    data["nodes"]["model.shop.fct_orders"]["meta"] = {"owner": "finance"}
    write(tmp_path / "manifest.json", data)
    config.write_text(owners_config(lineage={"dbt_manifest": "manifest.json"}))
    result = CliRunner().invoke(cli, ["validate", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert ("note: owner 'finance' (1 asset in the lineage) has no destinations in owners: "
            "its alerts go to the fallback (triage)") in result.output
    assert "not used by any rule" not in result.output  # ae and platform are, through owners


# -- one page per root cause ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_796_000_000.0

    def __call__(self) -> float:
        return self.now


def folding(tmp_path: Path, children: int = 12, **rule: Any) -> tuple[Any, Any, Clock]:
    from armor_notify.testing import Capture, build_notifier

    edges = [{"from": "raw.shop.orders", "to": f"analytics.marts.m{i}"} for i in range(children)]
    edges.append({"from": "raw.shop.customers", "to": "analytics.marts.customers"})
    write(tmp_path / "edges.json", edges)
    capture = Capture()
    nt = build_notifier({
        "version": 1, "destinations": {"pd": {"type": "capture"}, "team": {"type": "capture"}},
        "rules": [{"name": "Quality", "event": ["validity_failure", "freshness_violation"],
                   "destinations": ["pd", "team"], **rule}],
        "lineage": {"edges": str(tmp_path / "edges.json"), "grace": "10m"}},
        capture.destination_type)
    clock = Clock()
    nt.dispatcher.clock = clock
    return nt, capture, clock


def result(asset: str, status: str, check: str = "not_null") -> dict[str, Any]:
    return {"event_type": "validity_failure", "severity": "critical",
            "title": f"{check} on {asset}", "asset": {"id": asset, "name": asset},
            "check": {"id": check, "status": status}}


CHILDREN = [f"analytics.marts.m{i}" for i in range(12)]


def test_a_root_and_its_failing_children_are_one_page_listing_them(tmp_path: Path) -> None:
    nt, capture, _ = folding(tmp_path)
    # dbt writes the tests' results before the sources' freshness: the root comes last.
    report = nt.send(nt.parse_alerts([result(c, "fail") for c in CHILDREN]
                                     + [result("raw.shop.orders", "fail", "freshness")]))
    (page,) = capture.by_destination("pd")
    assert page.alert.asset.name == "raw.shop.orders"
    assert page.alert.description == (
        "Blast radius: 12 downstream assets failing with it: " + ", ".join(CHILDREN))
    assert len(capture.by_destination("team")) == 1
    folded = [d for d in report.deliveries if d.alert.asset.name != "raw.shop.orders"]
    assert len(folded) == 24 and {d.state for d in folded} == {State.suppressed}
    assert all(d.reason.startswith("folded into raw.shop.orders (failing since ")
               for d in folded)
    assert sorted(c.folded_into or "-" for c in nt.checks()) == ["-"] + ["raw.shop.orders"] * 12


def test_children_failing_later_fold_too_and_never_resolve_the_root(tmp_path: Path) -> None:
    nt, capture, clock = folding(tmp_path)
    nt.send(nt.parse_alerts(result("raw.shop.orders", "fail", "freshness")))
    clock.now += 60
    report = nt.send(nt.parse_alerts(result(CHILDREN[0], "fail")))
    assert next(iter(report.notes.values())).startswith(
        "check started failing: folded into raw.shop.orders")
    clock.now += 60
    passed = nt.send(nt.parse_alerts(result(CHILDREN[0], "pass")))
    assert passed.deliveries == []  # it never paged: nothing of its own to resolve
    assert "folded into raw.shop.orders" in next(iter(passed.notes.values()))
    assert [n.alert.status for n in capture.by_destination("pd")] == ["triggered"]


def test_when_the_root_resolves_children_still_failing_page_after_the_grace(
        tmp_path: Path) -> None:
    nt, capture, clock = folding(tmp_path, children=3)
    nt.send(nt.parse_alerts([result(c, "fail") for c in CHILDREN[:3]]
                            + [result("raw.shop.orders", "fail", "freshness")]))
    clock.now += 300
    nt.send(nt.parse_alerts([result("raw.shop.orders", "pass", "freshness"),
                             result(CHILDREN[0], "pass")]))  # resolves are never suppressed
    assert [(n.alert.status, n.alert.asset.name) for n in capture.by_destination("pd")] == [
        ("triggered", "raw.shop.orders"), ("resolved", "raw.shop.orders")]
    clock.now += 300
    assert nt.notice_missing() == []  # within the grace
    clock.now += 301
    nt.send(nt.parse_alerts(result(CHILDREN[1], "pass")))  # recovered in time: not released
    released = nt.notice_missing()
    assert {d.alert.asset.name for d in released} == {CHILDREN[2]}
    assert all(d.state is State.queued for d in released)
    nt.drain()
    assert [n.alert.asset.name for n in capture.by_destination("pd")][-1] == CHILDREN[2]
    # Now paged on its own, its pass resolves its own incident.
    nt.send(nt.parse_alerts(result(CHILDREN[2], "pass")))
    assert capture.by_destination("pd")[-1].alert.status == "resolved"


def test_fold_dedup_sends_with_the_roots_key_and_off_pages_on_its_own(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    nt, capture, _ = folding(tmp_path / "d", fold="dedup")
    nt.send(nt.parse_alerts([result("raw.shop.orders", "fail", "freshness"),
                             result(CHILDREN[0], "fail")]))
    keys = [n.dedup_key for n in capture.by_destination("pd")]
    assert len(keys) == 2 and keys[0] == keys[1]
    (tmp_path / "o").mkdir()
    nt, capture, _ = folding(tmp_path / "o", fold="off")
    nt.send(nt.parse_alerts([result("raw.shop.orders", "fail", "freshness"),
                             result(CHILDREN[0], "fail")]))
    assert len({n.dedup_key for n in capture.by_destination("pd")}) == 2


def test_outside_the_lineage_or_without_one_an_alert_pages_and_route_says_why(
        tmp_path: Path) -> None:
    nt, capture, clock = folding(tmp_path)
    nt.send(nt.parse_alerts(result("raw.shop.orders", "fail", "freshness")))
    history = nt.outbox.history()

    def explained(asset: str) -> dict[str, Any]:
        return nt.explain(nt.parse_alerts(result(asset, "fail"))[0], at=clock.now,
                          history=history)

    folded = explained(CHILDREN[0])
    assert folded["check"]["lineage"].startswith("folded into raw.shop.orders (failing since")
    assert folded["check"]["lineage"].endswith(  # as intake says it: the root's incident too
        ", incident anomalyarmor-quality-validity_failure-raw.shop.orders-freshness)")
    assert [r["outcome"] for r in folded["routes"]] == ["suppressed", "suppressed"]
    assert explained(CHILDREN[1].upper())["check"]["lineage"] == folded["check"]["lineage"]
    inside = explained("analytics.marts.customers")  # in the lineage, nothing failing above it
    assert inside["check"]["lineage"] == "nothing upstream of it is failing: pages on its own"
    outside = explained("elsewhere.schema.table")
    assert outside["check"]["lineage"] == ("elsewhere.schema.table is not in the lineage: "
                                           "pages on its own")
    assert [r["sent"] for r in outside["routes"]] == [True, True]
    nt.send(nt.parse_alerts(result("elsewhere.schema.table", "fail")))
    assert capture.by_destination("pd")[-1].alert.asset.name == "elsewhere.schema.table"
    # A lineage read again is asked afresh (not the table of the one before).
    write(tmp_path / "edges.json", [{"from": "raw.shop.customers", "to": CHILDREN[2]}])
    os.utime(tmp_path / "edges.json", (4, 4))
    nt.lineage.reload()
    assert explained(CHILDREN[2])["check"]["lineage"] == (
        "nothing upstream of it is failing: pages on its own")
    (tmp_path / "edges.json").write_text("[")  # unreadable: fail open
    os.utime(tmp_path / "edges.json", (5, 5))
    nt.lineage.reload()
    broken = explained(CHILDREN[1])
    assert broken["check"]["lineage"].startswith("the lineage cannot be read (")
    nt.send(nt.parse_alerts(result(CHILDREN[1], "fail")))
    assert capture.by_destination("pd")[-1].alert.asset.name == CHILDREN[1]


def test_owners_of_folded_assets_are_told_once_per_incident_not_paged(tmp_path: Path) -> None:
    import dataclasses

    from armor_notify.testing import Capture, build_notifier

    write(tmp_path / "edges.json", [{"from": "raw.shop.orders", "to": c} for c in CHILDREN[:3]])
    pager, chat = Capture("pager"), Capture("chat")
    messaging = dataclasses.replace(chat.destination_type, supports_digest=True)
    nt = build_notifier({
        "version": 1,
        "destinations": {"pd": {"type": "pager"}, "finance-chat": {"type": "chat"},
                         "finance-pager": {"type": "pager"}},
        "owners": {"finance": ["finance-chat", "finance-pager"]},
        "rules": [{"name": "Quality", "event": "validity_failure", "destinations": ["pd"]}],
        "lineage": {"edges": str(tmp_path / "edges.json")}},
        pager.destination_type, messaging)

    def owned(asset: str, status: str) -> dict[str, Any]:
        data = result(asset, status)
        data["asset"]["owners"] = ["Finance"]
        return data

    nt.send(nt.parse_alerts([result("raw.shop.orders", "fail", "freshness"),
                             owned(CHILDREN[0], "fail"), owned(CHILDREN[1], "fail")]))
    nt.send(nt.parse_alerts(owned(CHILDREN[2], "fail")))  # later, same incident
    (told,) = chat.notifications  # once, on the messaging destination only
    assert told.alert.severity.value == "info"
    assert told.alert.title.startswith("Upstream incident: raw.shop.orders is failing")
    assert [n.destination for n in pager.notifications] == ["pd"]  # the root's page only


def test_an_alerts_declared_upstream_folds_it_too(tmp_path: Path) -> None:
    nt, capture, _ = folding(tmp_path, children=1)
    nt.send(nt.parse_alerts(result("raw.shop.orders", "fail", "freshness")))
    child = result("reports.daily.kpis", "fail")  # not in the lineage, but says what feeds it
    child["asset"]["upstream"] = ["analytics.marts.m0"]
    report = nt.send(nt.parse_alerts(child))
    note = next(iter(report.notes.values()))
    assert note.startswith("check started failing: folded into raw.shop.orders (failing since")
    assert ", incident anomalyarmor-quality-validity_failure-raw.shop.orders-freshness)" in note
    assert len(capture.by_destination("pd")) == 1
    assert nt.lineage.current() is not None
    below = nt.lineage.current().below(["raw.shop.orders"], depth=10)
    assert below is nt.lineage.current().below(["raw.shop.orders"], depth=10)  # kept
