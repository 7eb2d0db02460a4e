"""Server-given delays are bounded: ``Retry-After: inf``, ``1e15``, ``nan``, a date in year 9999
or garbage never crash a send, a later send or ``outbox list``, and never block a key for long.

A wait is capped at one day when read; a delivery whose wait passes its retry deadline ends at
once, saying so; and a hold on the whole rate key lasts at most the retry deadline.
"""

from __future__ import annotations

import json
import math
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from fake_pagerduty import FakePagerDuty, FakeResponse

from armor_notify.api import Notifier
from armor_notify.delivery import State
from armor_notify.destinations import RateLimit
from armor_notify.outbox import ClaimRules, SqliteOutbox
from armor_notify.outcome import MAX_RETRY_AFTER, Outcome, parse_retry_after
from armor_notify.plugins import PluginManager
from armor_notify.retry import RetryPolicy

PD_KEY = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"
NOW = 1_800_000_000.0
HUGE = ["inf", "Infinity", "1e15", "1e400", "Fri, 31 Dec 9999 23:59:59 GMT"]


@pytest.mark.parametrize("value", HUGE)
def test_a_huge_retry_after_reads_as_one_day(value: str) -> None:
    assert parse_retry_after(value, now=NOW) == MAX_RETRY_AFTER == 86_400


@pytest.mark.parametrize("value", ["nan", "NaN", "garbage", "", "Sun, 06 Nov 1994 08:49:37 +9999",
                                   "Mon, 99 Foo 2026 99:99:99 GMT"])
def test_an_unreadable_retry_after_is_ignored(value: str) -> None:
    assert parse_retry_after(value, now=NOW) is None


@pytest.mark.parametrize(("value", "seconds"), [("30", 30.0), ("-5", 0.0), ("0.25", 0.25),
                                                ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)])
def test_an_ordinary_retry_after_is_kept(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize(("given", "kept"), [(math.inf, MAX_RETRY_AFTER), (1e15, MAX_RETRY_AFTER),
                                             (math.nan, None), (-3.0, 0.0), (12.5, 12.5)])
def test_a_plugins_own_retry_after_is_bounded_too(given: float, kept: float | None) -> None:
    assert Outcome.retry("429", retry_after=given).retry_after == kept


def test_a_wait_past_the_deadline_gives_up_and_says_why() -> None:
    at, why = RetryPolicy(deadline=120).next_attempt(1, NOW, NOW, 1e15, random.Random(0))
    assert at is None
    assert why == ("gave up after 1 attempt: the destination asked to wait 86400s or more "
                   "(the longest wait armor-notify honours), longer than the 120s retry "
                   "deadline allows")


def test_a_long_deadline_still_waits_at_most_a_day() -> None:
    policy = RetryPolicy(deadline=10 * 86_400)
    at, why = policy.next_attempt(1, NOW, NOW, math.inf, random.Random(0))
    assert at == NOW + MAX_RETRY_AFTER and why == ""
    assert policy.hold(math.inf) == MAX_RETRY_AFTER
    assert RetryPolicy(deadline=120).hold(1e15) == 120


def test_a_hold_lasts_at_most_the_longest_hold(tmp_path: Path) -> None:
    box = SqliteOutbox.open(tmp_path)
    nt = notifier(url="http://127.0.0.1:9")
    box.enqueue(nt.dispatcher.plan(nt.parse_alerts([alert(1)])), repeat_window=0, now=NOW)
    rules = ClaimRules(lease=5, max_attempts=3, rate_key="k", rate_limit=RateLimit(100, 1.0),
                       longest_hold=120.0)
    box.hold_key("k", math.nan)  # ignored
    box.hold_key("k", math.inf)
    assert box.claim("w", NOW, 10, lambda n: rules) == []
    assert box.next_due() == pytest.approx(NOW + 120)
    assert len(box.claim("w", NOW + 120, 10, lambda n: rules)) == 1


def alert(n: int) -> dict[str, Any]:
    return {"id": f"retry_after_{n}", "event_type": "schema_change", "severity": "critical",
            "title": f"Column removed {n}", "asset": {"id": f"asset_{n}", "name": f"db.s.t{n}"}}


def notifier(url: str, outbox: SqliteOutbox | None = None, **options: Any) -> Notifier:
    config = {"version": 1, "destinations": {"pd": {
        "type": "pagerduty", "integration_key": PD_KEY, "url": url, "timeout": 2,
        "retry_backoff": 0.05, **options}},
        "rules": [{"name": "All", "event": "schema_change", "destinations": ["pd"]}]}
    return Notifier.from_dict(config, plugins=PluginManager().load(), outbox=outbox,
                              rng=random.Random(1))


@pytest.mark.parametrize("header", HUGE)
def test_a_huge_retry_after_from_pagerduty_ends_one_delivery_and_blocks_nothing(
        tmp_path: Path, header: str) -> None:
    with FakePagerDuty() as pd:
        pd.script(FakeResponse.too_many_requests(header))
        box = SqliteOutbox.open(tmp_path)
        nt = notifier(pd.url, box, retry_deadline=1)
        first = nt.send(nt.parse_alerts([alert(1)])).deliveries[0]
        assert first.state is State.dead
        assert "asked to wait 86400s or more" in first.reason
        assert "1s retry deadline" in first.reason
        json.dumps(first.as_dict())  # every time in it can be shown
        # The key is held for at most the retry deadline, not for a day (or 1e15 s).
        second = nt.send(nt.parse_alerts([alert(2)]), wait=10).deliveries[0]
        assert second.state is State.delivered
        assert [d.state for d in box.find()] == [State.delivered, State.dead]
        assert len(pd.requests) == 2


def test_the_delivery_waits_a_day_at_most_when_its_deadline_allows(tmp_path: Path) -> None:
    with FakePagerDuty() as pd:
        pd.script(FakeResponse.too_many_requests("1e15"))
        box = SqliteOutbox.open(tmp_path)
        nt = notifier(pd.url, box, retry_deadline="30d")
        report = nt.send(nt.parse_alerts([alert(1)]), wait=0.5)
        (queued,) = box.find()
        assert queued.state is State.queued and report.deliveries[0].state is State.queued
        assert queued.next_attempt_at - queued.attempts[0].started_at == pytest.approx(
            MAX_RETRY_AFTER, abs=5)
        json.dumps(queued.as_dict())


@pytest.mark.slow
def test_outbox_list_and_show_can_show_times_stored_out_of_range(tmp_path: Path) -> None:
    state = tmp_path / "state"
    box = SqliteOutbox.open(state)
    nt = notifier(url="http://127.0.0.1:9")
    (d,) = [x for x, _ in box.enqueue(nt.dispatcher.plan(nt.parse_alerts([alert(1)])),
                                      repeat_window=0, now=NOW)]
    box.close()
    db = sqlite3.connect(state / "outbox.sqlite3")  # as an older version could have left it
    db.execute("UPDATE deliveries SET run_at=1e15, created_at=-1e300, history=? WHERE id=?",
               (json.dumps([{"number": 1, "started_at": 1e300, "duration": 1e308,
                             "status": "retry", "reason": "429"}]), d.id))
    db.commit()
    db.close()
    env = {"ARMOR_NOTIFY_STATE_DIR": str(state)}
    listed = run_cli("outbox", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "3000-01-01" in listed.stdout
    shown = run_cli("outbox", "show", d.id, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "Traceback" not in shown.stderr + listed.stderr
    as_json = run_cli("outbox", "list", "--json", env=env)
    assert as_json.returncode == 0 and "3000-01-01" in as_json.stdout
