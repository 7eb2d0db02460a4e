"""How routing cost grows with the number of rules.

Routes the same alerts through routers of 1 rule and of N rules (spread over every event type,
each with globs in its scope), and through the N rules scanned without the event-type index.
Reports ratios against the 1-rule baseline measured in the same run, since these machines are
shared and noisy; absolute numbers are printed only for context.

    .venv/bin/python bench/bench_matching.py [--rules 5000] [--alerts 2000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from armor_notify.alert import BUILTIN_EVENT_TYPES, Alert
from armor_notify.matching import Router, Rule
from armor_notify.rules import RuleModel


def make_rules(count: int) -> list[Rule]:
    rules = []
    for i in range(count):
        event = BUILTIN_EVENT_TYPES[i % len(BUILTIN_EVENT_TYPES)]
        rules.append(Rule.compile(i, RuleModel.model_validate({
            "name": f"rule {i}",
            "event": event,
            "scope": {"environments": ["production", "prod-*"],
                      "data_sources": {"include": [f"warehouse-{i % 50}-*"]},
                      "assets": {"exclude": ["*_staging", "tmp_*"]}},
            "destinations": [f"dest-{i % 20}"],
        })))
    return rules


def make_alerts(count: int) -> list[Alert]:
    return [Alert.model_validate({
        "event_type": BUILTIN_EVENT_TYPES[i % len(BUILTIN_EVENT_TYPES)],
        "title": f"alert {i}",
        "asset": {"id": f"a{i}", "name": f"db.public.table_{i}", "environment": "production",
                  "data_source": f"warehouse-{i % 50}-eu"},
    }) for i in range(count)]


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=5000)
    parser.add_argument("--alerts", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    alerts = make_alerts(args.alerts)
    rules = make_rules(args.rules)
    one = Router(make_rules(1))
    many = Router(rules)

    def unindexed() -> None:
        for alert in alerts:
            [r for r in rules if alert.event_type in r.model.event and r.matches(alert)]

    base = best_of(args.repeats, lambda: [one.route(a) for a in alerts])
    indexed = best_of(args.repeats, lambda: [many.route(a) for a in alerts])
    scan = best_of(args.repeats, unindexed)
    per_alert = indexed / len(alerts) * 1e6
    print(f"{len(alerts)} alerts, {len(rules)} rules over {len(BUILTIN_EVENT_TYPES)} event types")
    print(f"  1 rule (baseline)        1.0x   ({base / len(alerts) * 1e6:8.1f} µs/alert)")
    print(f"  {len(rules)} rules, indexed   {indexed / base:6.1f}x   ({per_alert:8.1f} µs/alert)")
    print(f"  {len(rules)} rules, scanned   {scan / base:6.1f}x   "
          f"({scan / len(alerts) * 1e6:8.1f} µs/alert)")
    print(f"  the index saves {scan / indexed:.1f}x over a scan")


if __name__ == "__main__":
    main()
