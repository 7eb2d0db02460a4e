"""What every benchmark shares: result rows, timing, the machine's description, configs, alerts.

Each figure is reported as a ratio to a baseline measured in the same run, because these machines
are shared and noisy; absolute numbers are printed for context only. Contenders are interleaved
(baseline, subject, baseline, subject, ...) and each keeps its best round, so a burst of noise
from a neighbour hurts one round of each rather than one contender.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INTEGRATION_KEYS = [f"{i:02d}" + "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5" for i in range(100)]
"""32-character Events API v2 integration keys (letters and digits), one per destination."""
REST_API_KEY = "u+abcdefghij01234567"


@dataclass
class Row:
    """One figure: a measured value, its ratio to a baseline of the same run, and its target."""

    scenario: str
    figure: str
    value: float
    unit: str
    ratio: float | None = None
    """value / baseline (or the ratio the target is about), None where no baseline applies."""
    baseline: str = ""
    target: str = ""
    passed: bool | None = None
    """True/False against the target, None for figures without one."""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def verdict(self) -> str:
        return {True: "pass", False: "MISS", None: ""}[self.passed]


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio(ratio: float | None) -> str:
    if ratio is None:
        return ""
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def table(rows: Sequence[Row], markdown: bool = False) -> str:
    head = ["scenario", "figure", "value", "ratio", "baseline (same run)", "target", "verdict"]
    cells = [[r.scenario, r.figure, f"{fmt(r.value)} {r.unit}",
              _ratio(r.ratio), r.baseline, r.target, r.verdict()]
             for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(head, *cells, strict=True)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)


def emit(rows: Sequence[Row], as_json: bool) -> None:
    """Print a scenario's rows: a table for people, or JSON lines for run_all."""
    if as_json:
        for row in rows:
            print("ROW " + json.dumps(asdict(row)), flush=True)
    else:
        print(table(rows))
        for row in rows:
            if row.note:
                print(f"  {row.figure}: {row.note}")


def rows_from_output(text: str) -> list[Row]:
    return [Row(**json.loads(line[4:])) for line in text.splitlines() if line.startswith("ROW ")]


def machine() -> dict[str, str]:
    return {
        "uname": " ".join(part for part in platform.uname() if part),
        "nproc": str(os.cpu_count()),
        "python": sys.version.split()[0],
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


ROUNDS: dict[str, list[float]] = {}
"""Every round's result of the last :func:`interleaved` call, per contender."""


def interleaved(rounds: int, contenders: dict[str, Callable[[], float]],
                verbose: bool = False) -> dict[str, float]:
    """Run each contender ``rounds`` times, interleaved, each first in turn; each returns a rate
    (higher is better). Returns each contender's best rate (every round's is left in
    ``ROUNDS``)."""
    ROUNDS.clear()
    order = list(contenders.items())
    for i in range(rounds):
        for name, fn in order[i % len(order):] + order[: i % len(order)]:
            rate = fn()
            if verbose:
                print(f"    round {i + 1} {name}: {rate:,.1f}/s", file=sys.stderr, flush=True)
            ROUNDS.setdefault(name, []).append(rate)
    return {name: max(rates) for name, rates in ROUNDS.items()}


def median_of(name: str) -> float:
    return statistics.median(ROUNDS[name])


def paired_ratio(name: str, baseline: str) -> float:
    """How many times longer ``name`` takes than ``baseline``: the median, over the last
    :func:`interleaved` call's rounds, of the two rates measured side by side in one round
    (a round's noise falls on both, so the pairs vary less than either's best)."""
    return statistics.median(b / n for n, b in zip(ROUNDS[name], ROUNDS[baseline], strict=True))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def python_cmd(script: str, *args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).with_name(script)), *args]


def run_child(script: str, *args: str, timeout: float = 600) -> list[Row]:
    """Run another bench script in a fresh process and collect its rows."""
    proc = subprocess.run(python_cmd(script, *args, "--json"), capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return rows_from_output(proc.stdout)


# -- alerts and configs ---------------------------------------------------------------------------


def alert_data(i: int, *, event_type: str = "schema_change") -> dict[str, Any]:
    """A realistic breaking-schema-change alert, distinct per ``i`` (its own id and asset)."""
    return {
        "id": f"alert_{i:07d}",
        "event_type": event_type,
        "severity": "critical",
        "title": f"2 breaking schema changes on analytics.public.orders_{i}",
        "description": "Column customer_email was removed and amount changed type.",
        "asset": {"id": f"ast_orders_{i:07d}", "name": f"analytics.public.orders_{i}",
                  "data_source": "warehouse-prod", "environment": "production",
                  "kind": "table", "tags": ["gold", "finance"]},
        "changes": [{"type": "column_removed", "column": "customer_email"},
                    {"type": "type_changed", "column": "amount", "from": "integer",
                     "to": "numeric(12,2)"}],
        "link": f"https://app.anomalyarmor.ai/alerts/{i}",
        "occurred_at": "2026-11-26T10:00:00Z",
    }


def pagerduty_config(url: str, destinations: int = 1) -> dict[str, Any]:
    """``destinations`` PagerDuty destinations (distinct integration keys, so none is suppressed
    as a duplicate target) on the loopback receiver, rate limit off, one rule to all of them."""
    dests = {f"pd-{i}": {"type": "pagerduty", "integration_key": INTEGRATION_KEYS[i],
                         "url": url, "rate_limit": "none"} for i in range(destinations)}
    return {"version": 1, "defaults": {"source": "anomalyarmor"}, "destinations": dests,
            "rules": [{"name": "Production Breaking Changes", "event": "schema_change",
                       "scope": {"environments": ["production"]},
                       "destinations": list(dests)}]}
