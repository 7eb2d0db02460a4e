"""Figure 10: lineage of 50,000 assets (issue 19's targets).

A dbt ``manifest.json`` of 50,000 assets is generated from a fixed seed, shaped as a warehouse
is: 5,000 sources, then layers of models, each built from one to three assets of the layers
before it (about 95,000 edges), with the fields dbt writes for them. Then:

* **load**: ``armor_notify.lineage.load`` of the file, against ``json.load`` of the same file in
  the same run (reading the file at all). Target: under 2 s.
* **routing with lineage**: 100,000 alerts on those assets routed through the figure 3 router of
  1,000 rules, each also asking which failing assets lie upstream of it within the default
  depth (10), with 20 sources failing (``Lineage.below``: the failing assets' downstream,
  walked once when the failing set changes, timed on its own, then a lookup or two an alert),
  against routing alone in the same run. Target: under 20 % more. For contrast: walking each
  alert's whole upstream instead (what a lookup per alert without the index would cost).
* **route, as the command does it**: ``Notifier.explain`` of 5,000 check results (failing, on
  those assets) against an outbox whose ledger has the 20 sources failing, with the lineage
  configured and without it (the same config otherwise), in the same run: what ``armor-notify
  route`` spends per alert, folding's explanation included. Target: under 20 % more.

Rates are the best of their rounds. The rounds of figures compared run interleaved, each first
in turn, and a ratio is the median of the ratios of the rounds, measured side by side: the
machine's noise falls on both, so the ratio varies less than either figure.

    .venv/bin/python bench/bench_lineage.py [--assets 50000] [--alerts 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_routing import alert_data, make_rules
from common import Row, emit, interleaved, paired_ratio, timed

from armor_notify.alert import Alert
from armor_notify.lineage import load
from armor_notify.matching import Router

SOURCES = 5_000
LAYERS = 8


def manifest(assets: int, seed: int = 7) -> tuple[dict[str, Any], list[str]]:
    """A manifest of ``assets`` sources and models, and the assets' relation names."""
    rng = random.Random(seed)
    nodes: dict[str, Any] = {}
    sources: dict[str, Any] = {}
    parents: dict[str, list[str]] = {}
    names: list[str] = []
    layer: list[list[str]] = [[]]
    for i in range(min(SOURCES, assets)):
        uid = f"source.wh.raw_{i % 50}.table_{i}"
        sources[uid] = {"database": "raw", "schema": f"raw_{i % 50}", "identifier": f"table_{i}",
                        "name": f"table_{i}", "resource_type": "source", "unique_id": uid,
                        "fqn": ["wh", f"raw_{i % 50}", f"table_{i}"], "meta": {}, "tags": []}
        layer[0].append(uid)
        names.append(f"raw.raw_{i % 50}.table_{i}")
    models = assets - len(sources)
    per_layer = max(1, models // LAYERS)
    for i in range(models):
        depth = min(LAYERS, 1 + i // per_layer)
        while len(layer) <= depth:
            layer.append([])
        uid = f"model.wh.m_{i}"
        schema = f"layer_{depth}"
        pool = [u for d in range(max(0, depth - 2), depth) for u in layer[d][-2000:]] or layer[0]
        parents[uid] = sorted(set(rng.sample(pool, min(len(pool), rng.randint(1, 3)))))
        nodes[uid] = {"database": "analytics", "schema": schema, "name": f"m_{i}",
                      "alias": f"m_{i}", "resource_type": "model", "unique_id": uid,
                      "fqn": ["wh", schema, f"m_{i}"], "depends_on": {"nodes": parents[uid]},
                      "config": {"materialized": "table", "meta": {}}, "meta": {}, "tags": []}
        layer[depth].append(uid)
        names.append(f"analytics.{schema}.m_{i}")
    for uid in sources:
        parents[uid] = []
    data = {"metadata": {"dbt_version": "1.11.0", "generated_at": "2026-11-30T00:00:00Z"},
            "nodes": nodes, "sources": sources, "parent_map": parents}
    return data, names


def best(rounds: int, fn: Any) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--assets", type=int, default=50_000)
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    data, names = manifest(args.assets)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifest.json"
        path.write_text(json.dumps(data))
        size = path.stat().st_size

        def read_json() -> None:
            with path.open("rb") as fh:
                json.load(fh)

        baseline = best(args.repeats, read_json)
        loaded = best(args.repeats, lambda: load(path))
        graph = load(path)
    assert len(graph) == args.assets, (len(graph), args.assets)

    rng = random.Random(42)
    alerts = []
    for i in range(args.alerts):
        raw = alert_data(rng, i)
        raw["asset"]["name"] = names[rng.randrange(len(names))]
        alerts.append(Alert.model_validate(raw))
    rules = make_rules(1000)

    def route() -> None:
        router = Router(rules)
        for alert in alerts:
            router.route(alert)

    failing = [names[i] for i in random.Random(3).sample(range(SOURCES), 20)]

    def build_index() -> None:
        graph._below = None  # (the last table is kept: time building one afresh)
        graph.below(failing, depth=10)

    indexed = best(args.repeats, build_index)
    below = graph.below(failing, depth=10)
    folded = sum(1 for a in alerts if below.roots(a.asset.name, a.asset.id))
    quiet_below = graph.below([], depth=10)
    graph.below(failing, depth=10)

    def route_with_lineage() -> None:
        router = Router(rules)
        for alert in alerts:
            router.route(alert)
            below.roots(alert.asset.name, alert.asset.id)

    def route_nothing_failing() -> None:
        router = Router(rules)
        for alert in alerts:
            router.route(alert)
            quiet_below.roots(alert.asset.name, alert.asset.id)

    def route_walking_upstream() -> None:
        router = Router(rules)
        for alert in alerts[: args.alerts // 10]:
            router.route(alert)
            graph.upstream(alert.asset.name, alert.asset.id, depth=10)

    n = args.alerts
    rates = interleaved(3 * args.repeats, {
        "alone": lambda: n / timed(route), "lineage": lambda: n / timed(route_with_lineage),
        "quiet": lambda: n / timed(route_nothing_failing)})
    ratio, quiet = paired_ratio("lineage", "alone"), paired_ratio("quiet", "alone")
    walking = best(1, route_walking_upstream) * 10
    per_alert = 1 / rates["alone"]
    rows = [
        Row("10 lineage", "json.load of the manifest", baseline, "s", 1.0, "itself",
            note=f"{args.assets:,} assets, {graph.edges:,} edges, {size / 2**20:.0f} MiB"),
        Row("10 lineage", "lineage load of the manifest", loaded, "s", loaded / baseline,
            "json.load, same file", "< 2 s", loaded < 2.0),
        Row("10 lineage", "routing, 1,000 rules", rates["alone"], "alerts/s", 1.0, "itself"),
        Row("10 lineage", "routing + failing upstream (depth 10)", rates["lineage"],
            "alerts/s", ratio, "routing alone", "< 1.2x time", ratio < 1.2,
            note=f"{(ratio - 1) * per_alert * 1e6:.2f} µs more an alert; "
                 f"{folded:,} alerts below the 20 failing sources; the index built in "
                 f"{indexed * 1000:.0f} ms"),
        Row("10 lineage", "routing + failing upstream, nothing failing", rates["quiet"],
            "alerts/s", quiet, "routing alone", "< 1.2x time", quiet < 1.2),
        Row("10 lineage", "routing + walking each upstream (contrast)",
            args.alerts / walking, "alerts/s", walking * rates["alone"] / n, "routing alone"),
    ]
    rows.append(route_command(names, failing, args.repeats))
    emit(rows, args.json)
    return 0


def route_command(names: list[str], failing: list[str], repeats: int) -> Row:
    """``Notifier.explain`` per check result, with and without the lineage in the config."""
    from armor_notify.testing import Capture, build_notifier

    count = 5_000
    rng = random.Random(5)
    with tempfile.TemporaryDirectory() as tmp:
        data, _ = manifest(len(names))
        path = Path(tmp) / "manifest.json"
        path.write_text(json.dumps(data))
        capture = Capture()
        base = {"version": 1, "destinations": {"pd": {"type": "capture"}},
                "rules": [{"name": "Quality", "event": "validity_failure",
                           "destinations": ["pd"]}]}
        with_lineage = build_notifier({**base, "lineage": {"dbt_manifest": str(path)}},
                                      capture.destination_type)
        plain = build_notifier(base, capture.destination_type, outbox=with_lineage.outbox)

        def result(name: str, status: str) -> dict[str, Any]:
            return {"event_type": "validity_failure", "title": f"test on {name}",
                    "asset": {"id": name, "name": name}, "check": {"id": "t", "status": status}}

        with_lineage.enqueue(with_lineage.parse_alerts([result(n, "fail") for n in failing]))
        alerts = plain.parse_alerts([result(names[rng.randrange(len(names))], "fail")
                                     for _ in range(count)])
        history = with_lineage.outbox.history()
        assert with_lineage.lineage.current() is not None

        at = time.time()  # one time for the whole input, as `route` judges it

        def explain(nt: Any) -> None:
            for alert in alerts:
                nt.explain(alert, at=at, history=history)

        rates = interleaved(3 * repeats, {"plain": lambda: count / timed(lambda: explain(plain)),
                                          "lineage": lambda: count / timed(
                                              lambda: explain(with_lineage))})
        ratio = paired_ratio("lineage", "plain")
        folded = sum(1 for a in alerts if "folded" in (with_lineage.explain(
            a, at=at, history=history)["check"].get("lineage") or ""))
        with_lineage.close()
    return Row("10 lineage", "route (Notifier.explain) of check results, lineage on",
               rates["lineage"], "alerts/s", ratio, "the same, no lineage in the config",
               "< 1.2x time", ratio < 1.2,
               note=f"{(ratio - 1) / rates['plain'] * 1e6:.1f} µs more an alert; "
                    f"{folded:,} of {count:,} folded; ledger in a memory outbox")


if __name__ == "__main__":
    sys.exit(main())
