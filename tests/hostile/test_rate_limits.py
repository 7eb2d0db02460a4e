"""Rate limits under load: a limit that is not reached costs nothing, bursts, clock steps.

Claims gate whole rate keys: a key that is closed now keeps its destinations out of the claim
(their deliveries are neither read nor rewritten) and ``next_due`` says when it opens, so the
cost of a claim does not grow with a rate-limited backlog. GCRA allows a burst; its guarantee is
checked by simulation with the outbox's own clock argument.
"""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli

from armor_notify.api import Notifier
from armor_notify.delivery import Delivery
from armor_notify.destinations import RateLimit
from armor_notify.outbox import ClaimRules, SqliteOutbox
from armor_notify.plugins import PluginManager


def alert(n: int) -> dict[str, Any]:
    return {"id": f"alert_{n}", "event_type": "schema_change", "title": f"t{n}",
            "asset": {"id": f"a{n}", "name": f"db.s.t{n}"}}


def notifier(dests: dict[str, dict[str, Any]], outbox: SqliteOutbox | None = None) -> Notifier:
    config = {"version": 1, "destinations": {n: {"type": "scripted", **d} for n, d in dests.items()},
              "rules": [{"name": "All", "event": "schema_change", "destinations": list(dests)}]}
    return Notifier.from_dict(config, plugins=PluginManager().load(), outbox=outbox,
                              rng=random.Random(3))


def planned(nt: Notifier, count: int, start: int = 0) -> list[Delivery]:
    return nt.dispatcher.plan(nt.parse_alerts([alert(start + i) for i in range(count)]))


def limited(limit: RateLimit, **over: Any) -> ClaimRules:
    return ClaimRules(lease=5.0, max_attempts=3, rate_key="key", rate_limit=limit, **over)


@pytest.fixture
def box(tmp_path: Path) -> SqliteOutbox:
    return SqliteOutbox.open(tmp_path)


def run_at(box: SqliteOutbox) -> dict[str, float]:
    return dict(box._db.execute("SELECT id, run_at FROM deliveries").fetchall())


def statements_of_claim(box: SqliteOutbox, rules: ClaimRules, now: float) -> list[str]:
    seen: list[str] = []
    box._db.set_trace_callback(seen.append)
    try:
        box.claim("w", now, 10, lambda name: rules)
    finally:
        box._db.set_trace_callback(None)
    return seen


# -- a limit that is not reached costs nothing ------------------------------------------------------


def test_a_closed_key_leaves_its_backlog_untouched_and_others_go_ahead(
        box: SqliteOutbox) -> None:
    box.enqueue(planned(notifier({"limited": {}}), 60), repeat_window=0, now=100.0)
    rules = {"limited": limited(RateLimit(1, 10.0, burst=1)),
             "free": ClaimRules(lease=50.0, max_attempts=3)}
    assert len(box.claim("w", 101.0, 10, rules.__getitem__)) == 1
    box.enqueue(planned(notifier({"free": {}}), 3, start=1000), repeat_window=0, now=101.0)
    # The limited key is closed for 10 s: the free deliveries go, although 59 limited ones
    # fell due before them, and those are neither read nor rewritten.
    claimed = box.claim("w", 101.0, 10, rules.__getitem__)
    assert sorted(d.destination for d in claimed) == ["free", "free", "free"]
    waiting = box.find(states=["queued"], limit=1000)
    assert len(waiting) == 59 and {d.next_attempt_at for d in waiting} == {100.0}
    # The dispatcher sleeps until the key opens, not until a lease ends or a poll.
    assert box.next_due() == pytest.approx(111.0)
    assert box.claim("w", 110.9, 10, rules.__getitem__) == []
    assert len(box.claim("w", 111.0, 10, rules.__getitem__)) == 1


def test_claim_cost_does_not_grow_with_a_limited_backlog(tmp_path: Path) -> None:
    rules = limited(RateLimit(1, 60.0, burst=1))
    counts = []
    for backlog in (20, 400):
        box = SqliteOutbox.open(tmp_path / str(backlog))
        box.enqueue(planned(notifier({"d": {}}), backlog), repeat_window=0, now=0.0)
        assert len(box.claim("w", 1.0, 10, lambda name: rules)) == 1
        # The key is closed now: later claims are a fixed handful of statements.
        counts.append(len(statements_of_claim(box, rules, 2.0)))
        assert box.find(states=["queued"], limit=1000)[0].next_attempt_at == 0.0
        box.close()
    assert counts[0] == counts[1]


def test_an_open_key_is_asked_only_for_what_it_lets_go(box: SqliteOutbox) -> None:
    box.enqueue(planned(notifier({"d": {}}), 300), repeat_window=0, now=0.0)
    rules = limited(RateLimit(60, 60.0, burst=3))
    statements = statements_of_claim(box, rules, 1.0)
    rows_read = [s for s in statements if s.startswith("SELECT id, alert_id")]
    assert len(rows_read) == 3  # the burst, not the backlog
    assert len(box.find(states=["in_flight"])) == 3


# -- burst ----------------------------------------------------------------------------------------


def test_the_default_burst_lets_ten_go_at_once_then_spaces_the_rest(box: SqliteOutbox) -> None:
    limit = RateLimit.parse("120/minute")
    assert limit is not None and limit.burst == 10
    box.enqueue(planned(notifier({"d": {}}), 14), repeat_window=0, now=50.0)
    rules = limited(limit)
    assert len(box.claim("w", 50.0, 32, lambda n: rules)) == 10
    assert box.claim("w", 50.0, 32, lambda n: rules) == []
    assert box.next_due() == pytest.approx(50.5)
    assert len(box.claim("w", 50.5, 32, lambda n: rules)) == 1
    assert len(box.claim("w", 51.6, 32, lambda n: rules)) == 2  # two intervals have passed


def test_the_burst_is_shared_by_processes_using_one_file(tmp_path: Path) -> None:
    first, second = SqliteOutbox.open(tmp_path), SqliteOutbox.open(tmp_path)
    first.enqueue(planned(notifier({"d": {}}), 12), repeat_window=0, now=0.0)
    rules = limited(RateLimit(120, 60.0, burst=4))
    assert len(first.claim("a", 1.0, 3, lambda n: rules)) == 3
    assert len(second.claim("b", 1.0, 10, lambda n: rules)) == 1
    assert first.claim("a", 1.0, 10, lambda n: rules) == []


@pytest.mark.parametrize(("count", "period", "burst"), [(120, 60.0, 10), (5, 1.0, 1),
                                                        (10, 3600.0, 10), (3, 1.0, 2)])
def test_no_span_shorter_than_the_period_holds_more_than_count_plus_burst_minus_one(
        tmp_path: Path, count: int, period: float, burst: int) -> None:
    box = SqliteOutbox.open(tmp_path)
    total = 3 * count + burst
    box.enqueue(planned(notifier({"d": {}}), total), repeat_window=0, now=0.0)
    rules = limited(RateLimit(count, period, burst=burst))
    rng = random.Random(count * 7 + burst)
    now, sent = 0.0, []
    while len(sent) < total:
        sent += [now] * len(box.claim("w", now, rng.randint(1, 40), lambda n: rules))
        now += rng.uniform(0, period / count)
    assert most_in_a_period(sent, period) <= count + burst - 1
    # Over a long run the rate is the limit's: the last went out no earlier than that allows.
    assert sent[-1] >= (total - burst) * period / count - 1e-6


def most_in_a_period(sent: list[float], period: float) -> int:
    return max(sum(1 for t in sent if start <= t < start + period) for start in sent)


def test_the_bound_is_reached_when_claims_come_exactly_when_the_key_opens(
        box: SqliteOutbox) -> None:
    count, period, burst = 6, 3.0, 4
    box.enqueue(planned(notifier({"d": {}}), 20), repeat_window=0, now=0.0)
    rules = limited(RateLimit(count, period, burst=burst))
    sent: list[float] = []
    for step in range(14):
        now = step * period / count + 1e-9
        sent += [now] * len(box.claim("w", now, 10, lambda n: rules))
    assert sent[:burst] == [1e-9] * burst and len(sent) == burst + 13
    assert most_in_a_period(sent, period) == count + burst - 1


def test_rate_burst_is_a_destination_option_and_validate_shows_it(tmp_path: Path) -> None:
    nt = notifier({"pd": {"rate_limit": "120/minute", "rate_burst": 3},
                   "default": {"rate_limit": "120/minute"}, "slow": {"rate_limit": "2/hour"}})
    dests = nt.config.destinations
    assert dests["pd"].rate_limit == RateLimit(120, 60.0, burst=3)
    assert dests["default"].rate_limit is not None and dests["default"].rate_limit.burst == 10
    assert dests["slow"].rate_limit is not None and dests["slow"].rate_limit.burst == 2
    assert dests["pd"].rate_limit.describe() == "120/minute, burst 3"


@pytest.mark.parametrize("value", [0, -1, "many", 1.5])
def test_a_bad_rate_burst_is_refused(value: Any) -> None:
    from armor_notify.errors import ConfigError

    with pytest.raises(ConfigError, match="rate_burst"):
        notifier({"d": {"rate_limit": "10/second", "rate_burst": value}})


# -- clock steps ----------------------------------------------------------------------------------


def test_a_clock_stepped_back_an_hour_does_not_hold_a_rate_limit_for_an_hour(
        box: SqliteOutbox) -> None:
    box.enqueue(planned(notifier({"d": {}}), 5), repeat_window=0, now=0.0)
    rules = limited(RateLimit(1, 1.0, burst=1))
    later = 10_000.0
    assert len(box.claim("w", later, 10, lambda n: rules)) == 1
    earlier = later - 3600  # the system clock stepped back an hour
    assert box.claim("w", earlier, 10, lambda n: rules) == []
    assert box.next_due() == pytest.approx(earlier + 1)
    assert len(box.claim("w", earlier + 1, 10, lambda n: rules)) == 1
    # ...and the spacing holds again from there.
    assert box.claim("w", earlier + 1.5, 10, lambda n: rules) == []
    assert len(box.claim("w", earlier + 2, 10, lambda n: rules)) == 1


def test_a_clock_stepped_back_does_not_stretch_a_server_hold(box: SqliteOutbox) -> None:
    box.enqueue(planned(notifier({"d": {}}), 2), repeat_window=0, now=0.0)
    rules = limited(RateLimit(100, 1.0), longest_hold=120.0)
    box.hold_key("key", 10_000.0 + 30)  # Retry-After: 30 at 10,000
    earlier = 10_000.0 - 3600
    assert box.claim("w", earlier, 10, lambda n: rules) == []
    assert box.next_due() == pytest.approx(earlier + 120)
    assert len(box.claim("w", earlier + 120, 10, lambda n: rules)) == 2


def test_an_outbox_file_from_before_holds_had_their_own_column_still_works(
        tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    SqliteOutbox.open(tmp_path).close()
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE rate_state; CREATE TABLE rate_state "
                     "(key TEXT PRIMARY KEY, tat REAL NOT NULL);"
                     "INSERT INTO rate_state VALUES ('key', 1e15);")  # an old 1e15 hold
    db.close()
    box = SqliteOutbox.open(tmp_path)
    box.enqueue(planned(notifier({"d": {}}), 1), repeat_window=0, now=100.0)
    assert len(box.claim("w", 100.0, 10, lambda n: limited(RateLimit(1, 1.0, burst=1)))) == 0
    assert box.next_due() == pytest.approx(101.0)
    assert len(box.claim("w", 101.0, 10, lambda n: limited(RateLimit(1, 1.0, burst=1)))) == 1


@pytest.mark.slow
def test_validate_shows_each_rate_limit_with_its_burst(tmp_path: Path) -> None:
    config = tmp_path / "armor-notify.yaml"
    config.write_text(json.dumps({"version": 1, "destinations": {
        "pd": {"type": "scripted", "rate_limit": "120/minute"},
        "strict": {"type": "scripted", "rate_limit": "5/second", "rate_burst": 1},
        "free": {"type": "scripted", "rate_limit": "none"}},
        "rules": [{"name": "All", "event": "schema_change",
                   "destinations": ["pd", "strict", "free"]}]}))
    shown = run_cli("validate", "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    assert "120/minute, burst 10" in shown.stdout and "5/second, burst 1" in shown.stdout
    as_json = json.loads(run_cli("validate", "--config", str(config), "--json").stdout)
    assert {d["name"]: (d["rate_limit"], d["rate_burst"]) for d in as_json["destinations"]} == {
        "pd": ("120/minute", 10), "strict": ("5/second", 1), "free": ("none", None)}
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace('"rate_burst": 1', '"rate_burst": 0'))
    refused = run_cli("validate", "--config", str(bad))
    assert refused.returncode == 2 and "rate_burst" in refused.stderr + refused.stdout
