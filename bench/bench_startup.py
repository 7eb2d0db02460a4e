"""Figure 4: start-up, as a cold process each time (issue 14's targets).

Times whole commands, each run as a new process, interleaved and repeated, against the bare
interpreter of the same venv (``python -c pass``). They run as a new user's would: from a clean
install (``common.clean_install``: a venv holding the working tree installed by pip, not editable,
with its runtime dependencies only; built once in ``bench/.clean-venv`` and reused while the
source is unchanged). ``--venv DIR`` runs them from another venv instead (``--venv .venv``: the
editable dev install, whose ``.pth`` finder slows every process, the bare interpreter's too):

* ``armor-notify --version``, ``--help`` and click's shell completion of ``armor-notify ou<Tab>``:
  target at most 5x the bare interpreter;
* ``armor-notify validate`` on ``examples/armor-notify.yaml`` and ``armor-notify route`` of
  ``examples/alerts/schema_change_breaking.json`` with it (plugins loaded, config validated,
  alert routed, table printed): target at most 8x;
* for context: the libraries armor-notify is built on, imported and nothing else (``click``,
  ``pydantic``'s models, ``yaml``, ``pluggy`` and an entry-point lookup): the floor no command
  that validates a config can go below, and the same with ``requests`` (what ``send`` adds);
  and ``apprise --dry-run`` with an equivalent Apprise YAML config (the same four destinations as
  URLs, the rules' event types as tags), when the venv has Apprise (an optional extra: the clean
  install has not, ``.venv`` has).

Each figure is the median of ``--runs`` runs, as a ratio to the baseline's median. The commands
run as a user's would: with bytecode caching on (pip compiles an installed package; the warm-up
run writes the caches of an editable install), whatever ``PYTHONDONTWRITEBYTECODE`` says here,
from a scratch directory. ``--importtime`` also prints the ten slowest imports of
``armor-notify route`` (``python -X importtime``). ``--instructions`` counts each command's
instructions under valgrind's callgrind instead of timing it: slower, but the same count on a busy
machine, so before/after comparisons (``at_commit.py``) hold where times swing by 2x.

    .venv/bin/python bench/bench_startup.py [--runs 15] [--importtime] [--venv .venv]
    .venv/bin/python bench/bench_startup.py --instructions
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import INTEGRATION_KEYS, REST_API_KEY, ROOT, Row, clean_install, emit, venv_bin, venv_row

ENV = {
    "PAGERDUTY_INTEGRATION_KEY": INTEGRATION_KEYS[0],
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXX",
    "SLACK_DEV_WEBHOOK_URL": "https://hooks.slack.com/services/T00000000/B11111111/YYYYYYYYYYYY",
    "SMTP_PASSWORD": "not-a-real-password",
}

# The example config's destinations as Apprise URLs, tagged with the event types its rules send
# them; `--tag schema_change` then selects what armor-notify's rules select for that alert.
APPRISE_CONFIG = f"""\
version: 1
urls:
  - pagerduty://{INTEGRATION_KEYS[0]}@{REST_API_KEY}/anomalyarmor/?region=us:
      - tag: schema_change, freshness_violation
  - https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXX:
      - tag: schema_change, freshness_violation, metric_anomaly, validity_failure, discovery_failed
  - https://hooks.slack.com/services/T00000000/B11111111/YYYYYYYYYYYY:
      - tag: development
  - mailto://alerts%40example.com:not-a-real-password@smtp.example.com:587?to=data-eng-list@example.com&mode=starttls:
      - tag: schema_change, discovery_failed
"""


LIBRARIES = ("import click, pydantic, yaml, pluggy, importlib.metadata; pydantic.BaseModel; pydantic.Field; "
             "pydantic.TypeAdapter; importlib.metadata.entry_points(group='armor_notify')")
FLOOR = "libraries alone (the floor)"

TARGETS = {"armor-notify --version": 5.0, "armor-notify --help": 5.0,
           "shell completion": 5.0, "armor-notify validate": 8.0, "armor-notify route": 8.0}
"""Command → the most it may take, as a multiple of ``python -c pass``."""


def commands(tmp: str, bin_dir: Path) -> dict[str, list[str]]:
    python = str(bin_dir / "python")
    exe = str(bin_dir / "armor-notify")
    config = str(ROOT / "examples/armor-notify.yaml")
    Path(tmp, "apprise.yml").write_text(APPRISE_CONFIG)
    cmds = {
        "python -c pass": [python, "-c", "pass"],
        "armor-notify --version": [exe, "--version"],
        "armor-notify --help": [exe, "--help"],
        "shell completion": [exe],  # with _ARMOR_NOTIFY_COMPLETE set: see COMPLETION
        "armor-notify validate": [exe, "validate", "--config", config],
        "armor-notify route": [exe, "route",
                               str(ROOT / "examples/alerts/schema_change_breaking.json"),
                               "--config", config],
        FLOOR: [python, "-c", LIBRARIES],
        "libraries + requests": [python, "-c", LIBRARIES + "; import requests"],
        "apprise --dry-run": [str(bin_dir / "apprise"), "--dry-run", "--config",
                              f"{tmp}/apprise.yml", "--tag", "schema_change", "--body",
                              "2 breaking schema changes on analytics.public.orders"],
    }
    if not (bin_dir / "apprise").exists():
        del cmds["apprise --dry-run"]
    return cmds


COMPLETION = {"_ARMOR_NOTIFY_COMPLETE": "bash_complete", "COMP_WORDS": "armor-notify ou",
              "COMP_CWORD": "1"}


def run_once(cmd: list[str], env: dict[str, str], cwd: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    if env.get("_ARMOR_NOTIFY_COMPLETE") and "outbox" not in proc.stdout:
        raise RuntimeError(f"shell completion did not offer 'outbox': {proc.stdout[-500:]}")
    return elapsed


def import_times(cmd: list[str], env: dict[str, str], bin_dir: Path, cwd: str,
                 top: int = 10) -> list[tuple[int, str]]:
    """The slowest imports (cumulative microseconds) of a command run with -X importtime."""
    script = cmd[0]
    with open(script) as fh:
        is_python_script = fh.readline().startswith("#!")
    args = ([str(bin_dir / "python"), "-X", "importtime", script, *cmd[1:]] if is_python_script
            else cmd)
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    rows = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
            if cumulative.isdigit():
                rows.append((int(cumulative), name))
    return sorted(rows, reverse=True)[:top]


def instructions(cmd: list[str], env: dict[str, str], cwd: str) -> int:
    """How many instructions ``cmd`` executes (valgrind's callgrind): the same count from run to
    run whatever else the machine is doing, where times on a shared machine swing by 2x."""
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                           *cmd], env=env, cwd=cwd, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"callgrind of {cmd[0]} failed ({proc.returncode}): "
                           f"{proc.stderr[-2000:]}")
    return int(found.group(1))


def count_instructions(venv: str | None = None) -> list[Row]:
    """Each command once under callgrind (after a warm-up run): instructions, as a ratio to
    ``python -c pass``'s. Slow (about a minute) but repeatable: for before/after comparisons
    (``at_commit.py``) on a busy machine. The targets are stated in time, so no verdicts."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (Debian: apt-get install valgrind)")
    bin_dir = venv_bin(venv) if venv else clean_install()
    env = {**os.environ, **ENV}
    env.pop("ARMOR_NOTIFY_LOAD_PLUGINS", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd in commands(tmp, bin_dir).items():
            run_env = {**env, **COMPLETION} if name == "shell completion" else env
            run_once(cmd, run_env, tmp)
            # valgrind runs the interpreter, not the script's #! line: name the interpreter.
            counts[name] = instructions(cmd if cmd[0].endswith("python") else
                                        [str(bin_dir / "python"), *cmd], run_env, tmp)
    base = counts["python -c pass"]
    rows = [venv_row("4 start-up", bin_dir, clean=venv is None)]
    rows += [Row("4 start-up", f"{name} (instructions)", count / 1e6, "M", count / base,
                 "python -c pass", note="one run under callgrind")
             for name, count in counts.items()]
    return rows


def run(runs: int, importtime: bool, venv: str | None = None) -> list[Row]:
    """``venv``: the venv to run every command from; None: the clean install."""
    bin_dir = venv_bin(venv) if venv else clean_install()
    env = {**os.environ, **ENV}
    env.pop("ARMOR_NOTIFY_LOAD_PLUGINS", None)  # every installed plugin loads, as for a user
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode caches, as an installed package has
    envs = {name: {**env, **COMPLETION} if name == "shell completion" else env
            for name in TARGETS}
    with tempfile.TemporaryDirectory() as tmp:
        cmds = commands(tmp, bin_dir)
        for name, cmd in cmds.items():  # warm the page cache and write the .pyc files
            run_once(cmd, envs.get(name, env), tmp)
        times: dict[str, list[float]] = {name: [] for name in cmds}
        for _ in range(runs):
            for name, cmd in cmds.items():
                times[name].append(run_once(cmd, envs.get(name, env), tmp))
        slowest = (import_times(cmds["armor-notify route"], env, bin_dir, tmp) if importtime
                   else [])
    median = {name: statistics.median(t) for name, t in times.items()}
    base = median["python -c pass"]
    ms = 1000
    no_apprise = "" if "apprise --dry-run" in cmds else (
        "Apprise is not installed here (an optional extra, not a runtime dependency): "
        "its rows are left out (--venv .venv has it)")
    rows = [venv_row("4 start-up", bin_dir, clean=venv is None, extra_note=no_apprise)]
    for name in cmds:
        ratio = median[name] / base
        limit = TARGETS.get(name)
        note = f"median of {runs}, min {min(times[name]) * ms:.0f} ms"
        rows.append(Row("4 start-up", name, median[name] * ms, "ms", ratio, "python -c pass",
                        target=f"<= {limit:g}x" if limit else "",
                        passed=ratio <= limit if limit else None, note=note))
    if "apprise --dry-run" in median:
        route = median["armor-notify route"] / median["apprise --dry-run"]
        rows.append(Row("4 start-up", "armor-notify route vs apprise --dry-run", route, "x",
                        route, "apprise --dry-run"))
    if slowest:
        route_row = next(r for r in rows if r.figure == "armor-notify route")
        route_row.extra["slowest_imports_us"] = slowest
        route_row.note += "; slowest imports: " + ", ".join(
            f"{name} {us / 1000:.0f} ms" for us, name in slowest[:6])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--importtime", action="store_true",
                        help="also list the slowest imports of armor-notify route")
    parser.add_argument("--venv", metavar="DIR",
                        help="run every command from this venv (e.g. .venv, the editable dev "
                             "install) instead of a clean install of the working tree")
    parser.add_argument("--instructions", action="store_true",
                        help="count each command's instructions under valgrind instead of "
                             "timing it: repeatable on a busy machine, for before/after")
    parser.add_argument("--json", action="store_true", help="rows as JSON lines (for run_all)")
    args = parser.parse_args()
    rows = (count_instructions(args.venv) if args.instructions
            else run(args.runs, args.importtime, args.venv))
    emit(rows, args.json)


if __name__ == "__main__":
    main()
