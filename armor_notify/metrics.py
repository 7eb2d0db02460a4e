"""What ``armor-notify serve`` counts, in Prometheus's text format (``GET /metrics``).

Counters and the latency histogram are fed as deliveries become final (the in-process workers'
``on_final``) and as alerts are accepted; the queue's depth, the age of its oldest waiting
delivery, the checks by state and the mutes in force are read from the outbox at each scrape, so
they are right whichever process (this one, a separate ``armor-notify worker``, ``send`` or
``mute``) wrote them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .delivery import Delivery
    from .outbox_core import Summary

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class Metrics:
    """One registry per service (never the global one: tests and embedders run several)."""

    def __init__(self, summary: Callable[[float], Summary],
                 waits: Callable[[], Mapping[str, int]] = dict) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.accepted = Counter("armor_notify_alerts_accepted", "Alerts accepted over HTTP.",
                                ["source"], registry=self.registry)
        self.repeats = Counter("armor_notify_alerts_repeated",
                               "Alerts accepted again within the repeat window (not resent).",
                               ["source"], registry=self.registry)
        self.deliveries = Counter("armor_notify_deliveries",
                                  "Deliveries that became final, by destination, type and state.",
                                  ["destination", "type", "state"], registry=self.registry)
        self.attempts = Counter("armor_notify_attempts", "Attempts made by final deliveries.",
                                ["destination", "type"], registry=self.registry)
        self.retries = Counter("armor_notify_retries",
                               "Attempts after the first, by final deliveries.",
                               ["destination", "type"], registry=self.registry)
        self.latency = Histogram("armor_notify_delivery_latency_seconds",
                                 "From acceptance to the final outcome.", ["destination"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_Queue(summary, waits))

    def accepted_alerts(self, source: str, fresh: int, repeated: int) -> None:
        self.accepted.labels(source).inc(fresh)
        if repeated:
            self.repeats.labels(source).inc(repeated)

    def final(self, delivery: Delivery) -> None:
        labels = (delivery.destination, delivery.destination_type)
        self.deliveries.labels(*labels, delivery.state.value).inc()
        attempts = delivery.attempt_count
        if attempts:
            self.attempts.labels(*labels).inc(attempts)
        if attempts > 1:
            self.retries.labels(*labels).inc(attempts - 1)
        if delivery.created_at:
            self.latency.labels(delivery.destination).observe(
                max(0.0, time.time() - delivery.created_at))

    def text(self) -> bytes:
        return generate_latest(self.registry)


class _Queue(Collector):
    """The outbox's depth by state, its oldest waiting delivery, the checks and the mutes, read
    at each scrape."""

    def __init__(self, summary: Callable[[float], Summary],
                 waits: Callable[[], Mapping[str, int]]) -> None:
        self.summary = summary
        self.waits = waits

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        now = time.time()
        found = self.summary(now)
        depth = GaugeMetricFamily("armor_notify_queue_depth", "Deliveries in the outbox by state.",
                                  labels=["state"])
        for state, count in sorted(found.counts.items()):
            depth.add_metric([state], count)
        yield depth
        oldest = GaugeMetricFamily("armor_notify_oldest_waiting_seconds",
                                   "Age of the oldest queued or in-flight delivery (0: none).")
        oldest.add_metric([], max(0.0, now - found.oldest_waiting_since)
                          if found.oldest_waiting_since is not None else 0.0)
        yield oldest
        checks = GaugeMetricFamily("armor_notify_checks",
                                   "Checks in the check-state ledger by state.", labels=["state"])
        for state, count in sorted(found.checks.items()):
            checks.add_metric([state], count)
        yield checks
        yield GaugeMetricFamily("armor_notify_checks_missing",
                                "Checks that stopped reporting (check_missing), failing or "
                                "passing.", value=found.checks_missing)
        yield GaugeMetricFamily("armor_notify_mutes_active", "Mutes in force.",
                                value=found.mutes)
        yield GaugeMetricFamily("armor_notify_held_deliveries",
                                "Deliveries held by mutes until they end.", value=found.held)
        waits = CounterMetricFamily("armor_notify_rate_limit_waits",
                                    "Times this process found a destination's rate limit "
                                    "reached and left its deliveries waiting.",
                                    labels=["destination"])
        for destination, count in sorted(self.waits().items()):
            waits.add_metric([destination], count)
        yield waits
