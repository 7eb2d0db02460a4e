"""Figure 2: one alert fanned out to 10 destinations whose receiver takes 50 ms to answer.

Ten PagerDuty destinations (ten integration keys, so none is suppressed as a duplicate target)
on one loopback receiver that holds every answer for ``--latency`` seconds (timers, so all ten
wait at once). Alerts are sent one after another; each alert's wall time runs from handing it
over until all ten deliveries are final.

* baseline ``one destination's latency``: a single kept-alive ``requests`` post to the same
  receiver, measured in the same run (about 50 ms plus loopback): the floor for an alert.
* ``10 kept-alive requests.Sessions on 10 threads``: the practical limit for the fan-out.
* ``armor-notify Notifier.send``: one ``send(alert)`` per alert, in-memory outbox.
* ``Apprise 2.x``: one ``Apprise.notify()`` per alert over ten ``pagerduty://`` services (its
  shared thread pool), throttles off.

Target: at least 150 deliveries a second, i.e. one alert's wall time within 1.35x one
destination's latency.

    .venv/bin/python bench/bench_fanout.py [--alerts 20] [--rounds 3] [--destinations 10]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from statistics import median
from typing import Any

import requests
from common import INTEGRATION_KEYS, REST_API_KEY, Row, alert_data, emit, pagerduty_config
from loopback import Receiver, start

from armor_notify.api import Notifier
from armor_notify.delivery import State


class Fanout:
    def __init__(self, rx: Receiver, alerts: int, destinations: int) -> None:
        self.rx = rx
        self.count = alerts
        self.width = destinations
        self.offset = 0
        self.notifier = Notifier.from_dict(pagerduty_config(rx.url, destinations))
        self.sessions = [requests.Session() for _ in range(destinations)]
        self.threads = ThreadPoolExecutor(destinations)
        self.apprise = _apprise(rx.url, destinations)
        self.url = f"{rx.url}/v2/enqueue"

    def _post(self, i: int, body: bytes) -> None:
        with self.sessions[i].post(self.url, data=body, timeout=10,
                                   headers={"Content-Type": "application/json"}) as r:
            if r.status_code != 202:
                raise RuntimeError(f"unexpected answer {r.status_code}")

    def _bodies(self) -> list[list[bytes]]:
        self.offset += self.count
        return [[(f'{{"routing_key":"{INTEGRATION_KEYS[d]}","event_action":"trigger",'
                  f'"dedup_key":"k{self.offset + i}","payload":{{"summary":"x","source":"s",'
                  f'"severity":"critical"}}}}').encode() for d in range(self.width)]
                for i in range(self.count)]

    def _checked(self, deliveries: int, fn: Any) -> float:
        """Seconds per alert, checked at the receiver."""
        before = self.rx.stats()["ok"]
        start_at = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start_at
        accepted = self.rx.stats()["ok"] - before
        if accepted != deliveries:
            raise RuntimeError(f"the receiver accepted {accepted} of {deliveries}")
        return elapsed / self.count

    def single(self) -> float:
        bodies = self._bodies()
        return self._checked(self.count, lambda: [self._post(0, b[0]) for b in bodies])

    def bare(self) -> float:
        bodies = self._bodies()

        def loop() -> None:
            for per_dest in bodies:
                list(self.threads.map(self._post, range(self.width), per_dest))

        return self._checked(self.count * self.width, loop)

    def armor(self) -> float:
        self.offset += self.count
        alerts = self.notifier.parse_alerts([alert_data(self.offset + i)
                                             for i in range(self.count)])

        def loop() -> None:
            for alert in alerts:
                report = self.notifier.send(alert)
                if report.count(State.delivered) != self.width:
                    raise RuntimeError(f"not all delivered: {report.as_dict()['summary']}")

        return self._checked(self.count * self.width, loop)

    def apprise_loop(self) -> float:
        self.offset += self.count
        texts = [f"alert {self.offset + i}: 2 breaking schema changes" for i in range(self.count)]

        def loop() -> None:
            for text in texts:
                if not self.apprise.notify(body=text):
                    raise RuntimeError("Apprise reported a failure")

        return self._checked(self.count * self.width, loop)

    def close(self) -> None:
        self.notifier.close()
        self.threads.shutdown()
        for s in self.sessions:
            s.close()


def _apprise(base_url: str, destinations: int) -> Any:
    import apprise
    from apprise.plugins import pagerduty as apprise_pagerduty

    for region in list(apprise_pagerduty.PAGERDUTY_API_LOOKUP):
        apprise_pagerduty.PAGERDUTY_API_LOOKUP[region] = f"{base_url}/v2/enqueue"
    apobj = apprise.Apprise()
    for d in range(destinations):
        if not apobj.add(f"pagerduty://{INTEGRATION_KEYS[d]}@{REST_API_KEY}/anomalyarmor"):
            raise RuntimeError("Apprise refused the pagerduty:// URL")
    for service in apobj:
        service.request_rate_per_sec = 0
    return apobj


def run(alerts: int, rounds: int, destinations: int, latency: float,
        verbose: bool) -> list[Row]:
    with start(latency) as rx:
        f = Fanout(rx, alerts, destinations)
        try:
            for fn in (f.single, f.bare, f.armor, f.apprise_loop):  # warm up
                fn()
            best: dict[str, float] = {}
            every: dict[str, list[float]] = {}
            for i in range(rounds):
                for name, fn in (("single", f.single), ("bare", f.bare), ("armor", f.armor),
                                 ("apprise", f.apprise_loop)):
                    seconds = fn()
                    if verbose:
                        print(f"    round {i + 1} {name}: {seconds * 1000:.1f} ms/alert")
                    best[name] = min(best.get(name, seconds), seconds)
                    every.setdefault(name, []).append(seconds)
        finally:
            f.close()
    one = best["single"]
    rate = {k: destinations / v for k, v in best.items() if k != "single"}
    scen = "2 fan-out"
    ms = 1000
    return [
        Row(scen, "one destination's latency (1 post)", one * ms, "ms", 1.0, "itself",
            note=f"receiver latency {latency * ms:g} ms; {alerts} alerts x {rounds} rounds, "
                 "best round"),
        Row(scen, f"bare: {destinations} Sessions on {destinations} threads, per alert",
            best["bare"] * ms, "ms", best["bare"] / one, "1 destination's latency",
            note=f"{rate['bare']:.0f} deliveries/s"),
        Row(scen, f"armor-notify send, 1 alert to {destinations}, per alert", best["armor"] * ms,
            "ms", best["armor"] / one, "1 destination's latency", "<= 1.35x",
            best["armor"] / one <= 1.35,
            note=f"median round {median(every['armor']) / median(every['single']):.2f}x"),
        Row(scen, "armor-notify deliveries a second", rate["armor"], "/s",
            rate["armor"] / rate["bare"], f"bare {destinations}-thread fan-out", ">= 150/s",
            rate["armor"] >= 150),
        Row(scen, f"Apprise 2.x, 1 alert to {destinations}, per alert", best["apprise"] * ms,
            "ms", best["apprise"] / one, "1 destination's latency",
            note=f"{rate['apprise']:.0f} deliveries/s (anchors.md: about 89)"),
        Row(scen, "armor-notify vs Apprise, deliveries a second", rate["armor"] / rate["apprise"],
            "x", rate["armor"] / rate["apprise"], "Apprise"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20, help="alerts per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--destinations", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.05, help="receiver latency, seconds")
    parser.add_argument("--json", action="store_true", help="rows as JSON lines (for run_all)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    emit(run(args.alerts, args.rounds, args.destinations, args.latency, args.verbose), args.json)


if __name__ == "__main__":
    main()
