"""Figure 3: routing 100,000 alerts through 1,000 and 10,000 rules, no network.

The rules look like a large organisation's config: per data source and event type, rules with
environment, data-source, schema, kind, asset and tag filters and severity, change and delay
conditions, plus a few broad rules at the end that overlap the rest (so ``also_matched`` is
exercised). The alerts spread over 500 data sources, 3 environments, 20 schemas and thousands
of assets. Rules and alerts are generated from fixed seeds, so every run routes the same input.

* baseline: the same alerts through a router of one rule (routing's fixed cost: event index,
  one scope check, building the routes), measured in the same run.
* every round builds new routers, so the cost of filling the routers' memos is timed too.
* before timing, every router's routes for a sample of alerts are checked against a plain
  reference (every rule of the alert's event type, in file order, through ``Rule.matches``).

Targets: at least 50,000 alerts a second with 1,000 rules; 10,000 rules cost less than three
times 1,000 rules.

    .venv/bin/python bench/bench_routing.py [--alerts 100000] [--rules 1000 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

from common import Row, emit

from armor_notify.alert import BUILTIN_EVENT_TYPES, Alert
from armor_notify.dedup import dedup_key
from armor_notify.matching import Route, Router, Rule
from armor_notify.rules import RuleModel

DATA_SOURCES = 500
SCHEMAS = ["public", "analytics", "finance", "sales", "marketing", "ops", "core", "raw", "stage",
           "mart", "hr", "billing", "events", "web", "app", "ml", "ref", "test_etl", "tmp_load",
           "pg_temp_1"]


def rule_data(i: int) -> dict[str, Any]:
    event = BUILTIN_EVENT_TYPES[i % len(BUILTIN_EVENT_TYPES)]
    k = (i // len(BUILTIN_EVENT_TYPES)) % DATA_SOURCES
    source = f"warehouse-{k:03d}*"
    shape = (i // len(BUILTIN_EVENT_TYPES) // DATA_SOURCES + i) % 10
    base: dict[str, Any] = {"name": f"rule {i}: {event} on warehouse-{k:03d}", "event": event}
    if shape < 6:
        return {**base, "scope": {"environments": ["production", "prod-*"],
                                  "data_sources": [source],
                                  "schemas": {"exclude": ["test_*", "tmp_*", "pg_temp*"]}},
                "conditions": {"min_severity": "warning"}, "destinations": [f"slack-{k % 20}"]}
    if shape < 8:
        return {**base, "scope": {"environments": ["production"], "data_sources": [source],
                                  "tags": {"any": ["gold", f"team-{k % 20}"]},
                                  "assets": {"exclude": ["*_staging", "tmp_*"]}},
                "destinations": [f"pagerduty-{k % 10}", f"slack-{k % 20}"]}
    if shape == 8:
        return {**base, "event": "schema_change",
                "scope": {"data_sources": [source], "kinds": ["table", "view"]},
                "conditions": {"changes": "breaking"}, "destinations": [f"pagerduty-{k % 10}"]}
    return {**base, "event": "freshness_violation",
            "scope": {"data_sources": {"include": [source]}, "environments": {"exclude": ["dev"]}},
            "conditions": {"min_delay_hours": 2}, "destinations": [f"email-{k % 5}"]}


BROAD_RULES: list[dict[str, Any]] = [
    {"name": "Production gold tables", "event": list(BUILTIN_EVENT_TYPES),
     "scope": {"environments": ["production"], "tags": ["gold"]},
     "destinations": ["pagerduty-0", "audit-email"]},
    {"name": "All breaking changes", "event": "schema_change",
     "conditions": {"changes": "breaking"}, "destinations": ["audit-email"]},
    {"name": "Finance schemas", "event": list(BUILTIN_EVENT_TYPES),
     "scope": {"schemas": ["finance", "billing"], "assets": {"exclude": ["*.*.tmp_*"]}},
     "destinations": ["slack-finance"]},
]


def make_rules(count: int) -> list[Rule]:
    data = [rule_data(i) for i in range(max(0, count - len(BROAD_RULES)))]
    data += BROAD_RULES[:count]
    return [Rule.compile(i, RuleModel.model_validate(d)) for i, d in enumerate(data)]


def alert_data(rng: random.Random, i: int) -> dict[str, Any]:
    event = rng.choice(BUILTIN_EVENT_TYPES)
    k = rng.randrange(DATA_SOURCES)
    schema = rng.choice(SCHEMAS)
    table = f"table_{rng.randrange(200)}" + rng.choice(["", "", "", "_staging"])
    tags = [t for t in ("gold", "silver", "pii", f"team-{k % 20}") if rng.random() < 0.3]
    data: dict[str, Any] = {
        "id": f"alert_{i}", "event_type": event,
        "severity": rng.choice(["info", "warning", "critical"]),
        "title": f"{event} on {schema}.{table}",
        "asset": {"id": f"ast_{k}_{schema}_{table}", "name": f"db{k}.{schema}.{table}",
                  "data_source": f"warehouse-{k:03d}-{rng.choice(['eu', 'us'])}",
                  "environment": rng.choices(["production", "staging", "dev"], [7, 2, 1])[0],
                  "kind": rng.choice(["table", "view", "model"]), "tags": tags},
    }
    if event == "schema_change":
        data["changes"] = [{"type": rng.choice(["column_added", "column_removed",
                                                "type_changed", "nullability_changed"]),
                            "column": "c"}]
    if event == "freshness_violation":
        data["freshness"] = {"delay_hours": rng.choice([0.5, 1, 2, 3, 6])}
    return data


def make_alerts(count: int, seed: int = 42) -> list[Alert]:
    rng = random.Random(seed)
    return [Alert.model_validate(alert_data(rng, i)) for i in range(count)]


def reference_routes(rules: Sequence[Rule], alert: Alert) -> list[Route]:
    """What routing must produce, computed the plain way: every rule in file order."""
    owners: dict[str, Rule] = {}
    others: dict[str, list[str]] = {}
    for rule in rules:
        if not rule.model.enabled or alert.event_type not in rule.model.event:
            continue
        if not rule.matches(alert):
            continue
        for dest in rule.destinations:
            if dest not in owners:
                owners[dest] = rule
            elif rule is not owners[dest] and rule.name not in others.setdefault(dest, []):
                others[dest].append(rule.name)
    return [Route(dest, r.name, dedup_key(r.name, alert.event_type, alert.asset.id,
                                          alert.dedup_key), tuple(others.get(dest, ())))
            for dest, r in owners.items()]


def check(router: Router, rules: Sequence[Rule], alerts: Sequence[Alert]) -> int:
    """Compare with the reference; returns how many routes the sample produced."""
    total = 0
    for alert in alerts:
        got, want = router.route(alert), reference_routes(rules, alert)
        if got != want:
            raise AssertionError(f"routing differs from the reference for {alert.id}:\n"
                                 f"  got  {got}\n  want {want}")
        total += len(got)
    return total


def route_all(rules: Sequence[Rule], alerts: Sequence[Alert]) -> float:
    """Seconds to route every alert through a new router (memos start empty every round)."""
    route = Router(rules).route
    start = time.perf_counter()
    for alert in alerts:
        route(alert)
    return time.perf_counter() - start


def run(alert_count: int, rule_counts: Sequence[int], repeats: int, sample: int,
        verbose: bool) -> list[Row]:
    def say(text: str) -> None:
        if verbose:
            print(text, file=sys.stderr, flush=True)

    alerts = make_alerts(alert_count)
    say(f"  {len(alerts)} alerts made")
    rule_sets = {n: make_rules(n) for n in (1, *rule_counts)}
    routers = {n: Router(rules) for n, rules in rule_sets.items()}
    for n in rule_counts:
        step = max(1, len(alerts) // sample)
        routed = check(routers[n], rule_sets[n], alerts[::step])
        say(f"  {n} rules: {len(alerts[::step])} alerts match the reference ({routed} routes)")
    best: dict[int, float] = {}
    for r in range(repeats):
        for n, rules in rule_sets.items():
            seconds = route_all(rules, alerts)
            say(f"    round {r + 1}, {n} rules: {len(alerts) / seconds:,.0f} alerts/s")
            best[n] = min(best.get(n, seconds), seconds)
    routes = {n: sum(len(router.route(a)) for a in alerts[:10_000]) / 10_000
              for n, router in routers.items()}
    scen = "3 routing"
    rate = {n: len(alerts) / s for n, s in best.items()}
    rows = [Row(scen, "1 rule", rate[1], "alerts/s", 1.0, "itself",
                note=f"{len(alerts):,} alerts, best of {repeats}")]
    first = rule_counts[0]
    for n in rule_counts:
        target = ">= 50,000/s" if n == 1000 else ""
        rows.append(Row(scen, f"{n:,} rules", rate[n], "alerts/s", rate[n] / rate[1],
                        "1-rule router", target, rate[n] >= 50_000 if n == 1000 else None,
                        note=f"{routes[n]:.2f} routes per alert"))
    if len(rule_counts) > 1:
        last = rule_counts[-1]
        growth = best[last] / best[first]
        rows.append(Row(scen, f"time, {last:,} vs {first:,} rules", growth, "x", growth,
                        f"{first:,} rules", "< 3x", growth < 3))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--rules", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sample", type=int, default=2000,
                        help="alerts checked against the reference routing per router")
    parser.add_argument("--json", action="store_true", help="rows as JSON lines (for run_all)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    emit(run(args.alerts, args.rules, args.repeats, args.sample, args.verbose), args.json)


if __name__ == "__main__":
    main()
