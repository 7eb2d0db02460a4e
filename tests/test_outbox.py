"""The outbox itself: intake, leases, crash recovery bookkeeping, rate limits, order, upkeep."""

from __future__ import annotations

import json
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from armor_notify.api import Notifier
from armor_notify.delivery import Attempt, Delivery, State
from armor_notify.destinations import RateLimit
from armor_notify.errors import EXIT_QUEUED
from armor_notify.outbox import ClaimRules, OutboxError, SqliteOutbox
from armor_notify.plugins import PluginManager

RULES = ClaimRules(lease=5.0, max_attempts=3)


def alert(n: int = 0, **over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"id": f"alert_{n}", "event_type": "schema_change", "title": f"t{n}",
                            "asset": {"id": f"a{n}", "name": f"db.s.t{n}"}}
    data.update(over)
    return data


def notifier(dests: dict[str, dict[str, Any]], outbox: SqliteOutbox | None = None,
             record: Path | None = None, **defaults: Any) -> Notifier:
    destinations = {n: {"type": "scripted", **({"record": str(record)} if record else {}), **d}
                    for n, d in dests.items()}
    config = {"version": 1, "defaults": defaults, "destinations": destinations,
              "rules": [{"name": "All", "event": "schema_change",
                         "destinations": list(destinations)}]}
    return Notifier.from_dict(config, plugins=PluginManager().load(), outbox=outbox,
                              rng=random.Random(3))


def sent(record: Path) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in record.read_text().splitlines()] if record.exists() else []
    return [x for x in lines if "closed" not in x]


@pytest.fixture
def box(tmp_path: Path) -> SqliteOutbox:
    return SqliteOutbox.open(tmp_path)


def planned(nt: Notifier, *alerts: dict[str, Any]) -> list[Delivery]:
    return nt.dispatcher.plan(nt.parse_alerts(list(alerts)))


def test_deliveries_are_written_before_any_attempt(box: SqliteOutbox, tmp_path: Path) -> None:
    record = tmp_path / "sent.jsonl"
    nt = notifier({"d": {}}, box, record)
    (d,) = nt.enqueue(nt.parse_alerts(alert()))
    assert not d.repeat
    assert [x.state for x in box.find()] == [State.queued]
    assert sent(record) == []
    again = SqliteOutbox.open(tmp_path)  # another process would see it too
    assert again.get(d.id) is not None and again.get(d.id).alert.title == "t0"  # type: ignore[union-attr]
    nt.drain()
    assert box.get(d.id).state is State.delivered  # type: ignore[union-attr]
    assert len(sent(record)) == 1


def test_the_same_alert_within_the_repeat_window_is_accepted_once(tmp_path: Path) -> None:
    record = tmp_path / "sent.jsonl"
    nt = notifier({"d": {}}, record=record)
    first = nt.send(nt.parse_alerts(alert()))
    second = nt.send(nt.parse_alerts(alert()))
    assert first.deliveries[0].state is State.delivered and not first.deliveries[0].repeat
    assert second.deliveries[0].repeat and second.deliveries[0].id == first.deliveries[0].id
    assert second.exit_code == 0
    assert second.as_dict()["deliveries"][0]["repeat"] is True
    resolved = nt.send(nt.parse_alerts(alert(status="resolved")))  # another status is new
    assert not resolved.deliveries[0].repeat
    assert [s["action"] for s in sent(record)] == ["trigger", "resolve"]
    outside = notifier({"d": {}}, record=record, repeat_window=0)
    outside.send(outside.parse_alerts(alert()))
    outside.send(outside.parse_alerts(alert()))
    assert len(sent(record)) == 4


def test_send_with_no_wait_queues_and_a_drain_delivers(box: SqliteOutbox, tmp_path: Path) -> None:
    record = tmp_path / "sent.jsonl"
    nt = notifier({"a": {}, "b": {}}, box, record)
    report = nt.send(nt.parse_alerts([alert(1), alert(2)]), wait=0)
    assert {d.state for d in report.deliveries} == {State.queued}
    assert report.exit_code == EXIT_QUEUED
    assert sent(record) == []
    finished: list[Delivery] = []
    nt.drain(on_final=finished.append)
    assert len(finished) == 4 and {d.state for d in finished} == {State.delivered}
    assert {d.state for d in nt.inspect()} == {State.delivered}


def test_an_expired_lease_is_claimed_again_and_the_old_owner_is_fenced_off(
        box: SqliteOutbox) -> None:
    nt = notifier({"d": {}}, box)
    box.enqueue(planned(nt, alert()), repeat_window=0, now=100.0)
    (mine,) = box.claim("worker-a", 100.0, 10, lambda name: RULES)
    assert box.claim("worker-b", 104.0, 10, lambda name: RULES) == []  # lease still held
    (theirs,) = box.claim("worker-b", 106.0, 10, lambda name: RULES)
    assert [a.status for a in theirs.attempts] == ["lost"]
    assert "lease expired" in theirs.attempts[0].reason
    mine.attempts.append(_attempt(1))
    mine.finish(State.delivered)
    assert box.complete([mine], "worker-a", 107.0) == [False]  # a zombie cannot overwrite
    theirs.attempts.append(_attempt(2))
    theirs.finish(State.delivered)
    assert box.complete([theirs], "worker-b", 107.0) == [True]
    assert box.get(theirs.id).state is State.delivered  # type: ignore[union-attr]


def test_outcomes_are_completed_together_and_each_lease_is_checked(box: SqliteOutbox) -> None:
    nt = notifier({"d": {}}, box)
    box.enqueue(planned(nt, alert(1), alert(2), alert(3)), repeat_window=0, now=100.0)
    first, second, third = box.claim("worker-a", 100.0, 10, lambda name: RULES)
    for d, state in ((first, State.delivered), (second, State.failed), (third, State.delivered)):
        d.attempts.append(_attempt(1))
        d.finish(state, f"{state.value}!")
    third.attempts.append(_attempt(2))  # claims an attempt it does not hold
    assert box.complete([first, second, third], "worker-a", 101.0) == [True, True, False]
    stored = {d.id: d for d in box.find()}
    assert (stored[first.id].state, stored[first.id].reason) == (State.delivered, "delivered!")
    assert (stored[second.id].state, stored[second.id].reason) == (State.failed, "failed!")
    assert stored[third.id].state is State.in_flight  # untouched: still leased


def test_intake_commits_survive_power_loss_and_progress_commits_a_crash(tmp_path: Path) -> None:
    # synchronous=FULL (2) syncs the log on every commit; NORMAL (1) survives a crash of the
    # process, and a power loss can only make a delivery be sent again.
    with SqliteOutbox.open(tmp_path) as box:
        def mode() -> int:
            return int(box._db.execute("PRAGMA synchronous").fetchone()[0])

        nt = notifier({"d": {}}, box)
        box.enqueue(planned(nt, alert(1)), repeat_window=0, now=100.0)
        assert mode() == 2
        (claimed,) = box.claim("w", 100.0, 10, lambda name: RULES)
        assert mode() == 1
        claimed.attempts.append(_attempt(1))
        claimed.finish(State.delivered)
        box.enqueue(planned(nt, alert(2)), repeat_window=0, now=101.0)
        assert mode() == 2
        assert box.complete([claimed], "w", 102.0) == [True]
        assert mode() == 1
        assert box.retry(include_failed=True, now=103.0) == 1  # a person's decision: kept
        assert mode() == 2


def _attempt(n: int) -> Attempt:
    return Attempt(n, 0.0, 0.0, "delivered", "")


def test_a_delivery_that_keeps_losing_its_worker_ends_dead(box: SqliteOutbox) -> None:
    nt = notifier({"d": {}}, box)
    box.enqueue(planned(nt, alert()), repeat_window=0, now=0.0)
    rules = ClaimRules(lease=1.0, max_attempts=2)
    assert len(box.claim("w", 0.0, 1, lambda n: rules)) == 1
    assert len(box.claim("w", 2.0, 1, lambda n: rules)) == 1
    assert box.claim("w", 4.0, 1, lambda n: rules) == []
    (d,) = box.find()
    assert d.state is State.dead and d.attempt_count == 2
    assert d.reason.startswith("gave up after 2 attempts")


def test_rate_limit_delays_and_never_drops(box: SqliteOutbox) -> None:
    nt = notifier({"d": {}}, box)
    box.enqueue(planned(nt, alert(1), alert(2), alert(3)), repeat_window=0, now=10.0)
    rules = ClaimRules(lease=5, max_attempts=3, rate_key="k",
                       rate_limit=RateLimit(2, 1.0, burst=1))
    assert len(box.claim("w", 10.0, 10, lambda n: rules)) == 1
    assert box.next_due() == pytest.approx(10.5)
    assert len(box.claim("w", 10.5, 10, lambda n: rules)) == 1
    assert box.claim("w", 10.7, 10, lambda n: rules) == []
    assert len(box.claim("w", 11.0, 10, lambda n: rules)) == 1
    claimed = [d for d in box.find() if d.state is State.in_flight]
    assert len(claimed) == 3 and all(d.attempt_count == 0 for d in claimed)


def test_retry_after_holds_the_whole_key(box: SqliteOutbox) -> None:
    nt = notifier({"d": {}}, box)
    box.enqueue(planned(nt, alert(1)), repeat_window=0, now=0.0)
    rules = ClaimRules(lease=5, max_attempts=3, rate_key="k", rate_limit=RateLimit(100, 1.0))
    box.hold_key("k", 30.0)
    assert box.claim("w", 1.0, 10, lambda n: rules) == []
    assert box.next_due() == 30.0
    assert len(box.claim("w", 30.0, 10, lambda n: rules)) == 1


def test_a_resolve_never_overtakes_its_retrying_trigger(tmp_path: Path) -> None:
    record = tmp_path / "sent.jsonl"
    nt = notifier({"d": {"script": ["retry-after:0.3", "ok"], "retry_backoff": 0.01}},
                  record=record)
    nt.enqueue(nt.parse_alerts(alert()))
    nt.enqueue(nt.parse_alerts(alert(status="resolved")))
    nt.drain()
    assert [(s["action"], s["attempt"]) for s in sent(record)] == [
        ("trigger", 1), ("trigger", 2), ("resolve", 1)]


def test_retry_makes_queued_due_and_requeues_failed_with_a_fresh_budget(
        box: SqliteOutbox) -> None:
    nt = notifier({"ok": {}, "bad": {"script": ["fail"]},
                   "later": {"script": ["retry-after:100"], "retry_deadline": 1000}}, box)
    nt.send(nt.parse_alerts(alert()), wait=0.5)
    states = {d.destination: d for d in box.find()}
    assert states["bad"].state is State.failed and states["later"].state is State.queued
    assert box.retry(now=1.0) == 1
    assert box.get(states["later"].id).next_attempt_at == 1.0  # type: ignore[union-attr]
    assert box.retry([states["bad"].id], include_failed=True, now=2.0) == 1
    bad = box.get(states["bad"].id)
    assert bad is not None and bad.state is State.queued and bad.attempt_count == 0
    assert box.get(states["ok"].id).state is State.delivered  # type: ignore[union-attr]


def test_purge_removes_only_finished_deliveries(box: SqliteOutbox) -> None:
    nt = notifier({"ok": {}, "later": {"script": ["retry-after:100"], "retry_deadline": 1000}},
                  box)
    nt.send(nt.parse_alerts(alert()), wait=0.5)
    assert box.purge(older_than=3600, now=time.time()) == 0
    assert box.purge(older_than=0, now=time.time() + 1) == 1
    assert [d.destination for d in box.find()] == ["later"]


def test_a_destination_removed_from_the_config_fails_its_queued_deliveries(
        box: SqliteOutbox) -> None:
    nt = notifier({"gone": {}}, box)
    nt.send(nt.parse_alerts(alert()), wait=0)
    other = notifier({"kept": {}}, box)
    other.drain()
    (d,) = box.find()
    assert d.state is State.failed
    assert d.reason == "destination 'gone' is no longer in the config"


def test_get_accepts_a_unique_prefix(box: SqliteOutbox) -> None:
    nt = notifier({"d": {}}, box)
    (d,) = nt.enqueue(nt.parse_alerts(alert()))
    assert box.get(d.id[:8]).id == d.id  # type: ignore[union-attr]
    assert box.get(d.id[:3]) is None
    assert box.get("nope-nope") is None


def test_a_damaged_state_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "outbox.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match="damaged or is not an armor-notify outbox"):
        SqliteOutbox.open(tmp_path)


def test_a_state_file_from_another_version_is_refused(tmp_path: Path) -> None:
    SqliteOutbox.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / "outbox.sqlite3")
    db.execute("UPDATE meta SET value='99' WHERE key='schema'")
    db.commit()
    db.close()
    with pytest.raises(OutboxError, match="schema 99"):
        SqliteOutbox.open(tmp_path)


def test_a_version_1_state_file_opens_as_version_4_with_its_deliveries(tmp_path: Path) -> None:
    # What armor-notify before the check ledger made: schema 1, a delivery queued in it.
    from armor_notify.outbox import _SCHEMA, SCHEMA_VERSION

    db = sqlite3.connect(tmp_path / "outbox.sqlite3")
    db.executescript(_SCHEMA)
    db.execute("INSERT INTO meta VALUES ('schema', '1')")
    db.execute("INSERT INTO deliveries (id, alert_id, alert_status, destination, "
               "destination_type, rule, also_matched, dedup_key, alert, state, run_at, "
               "created_at, asset_id) VALUES ('d1', 'alert_1', 'triggered', 'd', 'scripted', "
               "'All', '[]', 'key-1', ?, 'queued', 1, 1, 'a1')", (json.dumps(alert(1)),))
    db.commit()
    db.close()
    with SqliteOutbox.open(tmp_path) as box:
        assert box.schema_version == SCHEMA_VERSION == 4
        (old,) = box.find()
        assert (old.id, old.state, old.alert.id, old.mute_id) == (
            "d1", State.queued, "alert_1", None)
        nt = notifier({"d": {}}, box)
        mute = nt.mute(assets=["db.s.*"], reason="backfill", seconds=3600)
        (held,) = nt.enqueue(nt.parse_alerts(alert(2)))
        assert held.mute_id == mute.id and box.get(held.id).mute_id == mute.id  # type: ignore[union-attr]
        assert [(m.id, m.held) for m in nt.mutes()] == [(mute.id, 1)]
        assert nt.unmute(mute.id)[1] == [held.id]
        assert nt.checks() == []
    db = sqlite3.connect(tmp_path / "outbox.sqlite3")
    assert db.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == ("4",)
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"deliveries", "checks", "mutes", "meta", "rate_state"} <= tables
    assert {"mute_id", "message"} <= {row[1] for row in db.execute(
        "PRAGMA table_info(deliveries)")}
    assert {"folded_into", "release_at"} <= {row[1] for row in db.execute(
        "PRAGMA table_info(checks)")}
    db.close()
    with SqliteOutbox.open(tmp_path) as box:  # opened again: nothing more to do
        assert [d.id for d in box.find()] == [held.id, "d1"]


def test_an_unwritable_state_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutboxError, match="cannot create the state directory"):
        SqliteOutbox.open(blocker / "sub")


def test_the_file_uses_wal_and_full_sync(box: SqliteOutbox, tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "outbox.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2
    db.close()


def test_intake_can_lease_what_is_due_to_the_sender_itself(box: SqliteOutbox) -> None:
    nt = notifier({"d": {}}, box)
    rules = ClaimRules(lease=5, max_attempts=3, rate_key="k", rate_limit=RateLimit(1, 1.0))
    first, second, resolved = planned(nt, alert(1), alert(2), alert(1, status="resolved"))
    box.enqueue([first], repeat_window=0, now=10.0, lease_to=("me", lambda n: rules))
    assert first.state is State.in_flight and box.claim("other", 10.0, 10, lambda n: rules) == []
    # The rate limit holds at intake too: the second waits for its turn, unleased.
    box.enqueue([second], repeat_window=0, now=10.1, lease_to=("me", lambda n: rules))
    assert second.state is State.queued and second.next_attempt_at == pytest.approx(11.0)
    # A resolve never overtakes its unfinished trigger, even when written by the same sender.
    box.enqueue([resolved], repeat_window=0, now=12.0, lease_to=("me", lambda n: rules))
    assert resolved.state is State.queued


def test_a_resolve_sent_later_also_delivers_its_queued_trigger_first(tmp_path: Path) -> None:
    record = tmp_path / "sent.jsonl"
    nt = notifier({"d": {"script": ["retry-after:0.3", "ok"], "retry_backoff": 0.01}},
                  record=record)
    first = nt.send(nt.parse_alerts(alert()), wait=0.1)
    assert first.deliveries[0].state is State.queued
    resolved = nt.send(nt.parse_alerts(alert(status="resolved")), wait=10)
    assert resolved.deliveries[0].state is State.delivered and resolved.exit_code == 0
    assert [(s["action"], s["attempt"]) for s in sent(record)] == [
        ("trigger", 1), ("trigger", 2), ("resolve", 1)]


def test_a_claim_skips_busy_destinations(box: SqliteOutbox) -> None:
    nt = notifier({"hung": {}, "quick": {}}, box)
    box.enqueue(planned(nt, alert(1), alert(2)), repeat_window=0, now=10.0)
    claimed = box.claim("w", 10.0, 10, lambda n: RULES, busy={"hung"})
    assert sorted(d.destination for d in claimed) == ["quick", "quick"]
    assert {d.state for d in box.find() if d.destination == "hung"} == {State.queued}
    assert sorted(d.destination for d in box.claim("w", 10.0, 10, lambda n: RULES)) == [
        "hung", "hung"]


def test_a_file_that_has_a_new_column_already_is_still_brought_up(tmp_path: Path) -> None:
    # A development build's schema 2 had the lineage columns already: the step adding them
    # must not fail on it (SQLite has no ADD COLUMN IF NOT EXISTS).
    from armor_notify.outbox import _SCHEMA, MIGRATIONS, SCHEMA_VERSION

    db = sqlite3.connect(tmp_path / "outbox.sqlite3")
    db.executescript(_SCHEMA)
    for statement in MIGRATIONS[2]:
        db.execute(statement)
    db.execute("ALTER TABLE checks ADD COLUMN folded_into TEXT")
    db.execute("INSERT INTO meta VALUES ('schema', '2')")
    db.commit()
    db.close()
    with SqliteOutbox.open(tmp_path) as box:
        assert box.schema_version == SCHEMA_VERSION and box.checks() == []
