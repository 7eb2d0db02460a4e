"""Delivery: concurrency, isolation of broken plugins, retries, timeouts and rate limits."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture

from armor_notify import Alert
from armor_notify.api import Notifier
from armor_notify.delivery import State
from armor_notify.dispatcher import hard_timeout
from armor_notify.errors import EXIT_FAILED, EXIT_OK, EXIT_QUEUED
from armor_notify.plugins import PluginManager
from armor_notify.retry import MAX_BACKOFF, RetryPolicy


def make_alert(n: int = 0, **over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": f"alert_{n}",
        "event_type": "schema_change",
        "title": f"Column removed {n}",
        "severity": "critical",
        "asset": {"id": f"tbl_{n}", "name": f"analytics.public.t{n}", "environment": "production"},
        "changes": [{"type": "column_removed", "column": "c"}],
    }
    data.update(over)
    return data


def notifier(destinations: dict[str, dict[str, Any]], record: Path | None = None,
             **kwargs: Any) -> Notifier:
    dests = {}
    for name, spec in destinations.items():
        spec = {"type": "scripted", **spec}
        if record is not None:
            spec.setdefault("record", str(record))
        dests[name] = spec
    config = {"version": 1, "destinations": dests,
              "rules": [{"name": "All", "event": "schema_change", "destinations": list(dests)}]}
    return Notifier.from_dict(config, plugins=PluginManager().load(),
                              rng=random.Random(7), **kwargs)


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in lines if "closed" not in r]


def by_dest(report: Any) -> dict[str, Any]:
    return {d.destination: d for d in report.deliveries}


def test_deliveries_to_different_destinations_run_concurrently() -> None:
    n = 6
    nt = notifier({f"d{i}": {"script": [f"barrier:{n}"], "timeout": 10} for i in range(n)})
    report = nt.send(nt.parse_alerts(make_alert()))
    assert [d.state for d in report.deliveries] == [State.delivered] * n
    assert report.exit_code == EXIT_OK


def test_many_alerts_fan_out_concurrently_through_an_io_sized_pool() -> None:
    # 20 deliveries that each wait for all 20: a pool sized by CPU count (2 here) would deadlock.
    nt = notifier({"d": {"script": ["barrier:20"], "timeout": 10}})
    report = nt.send(nt.parse_alerts([make_alert(i) for i in range(20)]))
    assert {d.state for d in report.deliveries} == {State.delivered}
    assert len(report.deliveries) == 20


def test_a_lone_delivery_whose_sender_bounds_its_waits_runs_on_the_calling_thread(
        tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    nt = notifier({"d": {"script": ["retry", "ok"], "bounded": True, "retry_backoff": 0.01}}, rec)
    report = nt.send(nt.parse_alerts(make_alert()))
    assert report.deliveries[0].state is State.delivered
    assert report.deliveries[0].attempt_count == 2
    assert [r["thread"] for r in records(rec)] == [threading.current_thread().name] * 2


def test_a_sender_that_does_not_promise_bounded_waits_runs_on_an_io_thread(
        tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    nt = notifier({"d": {"script": ["ok"]}}, rec)
    assert nt.send(nt.parse_alerts(make_alert())).exit_code == EXIT_OK
    [record] = records(rec)
    assert record["thread"].startswith("armor-notify-")


def test_deliveries_that_are_not_alone_run_on_io_threads_even_when_bounded(
        tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    nt = notifier({f"d{i}": {"script": ["barrier:3"], "bounded": True, "timeout": 10}
                   for i in range(3)}, rec)
    report = nt.send(nt.parse_alerts(make_alert()))  # each waits for all 3: concurrent
    assert [d.state for d in report.deliveries] == [State.delivered] * 3
    assert all(r["thread"].startswith("armor-notify-") for r in records(rec))


def test_ctrl_c_during_an_inline_attempt_stops_send_and_leaves_the_delivery_leased(
        tmp_path: Path) -> None:
    from armor_notify.outbox import SqliteOutbox

    outbox = SqliteOutbox.open(tmp_path)
    nt = notifier({"d": {"script": ["interrupt"], "bounded": True}}, outbox=outbox)
    with pytest.raises(KeyboardInterrupt):
        nt.send(nt.parse_alerts(make_alert()))
    [delivery] = outbox.find()
    assert delivery.state is State.in_flight  # picked up again when its lease expires
    outbox.close()


@pytest.mark.parametrize(("step", "state", "words"), [
    ("raise", State.failed, "the plugin raised ValueError: scripted plugin bug"),
    ("nonsense", State.failed, "the plugin returned int instead of an Outcome"),
    ("oserror", State.dead, "ConnectionRefusedError"),
])
def test_an_inline_sender_fails_exactly_as_one_on_an_io_thread(
        step: str, state: State, words: str) -> None:
    for bounded in (True, False):
        nt = notifier({"d": {"script": [step], "bounded": bounded, "max_attempts": 1}})
        [delivery] = nt.send(nt.parse_alerts(make_alert())).deliveries
        assert delivery.state is state and words in delivery.reason, (bounded, delivery.reason)


def test_every_outcome_is_reported_and_failures_stay_with_their_destination(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    nt = notifier({
        "ok": {"script": ["ok"]},
        "flaky": {"script": ["retry", "ok"], "retry_backoff": 0.01},
        "permanent": {"script": ["fail"]},
        "buggy": {"script": ["raise"]},
        "silly": {"script": ["nonsense"]},
        "network": {"script": ["oserror", "ok"], "retry_backoff": 0.01},
        "setup": {"script": ["broken-setup"]},
    }, rec)
    report = nt.send(nt.parse_alerts(make_alert()))
    got = by_dest(report)
    assert got["ok"].state is State.delivered and got["ok"].attempt_count == 1
    assert got["flaky"].state is State.delivered and got["flaky"].attempt_count == 2
    assert got["network"].state is State.delivered and got["network"].attempt_count == 2
    assert got["network"].attempts[0].status == "retry"
    assert "ConnectionRefusedError" in got["network"].attempts[0].reason
    assert got["permanent"].state is State.failed
    assert got["permanent"].attempt_count == 1  # permanent errors are never retried
    assert got["permanent"].hint == "fix the token"
    assert got["buggy"].state is State.failed
    assert "raised ValueError: scripted plugin bug" in got["buggy"].reason
    assert got["silly"].state is State.failed
    assert "returned int instead of an Outcome" in got["silly"].reason
    assert got["setup"].state is State.failed
    assert "could not set up" in got["setup"].reason and got["setup"].attempt_count == 1
    assert report.exit_code == EXIT_FAILED
    assert len([r for r in records(rec) if r["destination"] == "permanent"]) == 1


def test_a_hung_plugin_times_out_without_delaying_the_others() -> None:
    nt = notifier({
        "hung": {"script": ["hang"], "timeout": 0.3, "max_attempts": 1},
        "a": {"script": ["slow:0.05"]},
        "b": {"script": ["ok"]},
    })
    report = nt.send(nt.parse_alerts(make_alert()))
    got = by_dest(report)
    hung = got["hung"]
    assert hung.state is State.dead
    assert "no answer within 0.3s (timed out)" in hung.reason
    assert hung.attempts[0].duration >= 0.3
    deadline = hung.attempts[0].started_at + hard_timeout(0.3)
    for name in ("a", "b"):
        attempt = got[name].attempts[0]
        assert got[name].state is State.delivered
        assert attempt.started_at + attempt.duration < deadline


def test_a_hung_attempt_is_retried_like_a_timeout(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    nt = notifier({"d": {"script": ["hang", "ok"], "timeout": 0.2, "retry_backoff": 0.01}}, rec)
    report = nt.send(nt.parse_alerts(make_alert()))
    d = report.deliveries[0]
    assert d.state is State.delivered
    assert [a.status for a in d.attempts] == ["retry", "delivered"]
    assert [r["attempt"] for r in records(rec)] == [1, 2]


def test_retries_stop_at_max_attempts_with_the_last_reason() -> None:
    nt = notifier({"d": {"script": ["retry"], "max_attempts": 3, "retry_backoff": 0.01}})
    d = nt.send(nt.parse_alerts(make_alert())).deliveries[0]
    assert d.state is State.dead
    assert d.attempt_count == 3
    assert d.reason == "gave up after 3 attempts; last: 503 Service Unavailable"


def test_retries_stop_at_the_deadline() -> None:
    nt = notifier({"d": {"script": ["retry"], "max_attempts": 100, "retry_backoff": 0.1,
                         "retry_deadline": 0.5}})
    d = nt.send(nt.parse_alerts(make_alert())).deliveries[0]
    assert d.state is State.dead
    assert "retry deadline" in d.reason
    assert 2 <= d.attempt_count < 10
    assert d.attempts[-1].started_at - d.attempts[0].started_at <= 0.5


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    nt = notifier({"d": {"script": ["retry-after:0.4", "ok"], "retry_backoff": 0.01}}, rec)
    d = nt.send(nt.parse_alerts(make_alert())).deliveries[0]
    assert d.state is State.delivered
    assert d.attempts[1].started_at - d.attempts[0].started_at >= 0.4


def test_retry_after_beyond_the_deadline_gives_up_at_once() -> None:
    nt = notifier({"d": {"script": ["retry-after:30"], "retry_deadline": 5}})
    d = nt.send(nt.parse_alerts(make_alert())).deliveries[0]
    assert d.state is State.dead
    assert d.attempt_count == 1
    assert "asked to wait 30s" in d.reason


def test_wait_returns_with_retrying_deliveries_still_queued() -> None:
    nt = notifier({"slow": {"script": ["retry-after:5", "ok"]}, "fast": {"script": ["ok"]}})
    report = nt.send(nt.parse_alerts(make_alert()), wait=0.3)
    got = by_dest(report)
    assert got["fast"].state is State.delivered
    assert got["slow"].state is State.queued
    assert got["slow"].next_attempt_at >= got["slow"].attempts[0].started_at + 5
    assert report.exit_code == EXIT_QUEUED
    assert report.as_dict()["summary"]["queued"] == 1


def test_resolved_alerts_are_suppressed_where_send_resolved_is_off(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    nt = notifier({"on": {}, "off": {"send_resolved": False}}, rec)
    report = nt.send(nt.parse_alerts(make_alert(status="resolved")))
    got = by_dest(report)
    assert got["on"].state is State.delivered
    assert got["off"].state is State.suppressed
    assert "send_resolved is off" in got["off"].reason
    assert [(r["destination"], r["action"]) for r in records(rec)] == [("on", "resolve")]
    assert report.exit_code == EXIT_OK


def test_dry_run_sends_nothing(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    nt = notifier({"a": {}, "b": {}}, rec)
    report = nt.send(nt.parse_alerts(make_alert()), dry_run=True)
    assert {d.state for d in report.deliveries} == {State.skipped}
    assert records(rec) == []
    assert report.exit_code == EXIT_OK


def test_trigger_acknowledge_and_resolve_share_one_dedup_key(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    nt = notifier({"d": {}}, rec)
    for status in ("triggered", "acknowledged", "resolved"):
        nt.send(nt.parse_alerts(make_alert(status=status)))
    sent = records(rec)
    assert [r["action"] for r in sent] == ["trigger", "acknowledge", "resolve"]
    assert len({r["dedup_key"] for r in sent}) == 1
    assert sent[0]["dedup_key"] == "anomalyarmor-all-schema_change-tbl_0"


def test_a_rate_limit_delays_a_storm_and_drops_nothing(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    nt = notifier({"d": {"rate_limit": "2/second", "rate_burst": 1}}, rec)
    report = nt.send(nt.parse_alerts([make_alert(i) for i in range(5)]))
    assert {d.state for d in report.deliveries} == {State.delivered}
    times = sorted(r["time"] for r in records(rec))
    assert len(times) == 5
    # No window of one second ever holds more than two sends. The times are taken in the
    # sender's thread after the limiter let it go, so a loaded machine shifts each by a few ms.
    for i in range(len(times) - 2):
        assert times[i + 2] - times[i] >= 0.95


def test_secrets_are_masked_in_every_reason() -> None:
    secret = "s3cr3t-token-0123456789abcdef"
    nt = notifier({"d": {"script": ["fail"], "token": secret}})
    report = nt.send(nt.parse_alerts(make_alert()))
    text = json.dumps(report.as_dict())
    assert secret not in text
    assert "s3cr…cdef" in report.deliveries[0].reason


def test_one_alert_object_is_accepted_directly() -> None:
    nt = notifier({"d": {}})
    alert = Alert.model_validate(make_alert())
    assert nt.send(alert).deliveries[0].state is State.delivered


# -- the retry policy itself --------------------------------------------------------------------


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=10, deadline=1000, backoff=1.0)
    rng = random.Random(1)
    for attempts, base in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0)):
        delays = [policy.delay(attempts, None, rng) for _ in range(200)]
        assert all(base / 2 <= d <= base for d in delays)
        assert max(delays) - min(delays) > base / 4  # jitter spreads retries out
    assert all(policy.delay(20, None, rng) <= MAX_BACKOFF for _ in range(50))


def test_retry_after_is_a_floor_on_the_delay() -> None:
    policy = RetryPolicy(backoff=0.1)
    assert policy.delay(1, 7.5, random.Random(0)) == 7.5


def test_next_attempt_none_after_max_attempts_or_past_deadline() -> None:
    policy = RetryPolicy(max_attempts=2, deadline=10, backoff=1)
    rng = random.Random(0)
    at, why = policy.next_attempt(1, 100.0, 100.0, None, rng)
    assert at is not None and 100.5 <= at <= 101
    assert why == ""
    assert policy.next_attempt(2, 100.0, 100.0, None, rng) == (None, "gave up after 2 attempts")
    at, why = RetryPolicy(max_attempts=9, deadline=10).next_attempt(1, 100.0, 109.9, None, rng)
    assert at is None and "10s retry deadline" in why


@pytest.mark.parametrize("status", ["triggered", "acknowledged", "resolved"])
def test_notification_action_follows_the_alert_status(status: str, tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    nt = notifier({"d": {}}, rec)
    nt.send(nt.parse_alerts(make_alert(status=status)))
    expected = {"triggered": "trigger", "acknowledged": "acknowledge", "resolved": "resolve"}
    assert records(rec)[0]["action"] == expected[status]


def test_closing_the_notifier_closes_each_sender_once(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    with notifier({"a": {}, "b": {}}, rec) as nt:
        nt.send(nt.parse_alerts(make_alert()))
    lines = [json.loads(line) for line in rec.read_text().splitlines()]
    assert len(records(rec)) == 2
    assert sum(1 for r in lines if r.get("closed")) == 2


def test_two_destinations_with_one_target_deliver_an_alert_once(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    nt = notifier({"first": {"target": "K"}, "second": {"target": "K"}, "other": {"target": "L"}},
                  rec)
    report = nt.send(nt.parse_alerts([make_alert(1), make_alert(2)]))
    states = [(d.alert.id, d.destination, d.state) for d in report.deliveries]
    assert states == [
        ("alert_1", "first", State.delivered), ("alert_1", "second", State.suppressed),
        ("alert_1", "other", State.delivered), ("alert_2", "first", State.delivered),
        ("alert_2", "second", State.suppressed), ("alert_2", "other", State.delivered)]
    assert "'first' sends to the same Scripted target" in report.deliveries[1].reason
    assert len(records(rec)) == 4


# -- clocks, stored secrets, progress ----------------------------------------------------------


def test_a_wall_clock_step_back_does_not_stretch_a_timeout(mocker: MockerFixture) -> None:
    nt = notifier({"d": {"script": ["hang"], "timeout": 0.2, "max_attempts": 1}})
    calls = itertools.count()
    # The system clock steps back an hour once the delivery is written and its attempt handed
    # over: waits are on the monotonic clock, so the attempt still times out in 0.2 s (+ grace).
    clock = mocker.patch.object(nt.dispatcher, "clock", side_effect=lambda: time.time() - (
        3600 if next(calls) >= 2 else 0))
    reports: list[Any] = []
    sending = threading.Thread(
        target=lambda: reports.append(nt.send(nt.parse_alerts(make_alert()))), daemon=True)
    sending.start()
    sending.join(timeout=30)  # a hang detector, not a speed limit
    assert reports, "send waited for the wall clock to catch up"
    assert clock.call_count > 2  # the clock did step back while the attempt was under way
    [delivery] = reports[0].deliveries
    assert delivery.state is State.dead and "timed out" in delivery.reason


def test_wait_seconds_run_on_the_monotonic_clock(mocker: MockerFixture) -> None:
    nt = notifier({"slow": {"script": ["slow:0.3"]}, "fast": {"script": ["ok"]}})
    nt.dispatcher.max_workers = 1
    calls = itertools.count()
    clock = mocker.patch.object(nt.dispatcher, "clock", side_effect=lambda: time.time() - (
        3600 if next(calls) >= 2 else 0))
    reports: list[Any] = []
    sending = threading.Thread(target=lambda: reports.append(
        nt.send(nt.parse_alerts([make_alert(1), make_alert(2)]), wait=0.1)), daemon=True)
    sending.start()
    sending.join(timeout=30)
    assert reports, "send waited for the wall clock to catch up"
    assert clock.call_count > 2  # the clock did step back during the wait
    # The first delivery was running when the wait ran out and finished; the others never
    # started: queued again, no attempt spent.
    states = sorted((d.state.value, d.attempt_count) for d in reports[0].deliveries)
    assert states[0] == ("delivered", 1) and ("queued", 0) in states


def test_secrets_echoed_in_an_answer_are_masked_before_they_are_stored(tmp_path: Path) -> None:
    from fake_pagerduty import FakePagerDuty, FakeResponse

    from armor_notify.outbox import SqliteOutbox

    key = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"
    with FakePagerDuty() as pd:
        pd.script(FakeResponse(202, {"status": "success", "message": f"Event processed for {key}",
                                     "dedup_key": key, "echo": {"keys": [key, 7]}}))
        config = {"version": 1, "destinations": {"pd": {"type": "pagerduty", "integration_key": key,
                                                         "url": pd.url}},
                  "rules": [{"name": "All", "event": "schema_change", "destinations": ["pd"]}]}
        outbox = SqliteOutbox.open(tmp_path)
        with Notifier.from_dict(config, plugins=PluginManager().load(), outbox=outbox) as nt:
            [delivery] = nt.send(nt.parse_alerts(make_alert())).deliveries
        assert delivery.state is State.delivered
        assert key not in json.dumps(delivery.as_dict())
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert key.encode() not in stored


def test_details_are_masked_however_deep_the_secret_sits() -> None:
    from armor_notify.outcome import Outcome

    secret = "s3cr3t-token-0123456789abcdef"
    nt = notifier({"d": {"token": secret}})
    dest = nt.config.destinations["d"]

    class Echo:
        def __str__(self) -> str:
            return f"object {secret}"

    outcome = Outcome.delivered(said={"body": [f"token={secret}", {"k": (secret, 3)}]}, other=Echo(),
                                n=None)
    details = nt.dispatcher._clean_details(dest, outcome.details)
    assert secret not in json.dumps(details, default=str)
    assert details["said"]["body"][1]["k"][1] == 3 and details["n"] is None


def test_send_reports_each_delivery_once_as_it_becomes_final() -> None:
    nt = notifier({"ok": {}, "flaky": {"script": ["retry", "ok"], "retry_backoff": 0.01},
                   "off": {"send_resolved": False}})
    seen: list[tuple[str, State]] = []
    alerts = nt.parse_alerts([make_alert(1, status="resolved"), make_alert(2, status="resolved")])
    report = nt.send(alerts, on_final=lambda d: seen.append((d.id, d.state)))
    assert sorted(seen) == sorted((d.id, d.state) for d in report.deliveries)
    assert {s for _, s in seen} == {State.delivered, State.suppressed}
    assert nt.send(alerts, on_final=lambda d: seen.append((d.id, d.state))).deliveries
    assert len(seen) == 6  # repeats of accepted deliveries are not reported again

