"""Run every benchmark, each in a fresh process, and print one table.

    .venv/bin/python bench/run_all.py [--markdown] [--only delivery,routing] [--quick]

Every figure is a ratio to a baseline measured in the same run (see each script's docstring for
what it times and against what); absolute numbers are for context only. ``--quick`` runs smaller
inputs for a fast look (the targets are stated for the default sizes).
"""

from __future__ import annotations

import argparse
import sys
import time

from common import Row, machine, run_child, table

# (name, script, arguments for the default run, arguments for --quick)
SCENARIOS = [
    ("delivery", "bench_delivery.py", ["--cli"], ["--alerts", "150", "--rounds", "2"]),
    ("fanout", "bench_fanout.py", [], ["--alerts", "8", "--rounds", "2"]),
    ("routing", "bench_routing.py", [], ["--alerts", "20000", "--repeats", "2"]),
    ("startup", "bench_startup.py", ["--importtime"], ["--runs", "5"]),
    ("memory", "bench_memory.py", [], ["--alerts", "20000"]),
    ("outbox", "bench_outbox.py", [], ["--alerts", "150", "--rounds", "2"]),
    ("send", "bench_send.py", [], ["--rounds", "2", "--large", "2000"]),
    ("postgres", "bench_postgres.py", [], ["--quick"]),
    ("serve", "bench_serve.py", [], ["--alerts", "400", "--rounds", "1"]),
    ("lineage", "bench_lineage.py", [], ["--assets", "5000", "--alerts", "20000", "--repeats", "2"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--only", help="comma-separated: " + ", ".join(s[0] for s in SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="smaller inputs, a fast look")
    args = parser.parse_args()
    wanted = set(args.only.split(",")) if args.only else {s[0] for s in SCENARIOS}
    info = machine()
    print(f"machine: {info['uname']}")
    print(f"cores: {info['nproc']}  python: {info['python']}  date: {info['date']}  "
          f"load average at start: {info['load']}", flush=True)
    rows: list[Row] = []
    for name, script, default, quick in SCENARIOS:
        if name not in wanted:
            continue
        start = time.perf_counter()
        print(f"running {script} ...", file=sys.stderr, flush=True)
        rows += run_child(script, *(quick if args.quick else default))
        print(f"  done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    print()
    print(table(rows, markdown=args.markdown))
    print()
    for row in rows:
        if row.note:
            print(f"- {row.scenario} / {row.figure}: {row.note}")
    missed = [r for r in rows if r.passed is False]
    print(f"\n{sum(r.passed is True for r in rows)} targets met, {len(missed)} missed"
          + (": " + "; ".join(f"{r.scenario} {r.figure}" for r in missed) if missed else ""))


if __name__ == "__main__":
    main()
