"""A poison row never stops the queue.

A stored delivery whose alert (or history, details, digest) cannot be read back, because the
file was damaged or an older version accepted what this one refuses (``delay_hours: Infinity``),
is marked ``dead`` with the reason by the next claim, which goes on with the healthy ones;
``outbox list/show`` show it as dead instead of failing. The rows are damaged here directly with
sqlite3, as a disk or an older version would leave them.
"""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from fake_slack import FakeSlack

from armor_notify.api import Notifier
from armor_notify.delivery import Delivery, State
from armor_notify.outbox import ClaimRules, SqliteOutbox
from armor_notify.plugins import PluginManager

RULES = ClaimRules(lease=5.0, max_attempts=3)
UNREADABLE = "the stored delivery cannot be read: "
OLDER_VERSION = {"id": "old", "event_type": "freshness_violation", "title": "late",
                 "asset": {"id": "a", "name": "db.s.t"}, "freshness": {"delay_hours": "Infinity"}}
DAMAGE = {
    "truncated alert": ("alert", '{"id": "alert_1", "event_type": "schema_change", "tit'),
    "older version": ("alert", json.dumps(OLDER_VERSION).replace('"Infinity"', "Infinity")),
    "alert not an object": ("alert", "[]"),
    "bytes not UTF-8": ("alert", b"\xff\xfe{garbage"),
    "history": ("history", '[{"number": 1'),
    "history entry": ("history", '[{"number": 1}]'),
    "details": ("details", "[1, 2]"),
    "digest": ("digest", '["{"]'),
    "also matched": ("also_matched", "nope"),
}


def alert(n: int, **over: Any) -> dict[str, Any]:
    return {"id": f"alert_{n}", "event_type": "schema_change", "severity": "critical",
            "title": f"Column removed {n}", "asset": {"id": f"a{n}", "name": f"db.s.t{n}"}, **over}


def notifier(destinations: dict[str, dict[str, Any]], outbox: SqliteOutbox | None = None,
             event: Any = "schema_change") -> Notifier:
    config = {"version": 1, "destinations": destinations,
              "rules": [{"name": "All", "event": event, "destinations": list(destinations)}]}
    return Notifier.from_dict(config, plugins=PluginManager().load(), outbox=outbox,
                              rng=random.Random(1))


def damage(path: Path, delivery_id: str, column: str, value: str | bytes) -> None:
    db = sqlite3.connect(path)
    if isinstance(value, bytes):
        db.execute(f"UPDATE deliveries SET {column}=CAST(? AS TEXT) WHERE id=?",
                   (value, delivery_id))
    else:
        db.execute(f"UPDATE deliveries SET {column}=? WHERE id=?", (value, delivery_id))
    db.commit()
    db.close()


def three_queued(tmp_path: Path) -> tuple[SqliteOutbox, list[Delivery]]:
    box = SqliteOutbox.open(tmp_path)
    nt = notifier({"d": {"type": "scripted"}}, box)
    deliveries = [d for d, _ in box.enqueue(
        nt.dispatcher.plan(nt.parse_alerts([alert(1), alert(2), alert(3)])),
        repeat_window=0, now=100.0)]
    return box, deliveries


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_claim_buries_an_unreadable_delivery_and_goes_on(tmp_path: Path, case: str) -> None:
    box, (first, second, third) = three_queued(tmp_path)
    box.close()
    damage(tmp_path / "outbox.sqlite3", second.id, *DAMAGE[case])
    box = SqliteOutbox.open(tmp_path)  # a new process: nothing of the alert is in memory
    claimed = box.claim("w", 100.0, 10, lambda name: RULES)
    assert sorted(d.id for d in claimed) == sorted([first.id, third.id])
    row = box._db.execute("SELECT state, reason, finalized_at FROM deliveries WHERE id=?",
                          (second.id,)).fetchone()
    assert row[0] == "dead" and row[1].startswith(UNREADABLE) and row[2] == 100.0
    assert box.claim("w", 200.0, 10, lambda name: RULES) != []  # the others' leases expired
    shown = box.get(second.id)
    assert shown is not None and shown.state is State.dead and shown.reason == row[1]
    json.dumps(shown.as_dict())


def test_the_reason_says_what_could_not_be_read(tmp_path: Path) -> None:
    box, (_, second, _) = three_queued(tmp_path)
    box.close()
    damage(tmp_path / "outbox.sqlite3", second.id, *DAMAGE["older version"])
    box = SqliteOutbox.open(tmp_path)
    box.claim("w", 100.0, 10, lambda name: RULES)
    (dead,) = box.find(states=["dead"])
    assert dead.reason.startswith(UNREADABLE + "freshness.delay_hours: ")
    assert "\n" not in dead.reason
    assert dead.alert.id == "alert_2" and dead.destination == "d"


@pytest.mark.parametrize("case", list(DAMAGE))
def test_find_and_get_show_an_unreadable_delivery_as_dead(tmp_path: Path, case: str) -> None:
    box, (first, second, third) = three_queued(tmp_path)
    damage(tmp_path / "outbox.sqlite3", second.id, *DAMAGE[case])
    box._alerts.clear()  # as in another process (``outbox list``)
    listed = {d.id: d for d in box.find()}
    assert listed[first.id].state is State.queued and listed[third.id].state is State.queued
    assert listed[second.id].state is State.dead
    assert listed[second.id].reason.startswith(UNREADABLE)
    got = box.get(second.id[:10])
    assert got is not None and got.state is State.dead
    assert box.find(states=["queued"], limit=1)[0].id == third.id


def test_a_row_with_a_time_that_is_not_a_number_does_not_stop_anything(tmp_path: Path) -> None:
    box, (first, second, third) = three_queued(tmp_path)
    damage(tmp_path / "outbox.sqlite3", second.id, "run_at", "soon")
    box._alerts.clear()
    assert sorted(d.id for d in box.claim("w", 100.0, 10, lambda name: RULES)) == sorted(
        [first.id, third.id])
    assert box.get(second.id).state is State.dead  # type: ignore[union-attr]
    assert box.next_due() is not None


def test_a_repeat_of_an_unreadable_delivery_is_accepted_anew(tmp_path: Path) -> None:
    box, (_, second, _) = three_queued(tmp_path)
    damage(tmp_path / "outbox.sqlite3", second.id, *DAMAGE["truncated alert"])
    box._alerts.clear()
    nt = notifier({"d": {"type": "scripted"}}, box)
    ((again, new),) = box.enqueue(nt.dispatcher.plan(nt.parse_alerts([alert(2)])),
                                  repeat_window=600, now=101.0)
    assert new and again.id != second.id


def test_an_unreadable_alert_in_an_open_digest_leaves_the_others_to_it(tmp_path: Path) -> None:
    with FakeSlack() as slack:
        box = SqliteOutbox.open(tmp_path)
        nt = notifier({"team": {"type": "slack", "webhook_url": slack.url, "rate_limit": "none",
                                "digest": {"window": "15m"}}}, box)
        report = nt.send(nt.parse_alerts([alert(i) for i in range(4)]))
        assert {d.state for d in report.deliveries} == {State.batched}
        damage(tmp_path / "outbox.sqlite3", report.deliveries[1].id,
               *DAMAGE["older version"])
        box._alerts.clear()
        closes = report.deliveries[0].next_attempt_at
        nt.dispatcher.clock = lambda: closes + 1
        nt.drain()
        (payload,) = [r.json() for r in slack.requests]
        assert payload["text"].startswith(":package: Digest: 3 schema changes")
        states = {d.id: d.state for d in box.find(limit=10)}
        assert states[report.deliveries[1].id] is State.dead
        assert [states[d.id] for d in report.deliveries if d is not report.deliveries[1]] == [
            State.digested] * 3


@pytest.mark.slow
def test_a_worker_delivers_the_healthy_deliveries_beside_a_damaged_one(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with FakeSlack() as slack:
        destinations = {"team": {"type": "slack", "webhook_url": slack.url,
                                 "rate_limit": "none", "timeout": 2}}
        config = tmp_path / "armor-notify.yaml"
        config.write_text(json.dumps({"version": 1, "destinations": destinations, "rules": [
            {"name": "All", "event": "schema_change", "destinations": ["team"]}]}))
        with SqliteOutbox.open(state) as box:
            nt = notifier(destinations, box)
            queued = nt.send(nt.parse_alerts([alert(1), alert(2), alert(3)]), wait=0)
        damage(state / "outbox.sqlite3", queued.deliveries[0].id, *DAMAGE["older version"])
        env = {"ARMOR_NOTIFY_STATE_DIR": str(state)}
        listed = run_cli("outbox", "list", env=env)
        assert listed.returncode == 0, listed.stderr
        assert "cannot be read" in listed.stdout
        ran = run_cli("worker", "--config", str(config), "--once", env=env)
        assert "Traceback" not in ran.stderr, ran.stderr
        assert len(slack.requests) == 2
        titles = json.dumps([r.json() for r in slack.requests])
        assert "Column removed 2" in titles and "Column removed 3" in titles
        shown = run_cli("outbox", "show", queued.deliveries[0].id, env=env)
        assert shown.returncode == 0 and "cannot be read" in shown.stdout, shown.stderr
        after = json.loads(run_cli("outbox", "list", "--json", env=env).stdout)["deliveries"]
        assert sorted(d["state"] for d in after) == ["dead", "delivered", "delivered"]


def test_a_run_of_unreadable_deliveries_longer_than_a_claim_is_passed_over(
        tmp_path: Path) -> None:
    box = SqliteOutbox.open(tmp_path)
    nt = notifier({"d": {"type": "scripted"}}, box)
    stored = [d for d, _ in box.enqueue(
        nt.dispatcher.plan(nt.parse_alerts([alert(i) for i in range(7)])),
        repeat_window=0, now=100.0)]
    for d in stored[:5]:
        damage(tmp_path / "outbox.sqlite3", d.id, *DAMAGE["truncated alert"])
    box._alerts.clear()
    claimed = box.claim("w", 100.0, 2, lambda name: RULES)
    assert [d.id for d in claimed] == [d.id for d in stored[5:]]
    assert len(box.find(states=["dead"])) == 5
