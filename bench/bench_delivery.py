"""Figure 1: PagerDuty alerts delivered one after another, against a bare requests loop and Apprise.

Every contender posts to the same loopback receiver (``loopback.py``, its own process), which
answers as PagerDuty's Events API v2 does (202 with the dedup key). "One after another" means:
each alert is handed over alone and the next one only after the previous delivery is final
(PagerDuty answered 202 and the result is recorded); nothing overlaps.

* ``bare requests.Session loop`` (the baseline, the practical limit): one pooled, kept-alive
  ``requests.Session`` posting the exact bytes armor-notify sends for each alert, built before
  the clock starts.
* ``armor-notify Notifier.send``: ``Notifier.send(alert)`` per alert, with the default in-memory
  outbox: routing, planning, writing the delivery to the outbox (leased to this process),
  building the PagerDuty event, posting it (on the calling thread: the PagerDuty sender promises
  bounded waits and the delivery is alone), recording the outcome.
* ``armor_notify.http.HttpClient loop`` (context, no target): the same bytes through the client
  armor-notify's PagerDuty sender posts with (a ``requests.Session`` with a pooled adapter,
  settings read once, every post under its whole-attempt deadline); it shows what the transport
  costs a post against the bare ``requests`` loop, apart from routing, the outbox and recording.
* ``bare urllib3 loop`` (context, no target): the same bytes through one ``urllib3.PoolManager``,
  the library ``requests`` runs on: what ``requests``' own per-post work costs.
* ``the same, sender on an I/O thread`` (context): figure 1 with the PagerDuty sender's
  ``bounded_waits`` promise withdrawn, so each delivery is handed to an I/O thread and back, as
  for senders that do not make it.
* ``Apprise 2.x pagerduty://``: ``Apprise.notify()`` per alert with one ``pagerduty://`` service
  pointed at the receiver (its endpoint table patched), its throttle (5.5 s between sends) off.

Also printed, without a target: the same N alerts given to armor-notify in one ``send`` call (its
deliveries then overlap on the I/O pool), and, with ``--cli``, the ``armor-notify send`` command
on a file of N alerts with a durable outbox, process start included.

    .venv/bin/python bench/bench_delivery.py [--alerts 400] [--rounds 3] [--cli]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import urllib3
from armor_notify_plugins.pagerduty import PagerDutyConfig
from armor_notify_plugins.pagerduty_sender import encode_event, trigger_event
from common import (
    INTEGRATION_KEYS,
    REST_API_KEY,
    Row,
    alert_data,
    emit,
    interleaved,
    median_of,
    pagerduty_config,
)
from loopback import Receiver, start

from armor_notify.alert import Alert
from armor_notify.api import Notifier
from armor_notify.delivery import State
from armor_notify.destinations import Notification
from armor_notify.http import HttpClient


def make_alerts(notifier: Notifier, count: int, offset: int) -> list[Alert]:
    # Ids must differ between rounds: the outbox would take a repeat as already accepted.
    return notifier.parse_alerts([alert_data(offset + i) for i in range(count)])


def event_bodies(notifier: Notifier, alerts: list[Alert]) -> tuple[str, list[bytes]]:
    """The endpoint and the exact bytes armor-notify's PagerDuty sender posts for each alert."""
    dest = notifier.config.destinations["pd-0"]
    config = dest.config
    assert isinstance(config, PagerDutyConfig)
    bodies = []
    for alert in alerts:
        [route] = notifier.route(alert)
        note = Notification(alert=alert, destination=dest.name, rule=route.rule,
                            dedup_key=route.dedup_key, source=notifier.config.defaults.source,
                            link_text=notifier.config.defaults.link_text, timeout=10)
        bodies.append(encode_event(trigger_event(config, note)))
    return config.alert_endpoint, bodies


class Contenders:
    def __init__(self, rx: Receiver, alerts: int) -> None:
        self.rx = rx
        self.count = alerts
        self.offset = 0
        self.notifier = Notifier.from_dict(pagerduty_config(rx.url))
        self.session = requests.Session()
        self.pool = urllib3.PoolManager()
        self.http = HttpClient(rx.url, {"Content-Type": "application/json"})
        self.apprise = _apprise(rx.url)

    def _next_alerts(self) -> list[Alert]:
        self.offset += self.count
        return make_alerts(self.notifier, self.count, self.offset)

    def _checked(self, fn: Callable[[], None]) -> float:
        """Rate of ``fn`` delivering ``self.count`` events, checked at the receiver."""
        before = self.rx.stats()["ok"]
        elapsed = _timed(fn)
        accepted = self.rx.stats()["ok"] - before
        if accepted != self.count:
            raise RuntimeError(f"the receiver accepted {accepted} of {self.count} events")
        return self.count / elapsed

    def bare(self) -> float:
        url, bodies = event_bodies(self.notifier, self._next_alerts())
        headers = {"Content-Type": "application/json"}

        def loop() -> None:
            for body in bodies:
                with self.session.post(url, data=body, headers=headers, timeout=10) as r:
                    if r.status_code != 202 or not r.json().get("dedup_key"):
                        raise RuntimeError(f"unexpected answer {r.status_code}")

        return self._checked(loop)

    def bare_urllib3(self) -> float:
        url, bodies = event_bodies(self.notifier, self._next_alerts())
        headers = {"Content-Type": "application/json"}

        def loop() -> None:
            for body in bodies:
                r = self.pool.request("POST", url, body=body, headers=headers, timeout=10,
                                      retries=False, redirect=False)
                if r.status != 202 or not json.loads(r.data).get("dedup_key"):
                    raise RuntimeError(f"unexpected answer {r.status}")

        return self._checked(loop)

    def http_client(self) -> float:
        url, bodies = event_bodies(self.notifier, self._next_alerts())

        def loop() -> None:
            for body in bodies:
                answer = self.http.post(url, body, timeout=10)
                if answer.status != 202 or not (answer.json_object() or {}).get("dedup_key"):
                    raise RuntimeError(f"unexpected answer {answer.status}")

        return self._checked(loop)

    def armor(self) -> float:
        alerts = self._next_alerts()

        def loop() -> None:
            for alert in alerts:
                report = self.notifier.send(alert)
                if report.exit_code != 0 or report.count(State.delivered) != 1:
                    raise RuntimeError(f"not delivered: {report.as_dict()['deliveries']}")

        return self._checked(loop)

    def armor_on_io_thread(self) -> float:
        """Figure 1 for a sender that does not promise bounded waits (email, Apprise, most
        third-party plugins): each lone delivery is handed to an I/O thread and back."""
        sender = self.notifier.dispatcher.sender_for(self.notifier.config.destinations["pd-0"])
        sender.bounded_waits = False  # type: ignore[union-attr]  # this instance only
        try:
            return self.armor()
        finally:
            del sender.bounded_waits  # type: ignore[union-attr]

    def armor_batch(self) -> float:
        alerts = self._next_alerts()

        def batch() -> None:
            report = self.notifier.send(alerts)
            if report.count(State.delivered) != len(alerts):
                raise RuntimeError(f"not all delivered: {report.as_dict()['summary']}")

        return self._checked(batch)

    def apprise_loop(self) -> float:
        alerts = self._next_alerts()
        texts = [f"{a.title}\n{a.description}" for a in alerts]

        def loop() -> None:
            for text in texts:
                if not self.apprise.notify(body=text, title=""):
                    raise RuntimeError("Apprise reported a failure")

        return self._checked(loop)

    def close(self) -> None:
        self.notifier.close()
        self.session.close()
        self.pool.clear()
        self.http.close()


def _apprise(base_url: str) -> Any:
    """An Apprise object with one pagerduty:// service aimed at the receiver, throttle off."""
    import apprise
    from apprise.plugins import pagerduty as apprise_pagerduty

    for region in list(apprise_pagerduty.PAGERDUTY_API_LOOKUP):
        apprise_pagerduty.PAGERDUTY_API_LOOKUP[region] = f"{base_url}/v2/enqueue"
    apobj = apprise.Apprise()
    if not apobj.add(f"pagerduty://{INTEGRATION_KEYS[0]}@{REST_API_KEY}/anomalyarmor"):
        raise RuntimeError("Apprise refused the pagerduty:// URL")
    for service in apobj:
        service.request_rate_per_sec = 0  # the 5.5 s default throttle between sends
    return apobj


def per_post(rate: float) -> float:
    """Microseconds a post at ``rate`` posts a second."""
    return 1e6 / rate


def _timed(fn: Callable[[], None]) -> float:
    start_at = time.perf_counter()
    fn()
    return time.perf_counter() - start_at


def cli_rate(rx: Receiver, count: int) -> float:
    """``armor-notify send FILE`` on N alerts with a durable outbox, process start included."""
    with tempfile.TemporaryDirectory() as tmp:
        config = pagerduty_config(rx.url)
        key = config["destinations"]["pd-0"].pop("integration_key")
        config["destinations"]["pd-0"]["integration_key"] = "${BENCH_PD_KEY}"
        Path(tmp, "config.yaml").write_text(json.dumps(config))  # JSON is YAML
        Path(tmp, "alerts.json").write_text(json.dumps([alert_data(9_000_000 + i)
                                                        for i in range(count)]))
        exe = Path(sys.executable).with_name("armor-notify")
        env = {**os.environ, "BENCH_PD_KEY": key}
        before = rx.stats()["ok"]
        start_at = time.perf_counter()
        subprocess.run([str(exe), "send", f"{tmp}/alerts.json", "--config", f"{tmp}/config.yaml",
                        "--state-dir", f"{tmp}/state", "--json"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start_at
        if rx.stats()["ok"] - before != count:
            raise RuntimeError("the CLI did not deliver every alert")
        return count / elapsed


def run(alerts: int, rounds: int, cli: bool, verbose: bool) -> list[Row]:
    with start() as rx:
        c = Contenders(rx, alerts)
        try:
            c.bare()  # warm up: connections, imports, the outbox's tables
            c.armor()
            c.apprise_loop()
            best = interleaved(rounds, {"bare": c.bare, "armor": c.armor,
                                        "apprise": c.apprise_loop, "batch": c.armor_batch,
                                        "io_thread": c.armor_on_io_thread,
                                        "http_client": c.http_client,
                                        "urllib3": c.bare_urllib3},
                               verbose)
            connections = rx.stats()["connections"]
            cli_value = cli_rate(rx, alerts) if cli else None
        finally:
            c.close()
    bare = best["bare"]
    sent = f"{alerts} alerts x {rounds} rounds, best round"
    medians = {name: median_of(name) for name in best}
    median_note = ("median rounds: armor-notify " f"{medians['armor'] / medians['bare']:.2f}x bare, "
                   f"{medians['armor'] / medians['apprise']:.2f}x Apprise")
    rows = [
        Row("1 delivery", "bare requests.Session loop", bare, "/s", 1.0, "itself",
            note=f"{sent}; the practical limit"),
        Row("1 delivery", "armor-notify Notifier.send, one after another", best["armor"], "/s",
            best["armor"] / bare, "bare loop", ">= 0.85x bare", best["armor"] / bare >= 0.85,
            note=f"{sent}; memory outbox"),
        Row("1 delivery", "Apprise 2.x pagerduty://, one after another", best["apprise"], "/s",
            best["apprise"] / bare, "bare loop", note=sent),
        Row("1 delivery", "armor-notify vs Apprise", best["armor"] / best["apprise"], "x",
            best["armor"] / best["apprise"], "Apprise", ">= 1.3x Apprise",
            best["armor"] / best["apprise"] >= 1.3, note=median_note),
        Row("1 delivery", "the same, sender on an I/O thread (no bounded_waits)",
            best["io_thread"], "/s", best["io_thread"] / bare, "bare loop",
            note="what a sender without the promise (email, Apprise, most plugins) gets"),
        Row("1 delivery", "armor-notify Notifier.send, N alerts in one call", best["batch"], "/s",
            best["batch"] / bare, "bare loop", note="deliveries overlap on the I/O pool"),
        Row("1 delivery", "armor_notify.http.HttpClient loop (armor-notify's transport)",
            best["http_client"], "/s", best["http_client"] / bare, "bare loop",
            note=f"{per_post(best['http_client']) - per_post(bare):+.0f} µs a post against the bare "
                 f"loop; armor-notify one after another reaches "
                 f"{best['armor'] / best['http_client']:.2f}x of it: the cost of routing, the "
                 "outbox and recording"),
        Row("1 delivery", "bare urllib3 PoolManager loop (what requests runs on)",
            best["urllib3"], "/s", best["urllib3"] / bare, "bare loop",
            note=f"requests' own work: {per_post(bare) - per_post(best['urllib3']):.0f} µs a post"),
    ]
    [batch_row] = [row for row in rows if row.figure.endswith("N alerts in one call")]
    batch_row.extra["connections_opened"] = connections
    if cli_value is not None:
        rows.append(Row("1 delivery", "armor-notify send CLI, N alerts, durable outbox",
                        cli_value, "/s", cli_value / bare, "bare loop",
                        note="one process: start-up, plugin loading, fsync'd intake included"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=400, help="alerts per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cli", action="store_true", help="also time `armor-notify send`")
    parser.add_argument("--json", action="store_true", help="rows as JSON lines (for run_all)")
    parser.add_argument("-v", "--verbose", action="store_true", help="every round on stderr")
    args = parser.parse_args()
    emit(run(args.alerts, args.rounds, args.cli, args.verbose), args.json)


if __name__ == "__main__":
    main()
