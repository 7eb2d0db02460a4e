"""A destination that never answers ties up only its own share of the I/O pool.

Beside it, a Slack destination that answers at once gets every message through on its first
attempt, posted exactly once (counted at the receiver): its attempts never wait behind the hung
destination's, and the timeout of an attempt never runs while it waits for a thread.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from fake_slack import WEBHOOK_PATH, FakeSlack

from armor_notify.api import Notifier
from armor_notify.delivery import State
from armor_notify.errors import EXIT_QUEUED
from armor_notify.plugins import PluginManager

WORKERS = 4
ALERTS = 20


class SilentServer:
    """Accepts connections on 127.0.0.1 and never answers (reads and discards what comes)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._connections.append(conn)

    def close(self) -> None:
        self._stop.set()
        for conn in [self.sock, *self._connections]:
            with contextlib.suppress(OSError):
                conn.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()


def alerts(count: int) -> list[dict[str, Any]]:
    return [{"id": f"hung_{i:03d}", "event_type": "schema_change", "severity": "critical",
             "title": f"Column removed number {i:03d}",
             "asset": {"id": f"asset_{i:03d}", "name": f"db.public.t{i:03d}"}}
            for i in range(count)]


def notifier(destinations: dict[str, dict[str, Any]]) -> Notifier:
    config = {"version": 1, "destinations": destinations,
              "rules": [{"name": "All", "event": "schema_change",
                         "destinations": list(destinations)}]}
    return Notifier.from_dict(config, plugins=PluginManager().load(), rng=random.Random(5),
                              max_workers=WORKERS)


def check_slack(report: Any, slack: FakeSlack) -> None:
    fast = [d for d in report.deliveries if d.destination == "slack"]
    assert len(fast) == ALERTS
    assert {(d.state, d.attempt_count) for d in fast} == {(State.delivered, 1)}, [
        (d.state.value, d.reason) for d in fast if d.attempt_count != 1]
    posts = Counter(r.json()["text"] for r in slack.requests)
    assert len(posts) == ALERTS and set(posts.values()) == {1}


def test_a_receiver_that_never_answers_does_not_delay_another_destination(
        silent: SilentServer) -> None:
    with FakeSlack() as slack:
        nt = notifier({
            "hung": {"type": "slack", "webhook_url": f"http://127.0.0.1:{silent.port}{WEBHOOK_PATH}",
                     "timeout": 0.5, "retry_backoff": 0.05, "rate_limit": "none"},
            "slack": {"type": "slack", "webhook_url": slack.url, "timeout": 0.5,
                      "rate_limit": "none"},
        })
        with nt:
            report = nt.send(nt.parse_alerts(alerts(ALERTS)), wait=1.5)
        check_slack(report, slack)
        hung = [d for d in report.deliveries if d.destination == "hung"]
        assert {d.state for d in hung} == {State.queued}  # still retrying when send stopped
        assert report.exit_code == EXIT_QUEUED


def test_a_plugin_that_never_returns_holds_only_its_share_of_the_pool(tmp_path: Any) -> None:
    record = tmp_path / "hung.jsonl"
    with FakeSlack() as slack:
        nt = notifier({
            "hung": {"type": "scripted", "script": ["hang"], "timeout": 0.2, "record": str(record),
                     "retry_backoff": 0.05, "rate_limit": "none"},
            "slack": {"type": "slack", "webhook_url": slack.url, "timeout": 0.5,
                      "rate_limit": "none"},
        })
        with nt:
            report = nt.send(nt.parse_alerts(alerts(ALERTS)), wait=1.0)
        check_slack(report, slack)
        # Two destinations with work: the hung one holds at most half the threads at a time,
        # and a thread it holds counts until its plugin returns (or is written off after one
        # more hard timeout), so in 1 s (hard timeout 0.4 s) it could start at most 2 × 2.
        started = len([line for line in record.read_text().splitlines() if "closed" not in line])
        assert 1 <= started <= WORKERS
