"""Figure 7: ``armor-notify send`` as a producer runs it, start-up included (issue 14's targets).

Every contender is a fresh process posting the same alerts to one loopback PagerDuty receiver
(``loopback.py``), so start-up counts the same way on both sides. Both run from a clean install
(``common.clean_install``: the working tree installed by pip, not editable, runtime dependencies
only, in ``bench/.clean-venv``), as a user's would; ``--venv DIR`` runs them from another venv
(``--venv .venv``: the editable dev install). This process (the receiver, the bodies) runs on
whatever Python started it:

* baseline: a bare pooled ``requests.Session`` loop in a new process (``python BARE_LOOP``),
  posting the exact bytes armor-notify's PagerDuty sender posts for these alerts, one after
  another, checking each 202;
* ``armor-notify send ALERTS.json`` with a durable outbox (a fresh state directory each run):
  plugins loaded, config validated, alerts validated, intake fsync'd, delivered, summary printed;
  target at least 0.85x the baseline's rate; ``--json`` output beside it for context;
* linearity: the same command on 1,000 and on 10,000 alerts; time should grow with the count
  (the ratio of the two times is reported: 10 is linear).

Rate limits are off (``rate_limit: none``), as the issue states the target. Each run is checked
at the receiver: every event arrived. Rounds are interleaved; the best round of each counts
(the machine is shared; the best is the least disturbed), medians are in the notes.

    .venv/bin/python bench/bench_send.py [--alerts 400] [--rounds 3] [--large 10000] [--venv .venv]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench_delivery import event_bodies
from common import Row, alert_data, clean_install, emit, pagerduty_config, venv_bin, venv_row
from loopback import Receiver, start

from armor_notify.api import Notifier

BARE_LOOP = """\
import json, sys
import requests
url, path = sys.argv[1], sys.argv[2]
with open(path, "rb") as fh:
    bodies = [json.loads(line).encode() for line in fh]
session = requests.Session()
headers = {"Content-Type": "application/json"}
for body in bodies:
    with session.post(url, data=body, headers=headers, timeout=10) as r:
        if r.status_code != 202 or not r.json().get("dedup_key"):
            raise SystemExit(f"unexpected answer {r.status_code}")
"""


class Runs:
    """The files each contender reads, made once per size; every run a new process."""

    def __init__(self, rx: Receiver, tmp: Path, bin_dir: Path) -> None:
        self.rx = rx
        self.tmp = tmp
        config = pagerduty_config(rx.url)
        self.key = config["destinations"]["pd-0"].pop("integration_key")
        config["destinations"]["pd-0"]["integration_key"] = "${BENCH_PD_KEY}"
        (tmp / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
        (tmp / "bare.py").write_text(BARE_LOOP)
        self.env = {**os.environ, "BENCH_PD_KEY": self.key}
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode caches, as an install has
        self.env.pop("ARMOR_NOTIFY_LOAD_PLUGINS", None)
        self.python = str(bin_dir / "python")
        self.exe = str(bin_dir / "armor-notify")
        self.offset = 0
        self.notifier = Notifier.from_dict(pagerduty_config(rx.url))

    def _alerts(self, count: int) -> tuple[Path, list[dict[str, object]]]:
        # New ids each run: the outbox would take a repeat as already accepted.
        self.offset += count
        data = [alert_data(self.offset + i) for i in range(count)]
        path = self.tmp / f"alerts-{self.offset}.json"
        path.write_text(json.dumps(data))
        return path, data

    def _checked(self, count: int, cmd: list[str]) -> float:
        before = self.rx.stats()["ok"]
        start_at = time.perf_counter()
        subprocess.run(cmd, env=self.env, cwd=self.tmp, check=True, stdout=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start_at
        arrived = self.rx.stats()["ok"] - before
        if arrived != count:
            raise RuntimeError(f"{cmd[1]}: the receiver accepted {arrived} of {count} events")
        return elapsed

    def bare(self, count: int) -> float:
        _, data = self._alerts(count)
        url, bodies = event_bodies(self.notifier, self.notifier.parse_alerts(data))
        lines = self.tmp / "bodies.jsonl"
        lines.write_text("".join(json.dumps(b.decode()) + "\n" for b in bodies))
        return self._checked(count, [self.python, str(self.tmp / "bare.py"), url, str(lines)])

    def send(self, count: int, *extra: str) -> float:
        path, _ = self._alerts(count)
        state = self.tmp / f"state-{self.offset}"
        return self._checked(count, [self.exe, "send", str(path), "--config",
                                     str(self.tmp / "config.yaml"), "--state-dir", str(state),
                                     *extra])


def run(alerts: int, rounds: int, large: int, venv: str | None = None) -> list[Row]:
    """``venv``: the venv the measured processes run from; None: the clean install."""
    bin_dir = venv_bin(venv) if venv else clean_install()
    times: dict[str, list[float]] = {"bare": [], "send": [], "send --json": []}
    with start() as rx, tempfile.TemporaryDirectory() as tmp:
        runs = Runs(rx, Path(tmp), bin_dir)
        runs.bare(20)  # warm up: the receiver's connections, .pyc files, the page cache
        runs.send(20)
        for _ in range(rounds):
            times["bare"].append(runs.bare(alerts))
            times["send"].append(runs.send(alerts))
            times["send --json"].append(runs.send(alerts, "--json"))
        small, big = large // 10, large
        linear = {small: runs.send(small), big: runs.send(big)} if large else {}
    best = {name: min(t) for name, t in times.items()}
    rate = {name: alerts / t for name, t in best.items()}
    base = rate["bare"]
    note = f"{alerts} alerts, best of {rounds} rounds"
    rows = [
        venv_row("7 send", bin_dir, clean=venv is None),
        Row("7 send", "bare requests loop, fresh process", rate["bare"], "/s", 1.0, "itself",
            note=f"{note}; median {alerts / statistics.median(times['bare']):,.0f}/s"),
        Row("7 send", "armor-notify send, durable outbox", rate["send"], "/s",
            rate["send"] / base, "bare loop", ">= 0.85x", rate["send"] / base >= 0.85,
            note=f"{note}; median {alerts / statistics.median(times['send']):,.0f}/s"),
        Row("7 send", "armor-notify send --json", rate["send --json"], "/s",
            rate["send --json"] / base, "bare loop",
            note=f"{note}: every delivery written out as indented JSON"),
    ]
    if linear:
        ratio = linear[big] / linear[small]
        rows.append(Row("7 send", f"send {big:,} alerts vs {small:,}", ratio, "x", ratio,
                        f"send {small:,}", "about 10x (linear)", ratio <= 11.0,
                        note=f"{linear[small]:.2f} s and {linear[big]:.2f} s; "
                             f"{big / linear[big]:,.0f} alerts/s at {big:,}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--large", type=int, default=10_000,
                        help="the linearity check's larger count (0: skip it)")
    parser.add_argument("--venv", metavar="DIR",
                        help="run the measured processes from this venv (e.g. .venv, the editable "
                             "dev install) instead of a clean install of the working tree")
    parser.add_argument("--json", action="store_true", help="rows as JSON lines (for run_all)")
    args = parser.parse_args()
    emit(run(args.alerts, args.rounds, args.large, args.venv), args.json)


if __name__ == "__main__":
    main()
