"""What every benchmark shares: result rows, timing, the machine's description, configs, alerts.

Each figure is reported as a ratio to a baseline measured in the same run, because these machines
are shared and noisy; absolute numbers are printed for context only. Contenders are interleaved
(baseline, subject, baseline, subject, ...) and each keeps its best round, so a burst of noise
from a neighbour hurts one round of each rather than one contender.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
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


# -- the clean install: what a new user's venv holds ----------------------------------------------

CLEAN_VENV = ROOT / "bench" / ".clean-venv"
"""Where :func:`clean_install` keeps its venv by default (git-ignored), reused from run to run."""
_MARKER = "armor-bench-install.json"
_INFO = """\
import importlib.metadata as m, json, sys
d = m.distribution("armor-notify")
url = json.loads(d.read_text("direct_url.json") or "{}")
names = {(x.metadata["Name"] or "").lower() for x in m.distributions()}
print(json.dumps({"dists": len(names), "version": d.version, "python": sys.version.split()[0],
                  "editable": bool(url.get("dir_info", {}).get("editable"))}))
"""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _snapshot(dest: Path) -> str:
    """Copy the working tree as git sees it (tracked and untracked files, ignored ones and
    ``bench/`` left out) into ``dest``; return a hash of every copied file's path and contents.

    pip builds from this copy, not from ``ROOT``: a build in the tree would leave ``build/lib``
    behind (whose stale modules a later wheel would pick up) while someone edits it, and the
    hash is of exactly the bytes installed."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard", "--", ".", ":(exclude)bench"],
                            capture_output=True, check=True).stdout.decode()
    digest = hashlib.sha256()
    for rel in sorted(set(filter(None, listed.split("\0")))):
        source = ROOT / rel
        if not source.is_file():  # deleted in the working tree, not yet in the index
            continue
        data = source.read_bytes()
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(data)
        digest.update(f"{rel}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()


def _dependencies(pyproject: Path) -> str:
    """The project's runtime dependencies as declared (the whole pyproject.toml without tomllib)."""
    text = pyproject.read_text()
    try:
        import tomllib
    except ImportError:  # Python 3.10
        return hashlib.sha256(text.encode()).hexdigest()
    return json.dumps(sorted(tomllib.loads(text)["project"].get("dependencies", [])))


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # pip compiles the .pyc files, as for a user
    env.pop("PYTHONPATH", None)  # at_commit.py's older code is not what gets installed
    return env


def clean_install(path: Path | None = None) -> Path:
    """A venv holding the working tree installed as a user installs it: not editable, with its
    runtime dependencies only (no extras, no dev tools), ``.pyc`` files compiled by pip. Returns
    its ``bin`` directory.

    Built with the stdlib ``venv`` (and its bundled pip) from this interpreter's base Python at
    ``path`` (default :data:`CLEAN_VENV`), then reused while a marker file in it matches: the same
    Python, the same declared dependencies and the same source (a hash of the working tree's
    files). When only the source changed, the project alone is reinstalled
    (``--no-deps --force-reinstall``); otherwise the venv is built afresh (15 s here, under a minute)."""
    venv = (path or CLEAN_VENV).absolute()
    bin_dir = venv / "bin"
    venv.parent.mkdir(parents=True, exist_ok=True)
    env = _child_env()
    with open(venv.with_name(venv.name + ".lock"), "w") as lock, \
            tempfile.TemporaryDirectory(prefix="armor-bench-src-") as tmp:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the next one reuses it
        source = Path(tmp, "armor-notify")
        tree = _snapshot(source)
        wanted = {"python": f"{sys.version} {sys.base_prefix}",
                  "dependencies": _dependencies(source / "pyproject.toml"), "tree": tree}
        try:
            have = json.loads((venv / _MARKER).read_text())
        except (OSError, ValueError):
            have = {}
        python = bin_dir / "python"
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        start = time.perf_counter()
        if not python.exists() or any(have.get(k) != wanted[k] for k in ("python", "dependencies")):
            if venv.exists() and any(venv.iterdir()) and not (venv / _MARKER).exists():
                raise SystemExit(f"{venv} exists and was not made by clean_install: not deleting it")
            _say(f"building a clean install in {venv} (a new venv, then pip install of the "
                 "working tree with its runtime dependencies; under a minute) ...")
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], env=env, check=True,
                           stdout=sys.stderr)
            subprocess.run([*pip, str(source)], env=env, check=True, stdout=sys.stderr)
        elif have.get("tree") != tree:
            _say(f"the source changed: reinstalling armor-notify (no dependencies) in {venv} ...")
            subprocess.run([*pip, "--no-deps", "--force-reinstall", str(source)], env=env,
                           check=True, stdout=sys.stderr)
        else:
            return bin_dir
        info = venv_info(bin_dir)
        if info["editable"] or not any(venv.glob("lib/python*/site-packages/armor_notify/"
                                                 "__pycache__/*.pyc")):
            raise RuntimeError(f"{venv}: armor-notify is editable or has no .pyc files")
        (venv / _MARKER).write_text(json.dumps({**wanted, "version": info["version"]}, indent=1))
        _say(f"  done in {time.perf_counter() - start:.0f} s: armor-notify {info['version']}, "
             f"{info['dists']} distributions")
    return bin_dir


def venv_bin(directory: str | Path) -> Path:
    """The ``bin`` directory of a venv given as the venv's directory or its ``bin``."""
    given = Path(directory).absolute()  # not resolve(): bin/python is a link out of the venv
    for bin_dir in (given / "bin", given):
        if (bin_dir / "python").exists():
            return bin_dir
    raise SystemExit(f"{directory}: not a venv (no bin/python)")


def venv_info(bin_dir: Path) -> dict[str, Any]:
    """The installed armor-notify's version, whether it is editable, how many distributions the
    venv holds (every entry-point lookup reads them all) and the Python version."""
    out = subprocess.run([str(bin_dir / "python"), "-I", "-c", _INFO], capture_output=True,
                         text=True, check=True).stdout
    info: dict[str, Any] = json.loads(out)
    return info


def venv_row(scenario: str, bin_dir: Path, clean: bool, extra_note: str = "") -> Row:
    """A row saying which venv the measured processes ran from: the figure is its number of
    distributions."""
    info = venv_info(bin_dir)
    try:
        where = str(bin_dir.parent.relative_to(Path.cwd()))
    except ValueError:
        where = str(bin_dir.parent)
    kind = ("clean install: not editable, runtime dependencies only" if clean
            else "editable install: its .pth file imports a finder in every process"
            if info["editable"] else "not editable")
    note = (f"processes measured from {where} ({kind}); armor-notify {info['version']}, "
            f"Python {info['python']}" + (f"; {extra_note}" if extra_note else ""))
    return Row(scenario, "venv measured", info["dists"], "distributions", note=note,
               extra={"venv": str(bin_dir.parent), "clean": clean, **info})


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
