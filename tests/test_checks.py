"""Check state and mutes (issue 18), in one process: the ledger's decisions (edges, resolve_after,
reminders, errors, repeated runs, missing runs) and mutes (held, released, settled), judged at
intake and explained by ``route``. Times are a clock the test moves; nothing sleeps. Over the
wire and across worker processes: ``test_checks_e2e.py``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from armor_notify.api import Notifier
from armor_notify.cli import cli
from armor_notify.delivery import State
from armor_notify.errors import AlertError, ArmorNotifyError, MuteError
from armor_notify.testing import Capture, build_notifier

T0 = 1_796_000_000.0  # 2026-11-30 00:53:20 UTC


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def config(**rule: Any) -> dict[str, Any]:
    return {"version": 1,
            "destinations": {"pd": {"type": "capture"}, "team": {"type": "capture"}},
            "rules": [{"name": "Quality", "event": ["validity_failure", "check_missing"],
                       "destinations": ["pd", "team"], **rule}]}


@pytest.fixture
def capture() -> Capture:
    return Capture()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def notifier_for(capture: Capture, clock: Clock, cfg: dict[str, Any] | None = None) -> Notifier:
    nt = build_notifier(cfg or config(), capture.destination_type)
    nt.dispatcher.clock = clock
    return nt


@pytest.fixture
def nt(capture: Capture, clock: Clock) -> Iterator[Notifier]:
    with notifier_for(capture, clock) as notifier:
        yield notifier


def result(status: str, *, check: str = "not_null_orders_id", asset: str = "orders",
           **more: Any) -> dict[str, Any]:
    extra = {k: more.pop(k) for k in ("run_id", "expect_every") if k in more}
    return {"event_type": "validity_failure", "severity": more.pop("severity", "critical"),
            "title": f"{check} on {asset}", "asset": {"id": asset, "name": f"db.marts.{asset}"},
            "check": {"id": check, "status": status, **extra}, **more}


def send(nt: Notifier, *results: dict[str, Any]) -> Any:
    return nt.send(nt.parse_alerts(list(results)))


def sent(capture: Capture, destination: str = "pd") -> list[tuple[str, str]]:
    return [(n.alert.status, n.dedup_key) for n in capture.by_destination(destination)]


# -- edges, not levels ------------------------------------------------------------------------------


def test_a_failing_check_pages_once_and_its_pass_resolves_with_the_trigger_key(
        nt: Notifier, capture: Capture, clock: Clock) -> None:
    notes = []
    for status in ("fail", "fail", "pass", "fail", "pass"):
        report = send(nt, result(status))
        notes.append(next(iter(report.notes.values())))
        clock.advance(60)
    for destination in ("pd", "team"):
        statuses = [s for s, _ in sent(capture, destination)]
        assert statuses == ["triggered", "resolved", "triggered", "resolved"]
        assert len({key for _, key in sent(capture, destination)}) == 1  # one incident key
    assert notes[0] == "check started failing: paged"
    assert notes[1].startswith("check still failing since 2026-11-30") and \
        notes[1].endswith(": no new page")
    assert notes[2].startswith("check passed: resolves its incident")
    # The repeat fail was written, suppressed, with the reason (not silently dropped).
    still = [d for d in nt.inspect() if d.state is State.suppressed]
    assert len(still) == 2 and all("still failing" in d.reason for d in still)


def test_passes_of_a_passing_check_send_and_write_nothing(nt: Notifier, capture: Capture) -> None:
    report = send(nt, result("pass"), result("pass", check="unique_orders_id"))
    assert report.deliveries == [] and capture.notifications == []
    assert set(report.notes.values()) == {"check passing: nothing to send"}
    assert nt.inspect() == []
    assert [c.state for c in nt.checks()] == ["passing", "passing"]


def test_the_resolve_goes_where_the_trigger_went_even_if_the_pass_matches_no_rule(
        capture: Capture, clock: Clock) -> None:
    with notifier_for(capture, clock, config(conditions={"min_severity": "critical"})) as nt:
        send(nt, result("fail"))
        send(nt, result("pass", severity="info"))  # matches no rule by itself
        assert nt.route(nt.parse_alerts(result("pass", severity="info"))[0]) == []
    assert [s for s, _ in sent(capture)] == ["triggered", "resolved"]


def test_resolve_after_damps_a_flapping_check(capture: Capture, clock: Clock) -> None:
    with notifier_for(capture, clock, config(resolve_after=2)) as nt:
        notes = [next(iter(send(nt, result(s)).notes.values()))
                 for s in ("fail", "pass", "fail", "pass", "pass")]
    assert [s for s, _ in sent(capture)] == ["triggered", "resolved"]
    assert notes[1].startswith("check passed 1 of the 2 runs in a row needed to resolve")
    assert notes[2].endswith("no new page")  # the count started again
    assert notes[4].startswith("check passed: resolves")


def test_a_check_still_failing_is_reminded_every_remind_every(capture: Capture,
                                                             clock: Clock) -> None:
    with notifier_for(capture, clock, config(remind_every="1h")) as nt:
        for _ in range(5):  # a result every 20 minutes
            send(nt, result("fail"))
            clock.advance(1200)
    pages = capture.by_destination("pd")
    assert [n.alert.status for n in pages] == ["triggered", "triggered", "triggered"][:len(pages)]
    assert len(pages) == 2  # at 0 and at 60 min (the 80 min result is 20 min after the reminder)
    assert pages[1].alert.title.startswith("Still failing since 2026-11-30")
    assert pages[0].dedup_key == pages[1].dedup_key


def test_an_error_counts_as_a_failure_unless_the_config_ignores_errors(
        capture: Capture, clock: Clock) -> None:
    with notifier_for(capture, clock) as nt:
        send(nt, result("error"))
    assert [s for s, _ in sent(capture)] == ["triggered"]
    ignoring = Capture()
    with notifier_for(ignoring, clock, {**config(), "checks": {"errors": "ignore"}}) as nt:
        report = send(nt, result("error"))
        assert "checks.errors: ignore" in next(iter(report.notes.values()))
        send(nt, result("fail"))
    assert [s for s, _ in sent(ignoring)] == ["triggered"]  # the fail, not the error


def test_a_run_recorded_twice_counts_once(capture: Capture, clock: Clock) -> None:
    with notifier_for(capture, clock, config(resolve_after=2)) as nt:
        send(nt, result("fail", run_id="r1"))
        send(nt, result("pass", run_id="r2"))
        report = send(nt, result("pass", run_id="r2"))  # the producer posted again
        assert "already recorded" in next(iter(report.notes.values()))
        assert nt.checks()[0].state == "failing"
        send(nt, result("pass", run_id="r3"))
    assert [s for s, _ in sent(capture)] == ["triggered", "resolved"]


def test_send_resolved_off_keeps_the_resolve_from_that_destination(clock: Clock) -> None:
    capture = Capture()
    cfg = config()
    cfg["destinations"]["team"]["send_resolved"] = False
    with notifier_for(capture, clock, cfg) as nt:
        send(nt, result("fail"))
        report = send(nt, result("pass"))
    assert {d.destination: d.state for d in report.deliveries} == {
        "pd": State.delivered, "team": State.suppressed}


def test_checks_of_different_sources_or_assets_are_apart(nt: Notifier, capture: Capture) -> None:
    send(nt, result("fail"), result("fail", asset="customers"))
    dbt = result("fail")
    dbt["check"]["source"] = "dbt"
    send(nt, dbt)
    assert len(capture.by_destination("pd")) == 3
    assert {(c.source, c.asset_id) for c in nt.checks(failing=True)} == {
        ("native", "orders"), ("native", "customers"), ("dbt", "orders")}


def test_two_checks_on_one_asset_are_two_incidents(nt: Notifier, capture: Capture) -> None:
    send(nt, result("fail"), result("fail", check="unique_orders_id"))
    send(nt, result("pass"))  # one of them recovers; the other still fails
    first, second, resolve = sent(capture)
    assert first[1] != second[1] and resolve == ("resolved", first[1])
    assert first[1].endswith("-orders-not_null_orders_id")


def test_a_page_that_did_not_get_through_is_sent_again_by_the_next_failure(
        nt: Notifier, capture: Capture) -> None:
    from armor_notify.outcome import Outcome

    capture.answer(Outcome.failed("refused"), Outcome.failed("refused"))
    send(nt, result("fail"))  # both pages refused: failed
    report = send(nt, result("fail"))
    assert next(iter(report.notes.values())).endswith("no page of it got through: paged again")
    assert [d.state for d in report.deliveries] == [State.delivered, State.delivered]


def test_the_note_says_what_became_of_a_new_failure(capture: Capture, clock: Clock) -> None:
    with notifier_for(capture, clock, config(conditions={"min_severity": "critical"})) as nt:
        quiet = send(nt, result("fail", severity="warning"))
        assert next(iter(quiet.notes.values())) == (
            "check started failing: no rule routes it, nothing sent")
        nt.mute(assets=["customers"], reason="backfill", seconds=60)
        held = send(nt, result("fail", asset="customers"))
        assert next(iter(held.notes.values())).startswith(
            "check started failing: page held (muted by #1 until ")


def test_a_status_that_contradicts_the_check_is_refused(nt: Notifier) -> None:
    with pytest.raises(AlertError, match=r"contradicts check\.status 'fail'"):
        nt.parse_alerts({**result("fail"), "status": "resolved"})
    (passed,) = nt.parse_alerts(result("pass"))
    assert passed.status == "resolved"
    with pytest.raises(AlertError, match=r"check\.status"):
        nt.parse_alerts(result("broken"))


# -- missing runs -----------------------------------------------------------------------------------


def test_a_check_that_stops_reporting_raises_check_missing_once_and_never_resolves_itself(
        nt: Notifier, capture: Capture, clock: Clock) -> None:
    send(nt, result("fail", expect_every="1h"))
    clock.advance(3600 + 1800)
    assert nt.notice_missing() == []  # 1.5 intervals: not yet
    clock.advance(1800)
    raised = nt.notice_missing()
    assert {d.alert.event_type for d in raised} == {"check_missing"}
    nt.drain()
    clock.advance(7200)
    assert nt.notice_missing() == []  # once, until it reports again
    pages = capture.by_destination("pd")
    assert [n.alert.event_type for n in pages] == ["validity_failure", "check_missing"]
    assert "has not reported since" in pages[1].alert.title and "every 1h" in pages[1].alert.title
    (state,) = nt.checks()
    assert state.state == "failing" and state.missing_since == T0 + 7200  # still failing
    # It reports again (still failing): the missing incident resolves, no new page.
    send(nt, result("fail", expect_every="1h"))
    missing_key = pages[1].dedup_key
    assert sent(capture)[-1] == ("resolved", missing_key)
    assert [s for s, _ in sent(capture)] == ["triggered", "triggered", "resolved"]


def test_expect_every_may_come_from_the_rule(capture: Capture, clock: Clock) -> None:
    with notifier_for(capture, clock, config(expect_every="30m")) as nt:
        send(nt, result("pass"))
        clock.advance(3601)
        assert len(nt.notice_missing()) == 2  # pd and team
        assert nt.checks()[0].expect_every == 1800


# -- mutes ------------------------------------------------------------------------------------------


def test_a_mute_holds_triggers_and_releases_those_still_failing_when_lifted(
        nt: Notifier, capture: Capture, clock: Clock) -> None:
    mute = nt.mute(assets=["db.marts.*"], reason="backfill", seconds=7200, author="ana")
    report = send(nt, result("fail"))
    assert capture.notifications == []
    assert {d.state for d in report.deliveries} == {State.queued}
    assert all(d.reason == f"muted by #{mute.id} until 2026-11-30 02:53 UTC: backfill"
               and d.mute_id == mute.id for d in report.deliveries)
    assert report.exit_code == 3  # still queued: a worker delivers it
    (listed,) = nt.mutes()
    assert (listed.held, listed.author) == (2, "ana")
    clock.advance(600)
    lifted, released = nt.unmute(mute.id)
    assert len(released) == 2 and lifted.lifted_at == T0 + 600
    nt.drain()
    assert [s for s, _ in sent(capture)] == ["triggered"]
    assert nt.mutes() == [] and len(nt.mutes(ended=True)) == 1


def test_a_held_trigger_whose_check_recovers_sends_nothing_at_all(
        nt: Notifier, capture: Capture) -> None:
    mute = nt.mute(assets=["orders"], reason="full refresh", seconds=3600)
    send(nt, result("fail"))
    report = send(nt, result("pass"))
    assert {d.state for d in report.deliveries} == {State.suppressed}
    assert all("held by mute" in d.reason for d in report.deliveries)
    nt.unmute(mute.id)
    nt.drain()
    assert capture.notifications == []
    assert {d.reason for d in nt.inspect() if d.alert.status == "triggered"} == {
        f"resolved while muted by #{mute.id}: never sent"}


def test_resolves_pass_through_a_mute_and_a_mute_ends_by_itself(
        nt: Notifier, capture: Capture, clock: Clock) -> None:
    send(nt, result("fail"))
    nt.mute(tags=["pii"], rules=["Quality"], assets=["db.marts.*"], reason="x", seconds=600)
    tagged = result("fail", asset="users")
    tagged["asset"]["tags"] = ["PII"]
    send(nt, tagged, result("pass"))  # the users trigger is held, the orders resolve goes
    assert [s for s, _ in sent(capture)] == ["triggered", "resolved"]
    clock.advance(601)
    nt.drain()  # the mute ended: what it held is due
    assert [s for s, _ in sent(capture)] == ["triggered", "resolved", "triggered"]


def test_a_second_mute_keeps_holding_what_the_first_released(nt: Notifier,
                                                            capture: Capture) -> None:
    short = nt.mute(assets=["orders"], reason="a", seconds=600)
    long = nt.mute(assets=["db.marts.*"], reason="b", seconds=7200)
    send(nt, result("fail"))
    (held,) = [d for d in nt.inspect() if d.destination == "pd"]
    assert held.mute_id == long.id  # the one that ends last
    _, released = nt.unmute(short.id)
    assert released == []
    _, released = nt.unmute(long.id)
    assert len(released) == 2


def test_lifting_a_mute_leaves_what_the_rules_operating_hours_still_hold(
        capture: Capture, clock: Clock) -> None:
    office = config(schedule={"timezone": "UTC", "windows": [
        {"days": "daily", "start": "09:00", "end": "18:00"}]}, hold=True)
    with notifier_for(capture, clock, office) as nt:
        mute = nt.mute(assets=["orders"], reason="backfill", seconds=3600)
        send(nt, result("fail"))  # 00:53 UTC: muted, and outside the rule's hours
        clock.advance(600)
        _, released = nt.unmute(mute.id)
        assert released == []  # the mute is gone, the night is not
        held = nt.inspect()
        assert {d.next_attempt_at for d in held} == {T0 - 3200 + 9 * 3600}  # 09:00 UTC
        assert {d.reason for d in held} == {
            f"mute #{mute.id} was lifted; held: outside operating hours until "
            "2026-11-30 09:00 UTC"}
        assert {d.mute_id for d in held} == {None} and nt.mutes() == []
        nt.drain(wait=0.3)  # a worker now: nothing is due
        assert capture.notifications == []
        clock.advance(9 * 3600 - 3200 - 600)  # 09:00
        nt.drain()
        assert sorted(n.destination for n in capture.notifications) == ["pd", "team"]


def test_a_mute_that_ends_outside_the_rules_operating_hours_holds_until_they_open(
        capture: Capture, clock: Clock) -> None:
    office = config(schedule={"timezone": "UTC", "windows": [
        {"days": "daily", "start": "09:00", "end": "18:00"}]}, hold=True)
    with notifier_for(capture, clock, office) as nt:
        nt.mute(assets=["orders"], reason="long backfill", seconds=20 * 3600)  # to 20:53 UTC
        send(nt, result("fail"))
        tomorrow_nine = T0 - 3200 + 33 * 3600  # 2026-12-01 09:00 UTC
        assert {d.next_attempt_at for d in nt.inspect()} == {tomorrow_nine}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"reason": "x", "seconds": 60}, "say what to mute"),
    ({"assets": ["a"], "reason": " ", "seconds": 60}, "say why"),
    ({"assets": ["a"], "reason": "x", "seconds": 31 * 86400}, "at most 30 days"),
    ({"rules": ["Qualty"], "reason": "x", "seconds": 60}, "did you mean 'Quality'"),
])
def test_a_mute_must_say_what_why_and_until_when(nt: Notifier, kwargs: dict[str, Any],
                                                 message: str) -> None:
    with pytest.raises(MuteError, match=message):
        nt.mute(**kwargs)


def test_the_command_line_knows_the_longest_mute() -> None:
    from armor_notify import cli as command_line
    from armor_notify.mutes import MAX_MUTE

    assert command_line.MAX_MUTE == MAX_MUTE  # kept apart so that --help stays fast


def test_unmuting_an_unknown_mute_says_so(nt: Notifier) -> None:
    with pytest.raises(ArmorNotifyError, match="no mute #42"):
        nt.unmute(42)


# -- route explains ---------------------------------------------------------------------------------


def test_route_explains_mutes_and_ledger_decisions(nt: Notifier, clock: Clock) -> None:
    send(nt, result("fail"))
    history = nt.outbox.history()
    still = nt.explain(nt.parse_alerts(result("fail"))[0], at=clock.now, history=history)
    assert still["check"]["decision"] == "hold"
    assert [r["outcome"] for r in still["routes"]] == ["suppressed", "suppressed"]
    assert still["routes"][0]["not_sent_because"].endswith("no new page")
    recovering = nt.explain(nt.parse_alerts(result("pass"))[0], at=clock.now, history=history)
    assert recovering["check"]["decision"] == "resolve"
    assert [(r["destination"], r["sent"]) for r in recovering["routes"]] == [
        ("pd", True), ("team", True)]
    mute = nt.mute(assets=["customers"], reason="backfill", seconds=3600)
    other = nt.explain(nt.parse_alerts(result("fail", asset="customers"))[0], at=clock.now,
                       history=nt.outbox.history())
    assert other["routes"][0]["outcome"] == "held"
    assert other["routes"][0]["not_sent_because"] == (
        f"muted by #{mute.id} until 2026-11-30 01:53 UTC: backfill")
    later = nt.explain(nt.parse_alerts(result("fail", asset="customers"))[0],
                       at=clock.now + 3600, history=nt.outbox.history())
    assert later["routes"][0]["outcome"] == "send"  # the mute has ended by then


# -- the command line -------------------------------------------------------------------------------


def test_the_commands_on_one_state_dir(tmp_path: Path) -> None:
    cfg = tmp_path / "armor-notify.yaml"
    cfg.write_text(json.dumps({
        "version": 1, "destinations": {"pd": {
            "type": "pagerduty", "integration_key": "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6",
            "url": "http://127.0.0.1:9/v2/enqueue"}},
        "rules": [{"name": "Quality", "event": "validity_failure", "destinations": ["pd"]}]}))
    state = ["-c", str(cfg), "--state-dir", str(tmp_path / "state")]
    runner = CliRunner()
    made = runner.invoke(cli, ["mute", "--asset", "db.marts.*", "--for", "2h", "--reason",
                               "backfill", *state])
    assert made.exit_code == 0, made.output
    assert made.output.startswith("mute #1: asset db.marts.* until ")
    alert = tmp_path / "fail.json"
    alert.write_text(json.dumps(result("fail")))
    sent_now = runner.invoke(cli, ["send", str(alert), *state])
    assert sent_now.exit_code == 3, sent_now.output  # held: queued for after the mute
    assert "check started failing: page held (muted by #1 until " in sent_now.output
    assert "1 held (a mute, or a schedule with hold: true)" in sent_now.output
    listed = runner.invoke(cli, ["mute", "list", "--json", *state])
    (mute,) = json.loads(listed.output)["mutes"]
    assert (mute["id"], mute["held"], mute["state"]) == (1, 1, "active")
    checks = runner.invoke(cli, ["checks", "--failing", "--json", *state])
    (check,) = json.loads(checks.output)["checks"]
    assert (check["check"], check["state"], check["dedup_keys"]) == (
        "not_null_orders_id", "failing",
        ["anomalyarmor-quality-validity_failure-orders-not_null_orders_id"])
    table = runner.invoke(cli, ["checks", *state])
    assert "native:not_null_orders_id" in table.output and "failing" in table.output
    route = runner.invoke(cli, ["route", str(alert), *state])
    assert "check still failing since" in route.output
    lifted = runner.invoke(cli, ["unmute", "#1", *state])
    assert lifted.exit_code == 0 and "1 held delivery is due now" in lifted.output
    assert runner.invoke(cli, ["unmute", "nope", *state]).exit_code == 2
    refused = runner.invoke(cli, ["mute", "--asset", "x", "--reason", "r", *state])
    assert refused.exit_code == 2 and "--for" in refused.output
