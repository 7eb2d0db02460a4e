"""Noise control: schedules, blackouts, cooldowns, daily limits and digests, on an injectable
clock (no sleeps), through the outbox so that decisions survive restarts."""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from conftest import run_cli
from fake_slack import FakeSlack
from fake_smtp import ignore_known_aiosmtpd_warnings, plain_server
from slack_sdk.models.blocks import Block

from armor_notify.api import Notifier
from armor_notify.config import parse_config
from armor_notify.delivery import State
from armor_notify.digests import digest_headline
from armor_notify.durations import parse_duration
from armor_notify.errors import ConfigError
from armor_notify.noise import Blackout, Schedule
from armor_notify.outbox import SqliteOutbox
from armor_notify.plugins import PluginManager

UTC = timezone.utc
# A Wednesday, 10:00 UTC.
WED_10 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC).timestamp()


def alert(n: int = 0, asset: str | None = None, **over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"id": f"alert_{n}", "event_type": "schema_change",
                            "title": f"Column dropped {n}", "severity": "warning",
                            "asset": {"id": asset or f"a{n}", "name": f"db.public.{asset or n}"},
                            "changes": [{"type": "column_removed", "column": "c"}]}
    data.update(over)
    return data


def notifier(rule: dict[str, Any] | None = None, *, destinations: dict[str, Any] | None = None,
             outbox: SqliteOutbox | None = None, now: float = WED_10, **top: Any) -> Notifier:
    dests = destinations or {"d": {"type": "scripted"}}
    config = {"version": 1, "destinations": dests,
              "rules": [{"name": "Rule", "event": "schema_change", "destinations": list(dests),
                         **(rule or {})}], **top}
    nt = Notifier.from_dict(config, plugins=PluginManager().load(), outbox=outbox,
                            rng=random.Random(1))
    nt.dispatcher.clock = lambda: now
    return nt


def at(nt: Notifier, when: float) -> Notifier:
    nt.dispatcher.clock = lambda: when
    return nt


def states(report: Any) -> list[tuple[str, str]]:
    return [(d.state.value, d.reason) for d in report.deliveries]


# -- durations, schedules and blackouts on their own --------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [(90, 90.0), ("30s", 30.0), ("15m", 900.0),
                                               ("2h", 7200.0), ("1.5d", 129600.0)])
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_a_window_that_wraps_past_midnight() -> None:
    night = Schedule.model_validate({"timezone": "UTC", "windows": [
        {"days": ["fri"], "start": "22:00", "end": "06:00"}]})
    assert night.is_open(datetime(2026, 11, 27, 23, 0, tzinfo=UTC))  # Friday 23:00
    assert night.is_open(datetime(2026, 11, 28, 5, 59, tzinfo=UTC))  # Saturday 05:59
    assert not night.is_open(datetime(2026, 11, 28, 6, 0, tzinfo=UTC))
    assert not night.is_open(datetime(2026, 11, 26, 23, 0, tzinfo=UTC))  # Thursday
    assert night.next_open(datetime(2026, 11, 28, 7, 0, tzinfo=UTC)) == datetime(
        2026, 12, 4, 22, 0, tzinfo=UTC)


def test_schedules_follow_their_time_zone_and_its_clock_changes() -> None:
    office = Schedule.model_validate({"timezone": "America/New_York", "windows": [
        {"days": "weekdays", "start": "09:00", "end": "17:00"}]})
    # 14:00 UTC is 09:00 in New York in winter (UTC-5) ...
    assert office.is_open(datetime(2026, 11, 25, 14, 0, tzinfo=UTC))
    assert not office.is_open(datetime(2026, 11, 25, 13, 59, tzinfo=UTC))
    # ... and 13:00 UTC is 09:00 in summer (UTC-4), after the March change.
    assert office.is_open(datetime(2026, 3, 10, 13, 0, tzinfo=UTC))
    # Friday evening: it opens again on Monday 09:00 local, across the clock change.
    opens = office.next_open(datetime(2026, 3, 6, 23, 0, tzinfo=UTC))
    assert opens.astimezone(ZoneInfo("America/New_York")).strftime("%a %H:%M") == "Mon 09:00"
    assert opens == datetime(2026, 3, 9, 13, 0, tzinfo=UTC)


def test_one_off_and_yearly_blackouts() -> None:
    freeze = Blackout.model_validate({"name": "freeze", "start": "2026-12-31 18:00",
                                      "end": "2027-01-02", "yearly": True})
    assert freeze.active_until(datetime(2030, 1, 1, 12, 0, tzinfo=UTC), "UTC") == datetime(
        2030, 1, 2, tzinfo=UTC)
    assert freeze.active_until(datetime(2030, 12, 31, 19, 0, tzinfo=UTC), "UTC") is not None
    assert freeze.active_until(datetime(2030, 1, 2, 0, 1, tzinfo=UTC), "UTC") is None
    once = Blackout.model_validate({"name": "migration", "start": "2026-11-25 09:00",
                                    "end": "2026-11-25 11:00", "timezone": "Europe/Paris"})
    assert once.active_until(datetime(2026, 11, 25, 9, 30, tzinfo=UTC), "UTC") is not None
    assert once.active_until(datetime(2026, 11, 25, 10, 0, tzinfo=UTC), "UTC") is None


def test_config_errors_for_noise_controls() -> None:
    text = yaml.safe_dump({
        "version": 1,
        "defaults": {"timezone": "Mars/Olympus"},
        "destinations": {"pd": {"type": "pagerduty",
                                "integration_key": "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6",
                                "digest": {"window": "15m"}},
                         "d": {"type": "scripted", "daily_limit": 0}},
        "blackouts": [{"name": "a", "start": "2026-12-24", "end": "2026-12-27"},
                      {"name": "b", "start": "2026-12-26", "end": "2026-12-28"},
                      {"name": "c", "start": "2026-12-28", "end": "2026-12-20"}],
        "rules": [{"name": "r", "event": "schema_change", "destinations": ["d"],
                   "cooldown": "5x",
                   "schedule": {"timezone": "Europe/Paris", "windows": [
                       {"days": ["mon"], "start": "09:00", "end": "12:00"},
                       {"days": ["monday", "tue"], "start": "11:00", "end": "25:00"}]}}],
    })
    with pytest.raises(ConfigError) as info:
        parse_config(text, PluginManager().load().registry, source="c.yaml", environ={})
    found = {p.path: p.message for p in info.value.problems}
    assert "unknown time zone 'Mars/Olympus'" in found["defaults.timezone"]
    assert "pages stay individual" in found["destinations.pd.digest"]
    assert "greater than or equal to 1" in found["destinations.d.daily_limit"]
    assert "15m, 2h" in found["rules[0].cooldown"]
    assert "HH:MM" in found["rules[0].schedule.windows[1].end"]
    assert "end must be after start" in found["blackouts[2]"]


def test_overlapping_windows_and_blackouts_are_reported() -> None:
    text = yaml.safe_dump({
        "version": 1, "destinations": {"d": {"type": "scripted"}},
        "blackouts": [{"name": "a", "start": "2026-12-24", "end": "2026-12-27"},
                      {"name": "b", "start": "2026-12-26", "end": "2026-12-28"}],
        "rules": [{"name": "r", "event": "schema_change", "destinations": ["d"],
                   "schedule": {"windows": [{"days": ["mon"], "start": "09:00", "end": "12:00"},
                                            {"days": ["mon"], "start": "11:00", "end": "13:00"}]}}],
    })
    with pytest.raises(ConfigError) as info:
        parse_config(text, PluginManager().load().registry, environ={})
    found = {p.path: p.message for p in info.value.problems}
    assert "overlaps blackouts[0] ('a')" in found["blackouts[1]"]
    assert "windows[0] and windows[1] overlap on mon 11:00" in found["rules[0].schedule"]


# -- the gate, in the product's order -----------------------------------------------------------


def test_outside_operating_hours_is_suppressed_and_logged() -> None:
    office = {"schedule": {"timezone": "UTC", "windows": [
        {"days": "weekdays", "start": "09:00", "end": "17:00"}]}}
    nt = notifier(office, now=WED_10 + 8 * 3600)  # 18:00
    report = nt.send(nt.parse_alerts(alert()))
    assert states(report) == [("suppressed", "outside operating hours")]
    assert report.exit_code == 0
    assert [d.state for d in nt.inspect()] == [State.suppressed]  # still logged
    inside = notifier(office, now=WED_10)
    assert states(inside.send(inside.parse_alerts(alert()))) == [("delivered", "")]


def test_hold_delivers_when_the_window_opens(tmp_path: Path) -> None:
    record = tmp_path / "sent.jsonl"
    rule = {"hold": True, "schedule": {"windows": [
        {"days": "weekdays", "start": "09:00", "end": "17:00"}]}}
    nt = notifier(rule, destinations={"d": {"type": "scripted", "record": str(record)}},
                  now=WED_10 + 12 * 3600)  # Wednesday 22:00
    report = nt.send(nt.parse_alerts(alert()), wait=0)
    (d,) = report.deliveries
    assert d.state is State.queued
    assert d.reason == "held: outside operating hours until 2026-11-26 09:00 UTC"
    assert d.next_attempt_at == datetime(2026, 11, 26, 9, 0, tzinfo=UTC).timestamp()
    at(nt, d.next_attempt_at).drain()
    assert [x.state for x in nt.inspect()] == [State.delivered]
    assert record.exists()


def test_blackouts_suppress_or_hold() -> None:
    blackout = [{"name": "Release freeze", "start": "2026-11-25 08:00",
                 "end": "2026-11-25 12:00"}]
    nt = notifier(blackouts=blackout)
    assert states(nt.send(nt.parse_alerts(alert()))) == [
        ("suppressed", "blackout period 'Release freeze'")]
    held = notifier({"hold": True}, blackouts=blackout)
    (d,) = held.send(held.parse_alerts(alert()), wait=0).deliveries
    assert d.state is State.queued and "until 2026-11-25 12:00 UTC" in d.reason


def test_schedule_is_checked_before_blackout() -> None:
    rule = {"schedule": {"windows": [{"days": "weekdays", "start": "09:00", "end": "09:30"}]}}
    nt = notifier(rule, blackouts=[{"name": "x", "start": "2026-11-25", "end": "2026-11-26"}])
    assert states(nt.send(nt.parse_alerts(alert()))) == [("suppressed", "outside operating hours")]


def test_cooldown_per_rule_and_asset() -> None:
    nt = notifier({"cooldown": "30m"})
    first = nt.send(nt.parse_alerts(alert(1, asset="orders")))
    repeat = nt.send(nt.parse_alerts(alert(2, asset="orders")))
    other = nt.send(nt.parse_alerts(alert(3, asset="customers")))
    resolved = nt.send(nt.parse_alerts(alert(1, asset="orders", status="resolved")))
    later = at(nt, WED_10 + 31 * 60).send(nt.parse_alerts(alert(4, asset="orders")))
    assert states(first) == [("delivered", "")]
    (state, reason), = states(repeat)
    assert state == "suppressed"
    assert reason == ("cooldown: rule 'Rule' notified about db.public.orders at "
                      "2026-11-25 10:00 UTC (cooldown 30m)")
    assert states(other) == [("delivered", "")]
    assert states(resolved) == [("delivered", "")]  # resolves always go through
    assert states(later) == [("delivered", "")]


def test_daily_limits_per_rule_and_per_destination() -> None:
    nt = notifier({"daily_limit": 2}, defaults={"timezone": "Europe/Paris"})
    results = [nt.send(nt.parse_alerts(alert(i))).deliveries[0] for i in range(3)]
    assert [d.state for d in results] == [State.delivered, State.delivered, State.suppressed]
    assert results[2].reason == "daily limit of 2 reached for rule 'Rule'"
    # Midnight in Paris (23:00 UTC in winter) starts a new day.
    next_day = at(nt, datetime(2026, 11, 25, 23, 0, 1, tzinfo=UTC).timestamp())
    assert next_day.send(nt.parse_alerts(alert(9))).deliveries[0].state is State.delivered

    per_dest = notifier(destinations={"d": {"type": "scripted", "daily_limit": 1}})
    sent = [per_dest.send(per_dest.parse_alerts(alert(i))).deliveries[0] for i in range(2)]
    assert [d.state for d in sent] == [State.delivered, State.suppressed]
    assert sent[1].reason == "daily limit of 1 reached for destination 'd'"


# -- digests ------------------------------------------------------------------------------------


@pytest.fixture
def slack() -> Any:
    with FakeSlack() as receiver:
        yield receiver


def digest_notifier(slack: FakeSlack, outbox: SqliteOutbox | None = None, now: float = WED_10,
                    **digest: Any) -> Notifier:
    return notifier({"event": ["schema_change", "freshness_violation"]}, destinations={
        "team": {"type": "slack", "webhook_url": slack.url, "rate_limit": "none",
                 "digest": {"window": "15m", **digest}}}, outbox=outbox, now=now)


def freshness(n: int, table: int) -> dict[str, Any]:
    return {"id": f"late_{n}", "event_type": "freshness_violation", "severity": "warning",
            "title": f"Table t{table} is late ({n})", "freshness": {"delay_hours": 3},
            "link": f"https://app.anomalyarmor.ai/alerts/late_{n}",
            "asset": {"id": f"t{table}", "name": f"analytics.public.t{table}"}}


def test_a_storm_arrives_as_a_few_digests_that_account_for_every_alert(slack: FakeSlack) -> None:
    nt = digest_notifier(slack)
    report = nt.send(nt.parse_alerts([freshness(i, i % 7) for i in range(200)]))
    assert {d.state for d in report.deliveries} == {State.batched}
    assert report.exit_code == 0
    assert slack.requests == []  # nothing yet: the window is open
    at(nt, WED_10 + 15 * 60).drain()
    payloads = [r.json() for r in slack.requests]
    assert len(payloads) == 4  # 200 alerts, at most 50 in each digest
    listed = 0
    for payload in payloads:
        assert payload["text"].startswith(":package: Digest: 50 freshness violations in 7 tables")
        assert len(payload["blocks"]) <= 50
        for block in payload["blocks"]:
            Block.parse(block).validate_json()  # type: ignore[union-attr]
        listed += json.dumps(payload, ensure_ascii=False).count("• Table t")
    assert listed == 200
    assert {d.state for d in nt.inspect(limit=500) if d.digest == ()} == {State.digested}
    digests = [d for d in nt.inspect(limit=500) if d.digest]
    assert len(digests) == 4 and {d.state for d in digests} == {State.delivered}


def test_a_digest_fills_before_its_window_closes(slack: FakeSlack) -> None:
    nt = digest_notifier(slack, max_items=3)
    nt.send(nt.parse_alerts([freshness(i, 1) for i in range(4)]))
    nt.drain()
    assert len(slack.requests) == 1
    assert "3 freshness violations in 1 table" in slack.requests[0].json()["text"]
    remaining = [d for d in nt.inspect() if d.state is State.batched]
    assert len(remaining) == 1


def test_schema_change_digest_headline_and_folded_resolves(slack: FakeSlack) -> None:
    nt = digest_notifier(slack)
    nt.send(nt.parse_alerts([alert(1, asset="orders"), alert(2, asset="orders"),
                             alert(3, asset="customers", changes=[{"type": "column_added"}]),
                             alert(1, asset="orders", status="resolved")]))
    at(nt, WED_10 + 16 * 60).drain()
    (payload,) = [r.json() for r in slack.requests]
    assert payload["text"] == (":package: Digest: 4 schema changes in 2 tables "
                               "(3 breaking, 1 resolved)")
    body = json.dumps(payload, ensure_ascii=False)
    assert "db.public.orders" in body and "db.public.customers" in body
    assert "— breaking, resolved" in body


def test_a_restart_in_the_middle_of_a_window_loses_nothing(slack: FakeSlack,
                                                           tmp_path: Path) -> None:
    with digest_notifier(slack, SqliteOutbox.open(tmp_path)) as first:
        first.send(first.parse_alerts([freshness(i, 1) for i in range(3)]))
    with digest_notifier(slack, SqliteOutbox.open(tmp_path), now=WED_10 + 60) as second:
        second.send(second.parse_alerts([freshness(i, 2) for i in range(3, 5)]))
        at(second, WED_10 + 15 * 60).drain()
    (payload,) = [r.json() for r in slack.requests]
    assert payload["text"].startswith(":package: Digest: 5 freshness violations in 2 tables")


def test_over_the_daily_limit_alerts_are_counted_into_the_digest(slack: FakeSlack) -> None:
    nt = notifier({"event": "freshness_violation", "daily_limit": 1}, destinations={
        "team": {"type": "slack", "webhook_url": slack.url, "rate_limit": "none",
                 "digest": {"window": "15m"}}})
    report = nt.send(nt.parse_alerts([freshness(i, 1) for i in range(3)]))
    assert {d.state for d in report.deliveries} == {State.batched}
    at(nt, WED_10 + 15 * 60).drain()
    assert "3 freshness violations" in slack.requests[0].json()["text"]


def test_an_email_digest_is_one_message(tmp_path: Path) -> None:
    ignore_known_aiosmtpd_warnings()
    with plain_server() as smtp:
        nt = notifier({"event": "freshness_violation"}, destinations={
            "mail": {"type": "email", **smtp.config(security="none"),
                     "digest": {"window": "10m"}}})
        nt.send(nt.parse_alerts([freshness(i, i % 2) for i in range(6)]))
        at(nt, WED_10 + 600).drain()
        (mail,) = smtp.handler.received
    msg = message_from_bytes(mail.content, policy=default_policy)
    assert msg["Subject"] == "[AnomalyArmor] Digest: 6 freshness violations in 2 tables"
    text = msg.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert text.count("- Table t") == 6
    html = msg.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    assert html.count("<li>") == 6


def test_digest_headline_wording() -> None:
    nt = notifier()
    alerts = nt.parse_alerts([alert(1, asset="x"), alert(2, asset="y"),
                              {**freshness(3, 1)}])
    assert digest_headline(alerts[:1]) == "1 schema change in 1 table (1 breaking)"
    assert digest_headline(alerts) == "3 alerts in 3 tables (2 breaking)"


# -- route --at and send through the command line ----------------------------------------------


@pytest.mark.slow
def test_route_at_shows_what_would_be_suppressed_held_or_digested(tmp_path: Path) -> None:
    config = tmp_path / "armor-notify.yaml"
    config.write_text(yaml.safe_dump({
        "version": 1,
        "defaults": {"timezone": "Europe/Paris"},
        "destinations": {"page": {"type": "scripted"}, "team": {"type": "scripted"}},
        "blackouts": [{"name": "Christmas", "start": "2026-12-24", "end": "2026-12-27",
                       "yearly": True}],
        "rules": [
            {"name": "Office hours", "event": "schema_change", "destinations": ["page"],
             "schedule": {"timezone": "Europe/Paris",
                          "windows": [{"days": "weekdays", "start": "09:00", "end": "18:00"}]}},
            {"name": "Team", "event": "schema_change", "destinations": ["team"], "hold": True},
        ],
    }))
    path = tmp_path / "alert.json"
    path.write_text(json.dumps(alert()))

    def outcomes(when: str) -> dict[str, tuple[str, str | None]]:
        res = run_cli("route", str(path), "--config", str(config), "--json", "--at", when)
        assert res.returncode == 0, res.stderr
        return {r["destination"]: (r["outcome"], r["not_sent_because"])
                for r in json.loads(res.stdout)["alerts"][0]["routes"]}

    assert outcomes("2026-11-25T10:00") == {"page": ("send", None), "team": ("send", None)}
    night = outcomes("2026-11-25T22:00")
    assert night["page"] == ("suppressed", "outside operating hours")
    assert night["team"] == ("send", None)
    christmas = outcomes("2027-12-24T10:00")  # yearly
    assert christmas["team"][0] == "held" and "Christmas" in (christmas["team"][1] or "")
    human = run_cli("route", str(path), "--config", str(config), "--at", "2026-11-25T22:00")
    assert "no: outside operating hours" in human.stdout
    bad = run_cli("route", str(path), "--config", str(config), "--at", "tomorrow")
    assert bad.returncode == 2 and "not an ISO 8601 time" in bad.stderr


def test_the_readme_example_is_a_valid_config() -> None:
    from conftest import ROOT

    section = (ROOT / "docs" / "noise-control.md").read_text()
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = parse_config("version: 1\n" + block, PluginManager().load().registry,
                          environ={"SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/X"})
    assert [b.name for b in config.blackouts] == ["Year-end freeze", "Warehouse migration"]
    late = config.rule("Late data")
    assert late is not None and late.model.cooldown == 3600 and late.model.digest is not None
