"""An experiment, not a figure: what figures 1 and 2 would be with the fixes RESULTS.md recommends.

It patches, in this process only, the two costs that profiling found outside routing, then runs
figures 1 and 2 as usual, each beside the unpatched run in a separate process:

* ``pool``: one I/O pool per process instead of one per ``Dispatcher.deliver`` call. Today every
  ``send`` starts new threads, and since each PagerDuty/Slack sender keeps one
  ``requests.Session`` per thread, every ``send`` also opens new TCP (and TLS) connections, while
  the old sessions stay open in the sender's list until ``Notifier.close()``.
* ``alerts``: the outbox parses each stored alert's JSON again, with every validator, whenever it
  reads a delivery back (``claim`` and ``find``, twice per ``send``); here parsed alerts are
  remembered per JSON text (an ``Alert`` is frozen, so sharing one is safe).

    .venv/bin/python bench/experiment_delivery_fixes.py [--patch pool,alerts] [--alerts 400]
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Any

from common import Row, emit, run_child, table


def apply(patches: set[str]) -> None:
    import armor_notify.dispatcher as dispatcher
    import armor_notify.outbox as outbox
    from armor_notify.alert import Alert
    from armor_notify.pool import IOPool

    if "pool" in patches:
        shared = IOPool(32)

        def one_pool(*args: Any, **kwargs: Any) -> IOPool:
            return shared

        dispatcher.IOPool = one_pool  # type: ignore[assignment,misc]
        IOPool.close = lambda self: None  # type: ignore[method-assign]
    if "alerts" in patches:
        @functools.lru_cache(maxsize=4096)
        def parse(text: str) -> Alert:
            return Alert.model_validate_json(text, context={"event_types": None})

        class CachedAlert:
            @staticmethod
            def model_validate_json(text: str, context: Any = None) -> Alert:
                return parse(text)

        outbox.Alert = CachedAlert  # type: ignore[assignment,misc]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", default="pool,alerts", help="pool, alerts or both")
    parser.add_argument("--alerts", type=int, default=400)
    parser.add_argument("--child", choices=["delivery", "fanout"], help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    patches = {p for p in args.patch.split(",") if p}
    if args.child:
        apply(patches)
        if args.child == "delivery":
            import bench_delivery
            emit(bench_delivery.run(args.alerts, 3, False, False), args.json)
        else:
            import bench_fanout
            emit(bench_fanout.run(20, 3, 10, 0.05, False), args.json)
        return
    rows: list[Row] = []
    for scenario in ("delivery", "fanout"):
        for label, patch in (("as is", ""), (f"patched: {args.patch}", args.patch)):
            for row in run_child("experiment_delivery_fixes.py", "--child", scenario,
                                 "--patch", patch, "--alerts", str(args.alerts)):
                if "armor-notify" in row.figure:
                    row.scenario = f"{row.scenario} ({label})"
                    rows.append(row)
    print(table(rows))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
