"""Figure 6: the durable outbox, enqueue rate and drain throughput.

The outbox is ``SqliteOutbox.open(DIR)``: one SQLite file in WAL mode with ``synchronous=FULL``,
so every committed intake is on disk before ``enqueue`` returns. ``DIR`` is a temporary
directory (``--dir`` to choose the disk).

* enqueue, baseline: bare ``sqlite3`` in the same directory with the same settings, inserting a
  row of the same size per delivery: one transaction per delivery (one sync each), and one per
  batch of ``--batch`` deliveries. This is what the disk allows.
* enqueue, armor-notify: ``Notifier.enqueue(alert)`` per alert (one destination each: one
  delivery per alert), and ``Notifier.enqueue(batch)`` per ``--batch`` alerts: routing, the
  repeat-window lookup and the insert, in one transaction per call.
* drain: N queued deliveries, then ``Notifier.drain()`` (what ``armor-notify worker --once``
  does) to the loopback PagerDuty receiver; compared with figure 1 measured again in this run
  (``Notifier.send`` one alert after another, in-memory outbox) and with the bare
  ``requests.Session`` loop.

Targets: enqueue at least 2,000 deliveries a second; drain at least 0.8x figure 1.

    .venv/bin/python bench/bench_outbox.py [--alerts 400] [--batch 100] [--rounds 3] [--dir D]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from bench_delivery import Contenders
from common import Row, alert_data, emit, interleaved, pagerduty_config
from loopback import Receiver, start

from armor_notify.alert import Alert
from armor_notify.api import Notifier
from armor_notify.delivery import State
from armor_notify.outbox import SqliteOutbox


class Outbox:
    def __init__(self, rx: Receiver, directory: str, count: int, batch: int) -> None:
        self.count = count
        self.batch = batch
        self.dir = directory
        self.offset = 10_000_000
        self.notifier = Notifier.from_dict(pagerduty_config(rx.url),
                                           outbox=SqliteOutbox.open(Path(directory, "armor")))
        self.row = json.dumps(alert_data(0))  # about what one delivery row holds
        self.bare_db = _bare_db(Path(directory, "bare.sqlite3"))
        self.rx = rx

    def _alerts(self) -> list[Alert]:
        self.offset += self.count
        return self.notifier.parse_alerts([alert_data(self.offset + i) for i in range(self.count)])

    def bare_each(self) -> float:
        db = self.bare_db
        start_at = time.perf_counter()
        for i in range(self.count):
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t(k, v) VALUES (?, ?)", (f"{self.offset}-{i}", self.row))
            db.execute("COMMIT")
        self.offset += self.count
        return self.count / (time.perf_counter() - start_at)

    def bare_batch(self) -> float:
        db = self.bare_db
        start_at = time.perf_counter()
        for first in range(0, self.count, self.batch):
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO t(k, v) VALUES (?, ?)",
                           [(f"{self.offset}-{i}", self.row)
                            for i in range(first, min(first + self.batch, self.count))])
            db.execute("COMMIT")
        self.offset += self.count
        return self.count / (time.perf_counter() - start_at)

    def enqueue_each(self) -> float:
        alerts = self._alerts()
        start_at = time.perf_counter()
        for alert in alerts:
            self.notifier.enqueue(alert)
        rate = self.count / (time.perf_counter() - start_at)
        self._drain_quietly()
        return rate

    def enqueue_batch(self) -> float:
        alerts = self._alerts()
        start_at = time.perf_counter()
        for first in range(0, len(alerts), self.batch):
            self.notifier.enqueue(alerts[first:first + self.batch])
        rate = self.count / (time.perf_counter() - start_at)
        self._drain_quietly()
        return rate

    def _drain_quietly(self) -> None:
        """Deliver what an enqueue round left, so the next round starts from an empty queue."""
        self.notifier.drain()

    def drain(self) -> float:
        alerts = self._alerts()
        for first in range(0, len(alerts), self.batch):
            self.notifier.enqueue(alerts[first:first + self.batch])
        before = self.rx.stats()["ok"]
        start_at = time.perf_counter()
        self.notifier.drain()
        rate = self.count / (time.perf_counter() - start_at)
        delivered = self.rx.stats()["ok"] - before
        if delivered != self.count:
            raise RuntimeError(f"the receiver accepted {delivered} of {self.count}")
        left = self.notifier.inspect([State.queued, State.in_flight], limit=1)
        if left:
            raise RuntimeError("drain left deliveries queued")
        return rate

    def close(self) -> None:
        self.notifier.close()
        self.bare_db.close()


def _bare_db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE IF NOT EXISTS t (seq INTEGER PRIMARY KEY, k TEXT UNIQUE, v TEXT)")
    return db


def run(count: int, batch: int, rounds: int, directory: str | None, verbose: bool) -> list[Row]:
    with tempfile.TemporaryDirectory(dir=directory) as tmp, start() as rx:
        box = Outbox(rx, tmp, count, batch)
        fig1 = Contenders(rx, count)
        try:
            fig1.bare()
            fig1.armor()
            box.drain()  # warm up
            best = interleaved(rounds, {
                "bare_each": box.bare_each, "enqueue_each": box.enqueue_each,
                "bare_batch": box.bare_batch, "enqueue_batch": box.enqueue_batch,
                "drain": box.drain, "figure1": fig1.armor, "bare_loop": fig1.bare,
            }, verbose)
        finally:
            box.close()
            fig1.close()
    scen = "6 outbox"
    sent = f"{count} alerts x {rounds} rounds, best round"
    return [
        Row(scen, "bare sqlite3 insert, 1 per transaction", best["bare_each"], "/s", 1.0,
            "itself", note=f"{sent}; WAL, synchronous=FULL: the disk's sync rate"),
        Row(scen, "enqueue, 1 alert per call (durable)", best["enqueue_each"], "/s",
            best["enqueue_each"] / best["bare_each"], "bare, 1 per transaction", ">= 2,000/s",
            best["enqueue_each"] >= 2000),
        Row(scen, f"bare sqlite3 insert, {batch} per transaction", best["bare_batch"], "/s", 1.0,
            "itself"),
        Row(scen, f"enqueue, {batch} alerts per call (durable)", best["enqueue_batch"], "/s",
            best["enqueue_batch"] / best["bare_batch"], f"bare, {batch} per transaction",
            ">= 2,000/s", best["enqueue_batch"] >= 2000),
        Row(scen, "figure 1 again: Notifier.send one after another", best["figure1"], "/s",
            best["figure1"] / best["bare_loop"], "bare requests loop", note="memory outbox"),
        Row(scen, "drain (worker --once) from the durable outbox", best["drain"], "/s",
            best["drain"] / best["figure1"], "figure 1, same run", ">= 0.8x figure 1",
            best["drain"] / best["figure1"] >= 0.8,
            note=f"{best['drain'] / best['bare_loop']:.2f}x the bare requests loop"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=400, help="alerts (deliveries) per round")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", help="where the outbox files go (default: a temporary dir)")
    parser.add_argument("--json", action="store_true", help="rows as JSON lines (for run_all)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    emit(run(args.alerts, args.batch, args.rounds, args.dir, args.verbose), args.json)


if __name__ == "__main__":
    main()
