"""Under load: every delivery is posted exactly once, counted at the receivers.

An attempt's timeout starts when its I/O starts, never while it waits for an I/O thread; an
attempt that was not started when ``send`` gives up never starts; and an attempt that was given
up on but answers before its retry falls due is recorded as it answered (not sent again).
Small scale (a few workers, short timeouts, a receiver that answers in a fraction of the
timeout) reproduces what 1,000 alerts did at the default scale.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from fake_pagerduty import FakePagerDuty
from fake_slack import FakeSlack
from fake_smtp import HOST, FakeSMTPServer, RecordingHandler, free_port, ignore_known_aiosmtpd_warnings

from armor_notify.api import Notifier
from armor_notify.delivery import State
from armor_notify.outbox import SqliteOutbox
from armor_notify.plugins import PluginManager

PD_KEY = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"
# More deliveries than threads, each taking far less than its timeout (a busy machine must not
# make a real attempt time out), but so many that the queue for a thread (12 rounds of 0.1 s)
# lasts past the hard timeout (0.8 s + 0.2 s grace).
WORKERS = 4
ALERTS = 48
LATENCY = 0.1
TIMEOUT = 0.8


def alerts(count: int) -> list[dict[str, Any]]:
    return [{"id": f"load_{i:03d}", "event_type": "schema_change", "severity": "critical",
             "title": f"Column removed number {i:03d}",
             "asset": {"id": f"asset_{i:03d}", "name": f"db.public.t{i:03d}"}}
            for i in range(count)]


def notifier(destinations: dict[str, dict[str, Any]], workers: int = WORKERS,
             **kwargs: Any) -> Notifier:
    config = {"version": 1, "destinations": destinations,
              "rules": [{"name": "All", "event": "schema_change",
                         "destinations": list(destinations)}]}
    return Notifier.from_dict(config, plugins=PluginManager().load(), rng=random.Random(3),
                              max_workers=workers, **kwargs)


def limits() -> dict[str, Any]:
    return {"timeout": TIMEOUT, "retry_backoff": 0.05, "rate_limit": "none", "max_attempts": 10}


class SlowHandler(RecordingHandler):
    """Accepts every message after ``delay`` seconds (other sessions go on meanwhile)."""

    delay = LATENCY

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def slow_smtp() -> Iterator[FakeSMTPServer]:
    ignore_known_aiosmtpd_warnings()
    handler = SlowHandler()
    port = free_port()
    controller = Controller(handler, hostname=HOST, port=port, server_hostname="fake-smtp.test")
    controller.start()
    try:
        yield FakeSMTPServer(controller, handler, port)
    finally:
        controller.stop()


def assert_all_delivered_once(report: Any, posts: Counter[str]) -> None:
    assert {d.state for d in report.deliveries} == {State.delivered}
    assert [d.attempt_count for d in report.deliveries] == [1] * len(report.deliveries), [
        [(a.status, a.reason, round(a.duration, 3)) for a in d.attempts]
        for d in report.deliveries if d.attempt_count != 1]
    assert len(posts) == len(report.deliveries)
    assert set(posts.values()) == {1}, {k: n for k, n in posts.items() if n != 1}


def test_pagerduty_under_load_gets_each_event_once() -> None:
    with FakePagerDuty(latency=LATENCY) as pd:
        nt = notifier({"pd": {"type": "pagerduty", "integration_key": PD_KEY, "url": pd.url,
                              **limits()}})
        with nt:
            report = nt.send(nt.parse_alerts(alerts(ALERTS)))
        assert_all_delivered_once(report, Counter(r.body["dedup_key"] for r in pd.requests))


def test_slack_under_load_gets_each_message_once() -> None:
    with FakeSlack(latency=LATENCY) as slack:
        nt = notifier({"slack": {"type": "slack", "webhook_url": slack.url, **limits()}})
        with nt:
            report = nt.send(nt.parse_alerts(alerts(ALERTS)))
        assert_all_delivered_once(report, Counter(r.json()["text"] for r in slack.requests))


def test_email_under_load_sends_each_message_once(slow_smtp: FakeSMTPServer) -> None:
    nt = notifier({"mail": {"type": "email", **slow_smtp.config(security="none"), **limits()}})
    with nt:
        report = nt.send(nt.parse_alerts(alerts(ALERTS)))
    received = slow_smtp.handler.received
    assert_all_delivered_once(report, Counter(str(r.message["Subject"]) for r in received))


def test_a_durable_outbox_under_load_sends_each_delivery_once(tmp_path: Path) -> None:
    with FakePagerDuty(latency=LATENCY) as pd, FakeSlack(latency=LATENCY) as slack:
        nt = notifier({"pd": {"type": "pagerduty", "integration_key": PD_KEY, "url": pd.url,
                              **limits()},
                       "slack": {"type": "slack", "webhook_url": slack.url, **limits()}},
                      outbox=SqliteOutbox.open(tmp_path))
        with nt:
            report = nt.send(nt.parse_alerts(alerts(ALERTS // 2)))
            stored = nt.inspect(limit=1000)
        posts = Counter(f"pd {r.body['dedup_key']}" for r in pd.requests)
        posts.update(f"slack {r.json()['text']}" for r in slack.requests)
        assert_all_delivered_once(report, posts)
        assert {(d.state, d.attempt_count) for d in stored} == {(State.delivered, 1)}


def test_deliveries_not_started_when_send_stops_waiting_are_never_sent() -> None:
    with FakePagerDuty(latency=0.3) as pd:
        nt = notifier({"pd": {"type": "pagerduty", "integration_key": PD_KEY, "url": pd.url,
                              **limits()}}, workers=1)
        with nt:
            report = nt.send(nt.parse_alerts(alerts(4)), wait=0.1)
            states = sorted((d.state.value, d.attempt_count) for d in report.deliveries)
            # One attempt was running (it finished); the others never started: queued again,
            # due now, no attempt spent.
            assert states == [("delivered", 1)] + [("queued", 0)] * 3
            assert len(pd.requests) == 1
            nt.drain()  # what stayed queued is delivered later, once
        assert Counter(r.body["dedup_key"] for r in pd.requests) == Counter(
            {d.dedup_key: 1 for d in report.deliveries})


def test_ctrl_c_during_a_send_leaves_no_attempt_to_start_later() -> None:
    with FakePagerDuty(latency=0.05) as pd:
        nt = notifier({"pd": {"type": "pagerduty", "integration_key": PD_KEY, "url": pd.url,
                              **limits()}}, workers=1)

        def interrupt(delivery: Any) -> None:
            raise KeyboardInterrupt  # the user pressed Ctrl-C as the first one finished

        with nt:
            with pytest.raises(KeyboardInterrupt):
                nt.send(nt.parse_alerts(alerts(6)), on_final=interrupt)
            stored = sorted((d.state.value, d.attempt_count) for d in nt.inspect(limit=100))
            assert stored == [("delivered", 1)] + [("queued", 0)] * 5
            assert len(pd.requests) == 1
            nt.drain()
            assert {d.state for d in nt.inspect(limit=100)} == {State.delivered}
        assert set(Counter(r.body["dedup_key"] for r in pd.requests).values()) == {1}
        assert len(pd.requests) == 6


def test_an_attempt_that_answers_after_its_timeout_but_before_its_retry_counts_once() -> None:
    with FakePagerDuty(latency=0.8) as pd:
        nt = notifier({"pd": {"type": "pagerduty", "integration_key": PD_KEY, "url": pd.url,
                              "timeout": 0.5, "retry_backoff": 5, "rate_limit": "none"}})
        # The sender's own timeout would end the attempt first; a sender that overruns it (as
        # a drip-feeding server could make one) is simulated by a longer own timeout.
        sender = nt.dispatcher.sender_for(nt.config.destinations["pd"])
        assert not isinstance(sender, Exception)
        sender.bounded_waits = False  # type: ignore[misc,union-attr]
        real_send = sender.send
        answered = threading.Event()

        def overrunning_send(notification: Any) -> Any:
            outcome = real_send(dataclasses.replace(notification, timeout=5.0))
            answered.set()
            return outcome

        sender.send = overrunning_send  # type: ignore[method-assign,union-attr]
        with nt:
            [delivery] = nt.send(nt.parse_alerts(alerts(1))).deliveries
        assert answered.is_set()
        assert delivery.state is State.delivered and delivery.attempt_count == 1
        assert delivery.attempts[0].duration >= 0.8
        assert len(pd.requests) == 1


@pytest.mark.slow
def test_the_send_command_posts_each_of_hundreds_of_alerts_exactly_once(tmp_path: Path) -> None:
    import json

    import yaml
    from conftest import run_cli

    # 600 deliveries, 32 at a time, 0.3 s each: the last wait about 5.6 s for a thread, past the
    # 3.75 s hard timeout (a timeout that is not itself at risk on a busy machine).
    count = 300
    with FakePagerDuty(latency=0.3) as pd, FakeSlack(latency=0.3) as slack:
        config = {"version": 1, "destinations": {
            "pd": {"type": "pagerduty", "integration_key": PD_KEY, "url": pd.url, "timeout": 3,
                   "rate_limit": "none"},
            "slack": {"type": "slack", "webhook_url": slack.url, "timeout": 3,
                      "rate_limit": "none"}},
            "rules": [{"name": "All", "event": "schema_change", "destinations": ["pd", "slack"]}]}
        path = tmp_path / "armor-notify.yaml"
        path.write_text(yaml.safe_dump(config))
        source = tmp_path / "alerts.json"
        source.write_text(json.dumps(alerts(count)))
        state = {"ARMOR_NOTIFY_STATE_DIR": str(tmp_path / "state")}
        res = run_cli("send", str(source), "--config", str(path), "--json", env=state)
        assert res.returncode == 0, res.stderr[-2000:]
        summary = json.loads(res.stdout)["summary"]
        assert summary["delivered"] == 2 * count
        assert Counter(Counter(r.body["dedup_key"] for r in pd.requests).values()) == {1: count}
        assert Counter(Counter(r.json()["text"] for r in slack.requests).values()) == {1: count}
