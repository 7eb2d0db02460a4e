"""Figure 5: peak memory while routing 100,000 alerts read as a stream of JSON lines.

The alerts (the routing benchmark's, one JSON object per line) are written to a file first. Each
measurement is a fresh process, so its peak resident set size (``ru_maxrss``) is its own:

* baseline: the same process reading and ``json.loads``-ing every line, with armor-notify imported
  and the config loaded, but nothing validated or routed;
* ``stream, example config``: ``Notifier.from_file(examples/armor-notify.yaml)``, then for each
  line ``notifier.parse_alerts(...)`` and ``notifier.route(...)`` over a generator, nothing kept;
* ``stream, 1,000 rules``: the same through the routing benchmark's 1,000 rules (a ``Router``);
* ``armor-notify route FILE --json``: the command line on the same file (stdout to
  ``/dev/null``), which reads JSON lines as a stream: it checks every line first, then routes
  and prints alert by alert;
* for contrast, no target: all 100,000 alerts parsed into one list before routing, which is what
  reading them as one JSON array amounts to (``read_alerts`` refuses inputs over 16 MiB anyway).

The command line is started with ``posix_spawn`` and measured with ``wait4``, so its peak is its
own (a forked child would start with its parent's resident pages).

    .venv/bin/python bench/bench_memory.py [--alerts 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from common import ROOT, Row, emit, python_cmd

MODES = ("baseline", "stream-example", "stream-1000", "cli", "list-example")


def child(mode: str, path: str) -> None:
    from bench_startup import ENV

    os.environ.update(ENV)
    from armor_notify.alert import Alert
    from armor_notify.api import Notifier

    notifier = Notifier.from_file(ROOT / "examples/armor-notify.yaml")
    route = notifier.route
    if mode == "stream-1000":
        from bench_routing import make_rules

        from armor_notify.matching import Router

        route = Router(make_rules(1000)).route

    def lines() -> Iterator[str]:
        with open(path, encoding="utf-8") as fh:
            yield from fh

    def alerts() -> Iterator[Alert]:
        for line in lines():
            [alert] = notifier.parse_alerts(json.loads(line))
            yield alert

    start = time.perf_counter()
    count = routes = 0
    if mode == "baseline":
        for line in lines():
            json.loads(line)
            count += 1
    elif mode == "list-example":
        everything = notifier.parse_alerts([json.loads(line) for line in lines()])
        for alert in everything:
            routes += len(route(alert))
            count += 1
    else:
        for alert in alerts():
            routes += len(route(alert))
            count += 1
    elapsed = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"alerts": count, "routes": routes, "seconds": elapsed,
                      "peak_mb": peak_kb / 1024}))


def measure_cli(path: str) -> dict[str, float]:
    """``armor-notify route FILE --json`` on the example config, output discarded."""
    import sys

    from bench_startup import ENV

    exe = str(Path(sys.executable).with_name("armor-notify"))
    with tempfile.TemporaryDirectory() as state:
        args = [exe, "route", path, "--json", "--config", str(ROOT / "examples/armor-notify.yaml"),
                "--state-dir", state]
        env = {**os.environ, **ENV}
        start = time.perf_counter()
        with open(os.devnull, "wb") as devnull:
            pid = os.posix_spawn(exe, args, env,
                                 file_actions=[(os.POSIX_SPAWN_DUP2, devnull.fileno(), 1)])
            _, status, usage = os.wait4(pid, 0)
        elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"armor-notify route exited {os.waitstatus_to_exitcode(status)}")
    with open(path, encoding="utf-8") as fh:
        count = sum(1 for _ in fh)
    return {"alerts": count, "routes": float("nan"), "seconds": elapsed,
            "peak_mb": usage.ru_maxrss / 1024}


def measure(mode: str, path: str) -> dict[str, float]:
    import subprocess

    if mode == "cli":
        return measure_cli(path)
    out = subprocess.run(python_cmd("bench_memory.py", "--child", mode, path),
                         capture_output=True, text=True, check=True).stdout
    result: dict[str, float] = json.loads(out.splitlines()[-1])
    return result


def run(count: int) -> list[Row]:
    from bench_routing import alert_data

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp, "alerts.jsonl"))
        rng = random.Random(42)
        with open(path, "w", encoding="utf-8") as fh:
            for i in range(count):
                fh.write(json.dumps(alert_data(rng, i)) + "\n")
        size_mb = os.path.getsize(path) / 2**20
        results = {mode: measure(mode, path) for mode in MODES}
    base = results["baseline"]["peak_mb"]
    scen = "5 memory"
    rows = [Row(scen, "baseline: read + json.loads every line", base, "MB", 1.0, "itself",
                note=f"{count:,} alerts, {size_mb:.0f} MB of JSON lines; armor-notify imported, "
                     "config loaded")]
    labels = {"stream-example": "stream, example config", "stream-1000": "stream, 1,000 rules",
              "cli": "armor-notify route FILE.jsonl --json",
              "list-example": "one list of all alerts (contrast)"}
    for mode, label in labels.items():
        r = results[mode]
        target = "" if mode == "list-example" else "< 150 MB"
        note = (f"{r['alerts'] / r['seconds']:,.0f} alerts/s checked, routed and printed as "
                "JSON, process start included" if mode == "cli" else
                f"{r['alerts'] / r['seconds']:,.0f} alerts/s parsed and routed, "
                f"{r['routes'] / r['alerts']:.2f} routes per alert")
        rows.append(Row(scen, f"peak RSS, {label}", r["peak_mb"], "MB", r["peak_mb"] / base,
                        "baseline process", target,
                        r["peak_mb"] < 150 if target else None, note=note))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="rows as JSON lines (for run_all)")
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    emit(run(args.alerts), args.json)


if __name__ == "__main__":
    main()
