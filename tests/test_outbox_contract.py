"""The outbox's behaviour, as a conformance suite every backend must pass.

Written against the ``Outbox`` protocol alone, and run on each backend in
``outbox_backends.BACKENDS`` (SQLite on a file and in memory today; PostgreSQL is one more entry
there). Times are passed in (``now``), so nothing here sleeps. The two-connection tests run on
the backends whose store several outbox objects (processes) share.

The calls into the protocol go through the few helpers below (``enqueue``, ``claim``,
``attempted``), so a change of a signature is a change in one place. The last section tests what
the command line uses: the noise-control history and closing as a context manager.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from outbox_backends import BACKENDS, SHARED_BACKENDS, Backend, params

from armor_notify.alert import Alert
from armor_notify.check_intake import CheckRules
from armor_notify.config import Config, config_from_dict
from armor_notify.delivery import Attempt, Delivery, State
from armor_notify.destinations import RateLimit
from armor_notify.gate import Gate
from armor_notify.history import History
from armor_notify.mutes import MuteScope
from armor_notify.noise import Decision, Digest, batch_key
from armor_notify.outbox import ClaimRules, IntakePolicy, Outbox
from armor_notify.outbox_core import CheckIntake
from armor_notify.registry import Registry

RULES = ClaimRules(lease=5.0, max_attempts=3)
LONG = ClaimRules(lease=1000.0, max_attempts=3)
UNREADABLE = "the stored delivery cannot be read"


# -- backends -------------------------------------------------------------------------------------


@pytest.fixture(params=params(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    chosen = BACKENDS[request.param](tmp_path)
    yield chosen
    chosen.close()


@pytest.fixture(params=params(SHARED_BACKENDS))
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A backend whose store two outbox objects can open (two processes, two connections)."""
    chosen = BACKENDS[request.param](tmp_path)
    assert chosen.shared
    yield chosen
    chosen.close()


@pytest.fixture
def box(backend: Backend) -> Outbox:
    return backend.open()


# -- the protocol, called in one place each -------------------------------------------------------

RulesLike = ClaimRules | Mapping[str, "ClaimRules | None"] | Callable[[str], "ClaimRules | None"]


def rules_for(rules: RulesLike) -> Callable[[str], ClaimRules | None]:
    if isinstance(rules, ClaimRules):
        return lambda name: rules
    if isinstance(rules, Mapping):
        return rules.get
    return rules


def enqueue(box: Outbox, deliveries: Sequence[Delivery], *, now: float,
            repeat_window: float = 0.0, policy: IntakePolicy | None = None,
            lease_to: tuple[str, RulesLike] | None = None,
            checks: CheckIntake | None = None) -> list[tuple[Delivery, bool]]:
    """``policy``: the intake policy (the noise gate in armor-notify; ``Policy`` here);
    ``checks``: the check ledger's rules (``CheckRules``)."""
    lease = (lease_to[0], rules_for(lease_to[1])) if lease_to is not None else None
    return box.enqueue(list(deliveries), repeat_window=repeat_window, now=now, policy=policy,
                       lease_to=lease, checks=checks)


def claim(box: Outbox, owner: str, now: float, *, limit: int = 10, rules: RulesLike = RULES,
          ids: Collection[str] | None = None, busy: Collection[str] = ()) -> list[Delivery]:
    return box.claim(owner, now, limit, rules_for(rules), ids, busy=busy)


def attempted(d: Delivery, at: float, state: State = State.delivered, reason: str = "",
              retry_at: float | None = None) -> Delivery:
    """Record one attempt on a claimed delivery, as the dispatcher does before ``complete``."""
    status = "retry" if retry_at is not None else state.value
    d.attempts.append(Attempt(d.attempt_count + 1, at, 0.25, status, reason))
    if retry_at is not None:
        d.state, d.reason, d.next_attempt_at = State.queued, reason, retry_at
    else:
        d.finish(state, reason)
    return d


def alert(n: int = 0, *, status: str = "triggered", asset: str | None = None) -> Alert:
    return Alert.model_validate(
        {"id": f"alert_{n}", "event_type": "schema_change", "status": status,
         "title": f"Column removed {n}", "asset": {"id": asset or f"a{n}", "name": f"db.s.t{n}"}},
        context={"event_types": None})


def delivery(n: int = 0, *, destination: str = "d", status: str = "triggered",
             dedup: str | None = None, asset: str | None = None, rule: str = "All",
             test: bool = False, due: float | None = None, id: str | None = None) -> Delivery:
    d = Delivery(alert=alert(n, status=status, asset=asset), destination=destination,
                 destination_type="scripted", rule=rule, dedup_key=dedup or f"key-{n}",
                 test=test)
    if due is not None:
        d.next_attempt_at = due
    if id is not None:
        d.id = id
    return d


def stored(box: Outbox, d: Delivery) -> Delivery:
    found = box.get(d.id)
    assert found is not None, f"delivery {d.id} is not in the outbox"
    return found


def ids(deliveries: Sequence[Delivery]) -> list[str]:
    return [d.id for d in deliveries]


class Policy:
    """An intake policy (``IntakePolicy``) from a function: (delivery, now, history) → decision."""

    def __init__(self, decide: Callable[[Delivery, float, History], Decision]) -> None:
        self._decide = decide

    def decide(self, delivery: Delivery, now: float, history: History) -> Decision:
        return self._decide(delivery, now, history)


# -- intake ---------------------------------------------------------------------------------------


def test_enqueue_writes_each_delivery_queued_and_due_at_once(box: Outbox) -> None:
    first, second = delivery(1), delivery(2, destination="e")
    first.also_matched = ("Other rule",)
    later = delivery(3, due=500.0)
    out = enqueue(box, [first, second, later], now=100.0)
    assert [(d.id, new) for d, new in out] == [(first.id, True), (second.id, True),
                                               (later.id, True)]
    got = stored(box, first)
    assert (got.state, got.next_attempt_at, got.created_at, got.attempt_count) == (
        State.queued, 100.0, 100.0, 0)
    assert (got.alert, got.destination, got.destination_type, got.rule, got.dedup_key,
            got.also_matched) == (first.alert, "d", "scripted", "All", "key-1", ("Other rule",))
    assert stored(box, later).next_attempt_at == 500.0  # a later time is kept
    assert sorted(ids(claim(box, "w", 100.0))) == sorted([first.id, second.id])


def test_the_same_alert_within_the_repeat_window_is_written_once(box: Outbox) -> None:
    ((first, new),) = enqueue(box, [delivery(1)], now=100.0, repeat_window=600.0)
    assert new
    ((again, new),) = enqueue(box, [delivery(1)], now=650.0, repeat_window=600.0)
    assert not new and again.id == first.id and again.created_at == 100.0
    # Another status, another destination or a test delivery is new; so is the same after the
    # window.
    for other in (delivery(1, status="resolved"), delivery(1, destination="e"),
                  delivery(1, test=True)):
        ((written, new),) = enqueue(box, [other], now=660.0, repeat_window=600.0)
        assert new and written.id == other.id
    ((late, new),) = enqueue(box, [delivery(1)], now=701.0, repeat_window=600.0)
    assert new and late.id != first.id


def test_a_repeat_returns_the_stored_delivery_as_it_is_now(box: Outbox) -> None:
    ((first, _),) = enqueue(box, [delivery(1)], now=100.0, repeat_window=600.0)
    (leased,) = claim(box, "w", 100.0)
    assert box.complete([attempted(leased, 100.5, reason="ok")], "w", 101.0) == [True]
    ((again, new),) = enqueue(box, [delivery(1)], now=102.0, repeat_window=600.0)
    assert not new and again.id == first.id
    assert again.state is State.delivered and again.attempt_count == 1


def test_a_delivery_final_at_intake_is_stored_final_and_never_claimed(box: Outbox) -> None:
    skipped = delivery(1, status="resolved")
    skipped.finish(State.suppressed, "send_resolved is off for this destination")
    enqueue(box, [skipped], now=100.0)
    got = stored(box, skipped)
    assert (got.state, got.reason) == (State.suppressed, "send_resolved is off for this destination")
    assert claim(box, "w", 100.0) == []
    assert box.next_due() is None


class Refused(Exception):
    pass


def test_enqueue_writes_all_of_a_batch_or_nothing(box: Outbox) -> None:
    calls: list[str] = []

    def decide(d: Delivery, now: float, history: History) -> Decision:
        calls.append(d.id)
        if len(calls) == 2:
            raise Refused("the policy failed half-way")
        return Decision("send")

    with pytest.raises(Refused):
        enqueue(box, [delivery(1), delivery(2), delivery(3)], now=100.0, policy=Policy(decide))
    assert box.find() == []
    assert box.next_due() is None


def test_enqueue_can_lease_what_is_due_to_the_sender_itself(box: Outbox) -> None:
    limited = ClaimRules(lease=5.0, max_attempts=3, rate_key="k", rate_limit=RateLimit(1, 1.0))
    first, second, later = delivery(1), delivery(2), delivery(3, due=50.0)
    resolve = delivery(1, status="resolved")
    out = enqueue(box, [first, later], now=10.0, lease_to=("me", limited))
    assert [d.state for d, _ in out] == [State.in_flight, State.queued]  # not due: not leased
    assert stored(box, first).state is State.in_flight
    assert claim(box, "other", 10.0, rules=limited) == []  # the lease is held
    # The rate limit holds at intake too: the second waits for its turn, unleased, no attempt.
    ((waiting, _),) = enqueue(box, [second], now=10.1, lease_to=("me", limited))
    assert waiting.state is State.queued and waiting.next_attempt_at == pytest.approx(11.0)
    assert stored(box, second).next_attempt_at == pytest.approx(11.0)
    # A resolve never overtakes its unfinished trigger, even from the same sender.
    ((held, _),) = enqueue(box, [resolve], now=12.0, lease_to=("me", limited))
    assert held.state is State.queued
    # The sender owns what it leased: its outcome is kept.
    assert box.complete([attempted(first, 10.0)], "me", 10.5) == [True]
    assert stored(box, first).state is State.delivered


def test_one_intake_sees_what_it_wrote_itself(box: Outbox) -> None:
    # Repeats and the per-key order within one intake, as across intakes: the same alert twice
    # is written once; of a trigger and its resolve only the trigger is leased; a key that
    # already has an unfinished delivery leases nothing; other keys are leased.
    enqueue(box, [delivery(9, dedup="old-key", due=500.0)], now=10.0)
    once, twice = delivery(1), delivery(1)
    trigger, resolve = delivery(2, dedup="shared"), delivery(3, status="resolved", dedup="shared")
    behind, free = delivery(4, dedup="old-key"), delivery(5)
    out = enqueue(box, [once, twice, trigger, resolve, behind, free], now=20.0,
                  repeat_window=600.0, lease_to=("me", LONG))
    assert [(d.id, new) for d, new in out] == [
        (once.id, True), (once.id, False), (trigger.id, True), (resolve.id, True),
        (behind.id, True), (free.id, True)]
    assert [d.state for d, _ in out] == [State.in_flight, State.in_flight, State.in_flight,
                                         State.queued, State.queued, State.in_flight]
    assert out[1][0] is not once  # the stored one, as read back
    assert [stored(box, d).state for d in (trigger, resolve, behind, free)] == [
        State.in_flight, State.queued, State.queued, State.in_flight]


# -- the intake policy (noise controls) -----------------------------------------------------------


def test_a_policy_can_suppress_hold_or_send_each_delivery(box: Outbox) -> None:
    plan = {"alert_1": Decision("suppress", "blackout period 'release'"),
            "alert_2": Decision("hold", "held: outside operating hours", until=500.0),
            "alert_3": Decision("send")}
    policy = Policy(lambda d, now, history: plan[d.alert.id])
    quiet, held, sent = delivery(1), delivery(2), delivery(3)
    enqueue(box, [quiet, held, sent], now=100.0, policy=policy)
    assert (stored(box, quiet).state, stored(box, quiet).reason) == (
        State.suppressed, "blackout period 'release'")
    got = stored(box, held)
    assert (got.state, got.next_attempt_at, got.reason) == (
        State.queued, 500.0, "held: outside operating hours")
    assert ids(claim(box, "w", 100.0, rules=LONG)) == [sent.id]
    assert box.next_due(ids=[held.id]) == 500.0
    assert ids(claim(box, "w", 500.0, rules=LONG)) == [held.id]


def test_the_policy_sees_what_was_notified_earlier_in_the_same_batch(box: Outbox) -> None:
    def cooldown(d: Delivery, now: float, history: History) -> Decision:
        last = history.last_notified(d.rule, d.alert.asset.id, d.destination, now - 3600)
        return Decision("suppress", f"cooldown since {last}") if last is not None else Decision(
            "send")

    policy = Policy(cooldown)
    first, same_asset = delivery(1, asset="orders"), delivery(2, asset="orders")
    other_asset, other_place = delivery(3, asset="users"), delivery(4, asset="orders",
                                                                   destination="e")
    enqueue(box, [first, same_asset, other_asset, other_place], now=100.0, policy=policy)
    states = {d.id: d.state for d in box.find()}
    assert states == {first.id: State.queued, same_asset.id: State.suppressed,
                      other_asset.id: State.queued, other_place.id: State.queued}
    assert stored(box, same_asset).reason == "cooldown since 100.0"
    later = delivery(5, asset="orders")
    enqueue(box, [later], now=3000.0, policy=policy)  # later, in another call: still seen
    assert stored(box, later).state is State.suppressed
    after = delivery(6, asset="orders")
    enqueue(box, [after], now=3701.0, policy=policy)  # the cooldown is over
    assert stored(box, after).state is State.queued


def test_the_policy_counts_what_was_notified_and_not_what_it_suppressed(box: Outbox) -> None:
    def daily_limit(d: Delivery, now: float, history: History) -> Decision:
        if history.count_notified(0.0, rule=d.rule) >= 2:
            return Decision("suppress", "daily limit of 2 reached")
        return Decision("send")

    policy = Policy(daily_limit)
    checks = [delivery(90, test=True), delivery(91, test=True)]  # test events are not counted
    first, second, third, fourth = (delivery(n) for n in range(1, 5))
    other_rule = delivery(5, rule="Other")
    enqueue(box, [*checks, first, second, third], now=100.0, policy=policy)
    enqueue(box, [fourth, other_rule], now=200.0, policy=policy)
    states = {d.id: d.state for d in box.find()}
    assert [states[d.id] for d in (first, second, third, fourth, other_rule)] == [
        State.queued, State.queued, State.suppressed, State.suppressed, State.queued]


def digest_policy(max_items: int, window: float = 900.0) -> Policy:
    """Collect every delivery into its destination's digest, as the noise gate does."""
    digest = Digest.model_validate({"window": window, "max_items": max_items})

    def collect(d: Delivery, now: float, history: History) -> Decision:
        closes = history.digest_closes(batch_key(d.destination)) or now + digest.window
        return Decision("digest", f"collected until {closes}", closes, digest)

    return Policy(collect)


def test_a_digest_collects_alerts_and_a_claim_sends_it_when_its_window_closes(
        box: Outbox) -> None:
    policy = digest_policy(max_items=10)
    first, second = delivery(1), delivery(2)
    enqueue(box, [first], now=100.0, policy=policy)
    enqueue(box, [second], now=200.0, policy=policy)
    members = [stored(box, first), stored(box, second)]
    assert [(d.state, d.next_attempt_at) for d in members] == [(State.batched, 1000.0)] * 2
    assert box.next_due() is None  # an open digest window is not waited for
    assert claim(box, "w", 999.0) == []
    (digest,) = claim(box, "w", 1000.0)
    assert [a.id for a in digest.digest] == ["alert_1", "alert_2"]
    assert (digest.destination, digest.state) == ("d", State.in_flight)
    assert [stored(box, d).state for d in (first, second)] == [State.digested] * 2
    assert box.complete([attempted(digest, 1000.0)], "w", 1001.0) == [True]
    assert stored(box, digest).state is State.delivered


def test_a_digest_that_fills_goes_before_its_window_closes(box: Outbox) -> None:
    policy = digest_policy(max_items=2)
    batch = [delivery(n) for n in range(1, 4)]
    enqueue(box, batch, now=100.0, policy=policy)
    (full,) = claim(box, "w", 101.0, rules=LONG)
    assert [a.id for a in full.digest] == ["alert_1", "alert_2"]  # oldest first
    assert stored(box, batch[2]).state is State.batched  # waits for its window
    assert claim(box, "w", 102.0, rules=LONG) == []
    (rest,) = claim(box, "w", 1000.0, rules=LONG)
    assert [a.id for a in rest.digest] == ["alert_3"]


# -- claiming ---------------------------------------------------------------------------------------


def test_a_claim_leases_due_deliveries_oldest_first_up_to_its_limit(box: Outbox) -> None:
    now_due, earlier, later = delivery(1), delivery(2, due=95.0), delivery(3, due=300.0)
    enqueue(box, [now_due, earlier, later], now=100.0)
    (first,) = claim(box, "w", 100.0, limit=1)
    assert first.id == earlier.id
    assert (first.state, first.next_attempt_at, first.first_attempt_at, first.attempt_count) == (
        State.in_flight, 105.0, 100.0, 0)
    assert stored(box, earlier).state is State.in_flight
    assert ids(claim(box, "w", 100.0)) == [now_due.id]
    assert claim(box, "other", 104.9) == []  # leased, and the last is not due
    assert box.next_due() == 105.0  # the first lease runs out
    assert ids(claim(box, "w", 300.0, ids=[later.id])) == [later.id]


def test_a_claim_takes_only_the_ids_it_is_given(box: Outbox) -> None:
    batch = [delivery(n) for n in range(4)]
    enqueue(box, batch, now=100.0)
    assert claim(box, "w", 100.0, ids=[]) == []
    assert sorted(ids(claim(box, "w", 100.0, ids=[batch[1].id, batch[3].id]))) == sorted(
        [batch[1].id, batch[3].id])
    assert sorted(ids(claim(box, "w", 100.0))) == sorted([batch[0].id, batch[2].id])


def test_a_claim_skips_busy_destinations(box: Outbox) -> None:
    enqueue(box, [delivery(1, destination="hung"), delivery(2, destination="quick"),
                  delivery(3, destination="hung")], now=100.0)
    assert [d.destination for d in claim(box, "w", 100.0, busy={"hung"})] == ["quick"]
    assert {d.state for d in box.find(states=["queued"])} == {State.queued}
    assert [d.destination for d in claim(box, "w", 100.0)] == ["hung", "hung"]


def test_a_destination_gone_from_the_config_fails_its_deliveries(box: Outbox) -> None:
    gone, kept = delivery(1, destination="gone"), delivery(2, destination="kept")
    enqueue(box, [gone, kept], now=100.0)
    assert ids(claim(box, "w", 100.0, rules={"kept": RULES})) == [kept.id]
    got = stored(box, gone)
    assert (got.state, got.reason) == (State.failed,
                                       "destination 'gone' is no longer in the config")


def test_an_expired_lease_is_claimed_again_with_the_lost_attempt_recorded(box: Outbox) -> None:
    enqueue(box, [delivery(1)], now=100.0)
    (mine,) = claim(box, "worker-a", 100.0)
    assert claim(box, "worker-b", 104.0) == []  # the lease is still held
    (theirs,) = claim(box, "worker-b", 105.0)
    assert [(a.number, a.status) for a in theirs.attempts] == [(1, "lost")]
    assert "lease expired" in theirs.attempts[0].reason
    assert theirs.first_attempt_at == 100.0 and theirs.next_attempt_at == 110.0
    # The first owner is fenced off; the new owner's outcome is kept, after the lost attempt.
    assert box.complete([attempted(mine, 106.0)], "worker-a", 106.0) == [False]
    assert box.complete([attempted(theirs, 106.0, reason="202")], "worker-b", 107.0) == [True]
    got = stored(box, theirs)
    assert (got.state, got.reason) == (State.delivered, "202")
    assert [(a.number, a.status) for a in got.attempts] == [(1, "lost"), (2, "delivered")]


def test_a_delivery_that_keeps_losing_its_worker_ends_dead(box: Outbox) -> None:
    enqueue(box, [delivery(1)], now=0.0)
    rules = ClaimRules(lease=1.0, max_attempts=2)
    assert len(claim(box, "w", 0.0, rules=rules)) == 1
    assert len(claim(box, "w", 1.0, rules=rules)) == 1
    assert claim(box, "w", 2.0, rules=rules) == []
    (d,) = box.find()
    assert (d.state, d.attempt_count) == (State.dead, 2)
    assert d.reason.startswith("gave up after 2 attempts")
    assert box.next_due() is None


def test_a_later_delivery_never_overtakes_an_unfinished_one_with_its_dedup_key(
        box: Outbox) -> None:
    trigger, resolve = delivery(1, dedup="k"), delivery(1, status="resolved", dedup="k")
    other_key, elsewhere = delivery(2, dedup="j"), delivery(3, destination="e", dedup="k")
    enqueue(box, [trigger, resolve, other_key, elsewhere], now=100.0)
    assert box.older_pending([resolve.id]) == [trigger.id]
    first = {d.id: d for d in claim(box, "w", 100.0, rules=LONG)}
    assert sorted(first) == sorted([trigger.id, other_key.id, elsewhere.id])
    # The trigger is retried later: the resolve waits for it, although it is due.
    assert box.complete([attempted(first[trigger.id], 100.0, reason="429", retry_at=200.0)],
                        "w", 101.0) == [True]
    assert claim(box, "w", 150.0, rules=LONG) == []
    assert box.older_pending([resolve.id]) == [trigger.id]
    (again,) = claim(box, "w", 200.0, rules=LONG)
    assert again.id == trigger.id and again.attempt_count == 1
    assert claim(box, "w", 200.0, rules=LONG) == []  # in flight: still waited for
    assert box.complete([attempted(again, 200.0)], "w", 201.0) == [True]
    assert box.older_pending([resolve.id]) == []
    assert ids(claim(box, "w", 201.0, rules=LONG)) == [resolve.id]


def test_older_pending_lists_only_unfinished_older_deliveries(box: Outbox) -> None:
    old, older, newer = delivery(1, dedup="k"), delivery(2, dedup="k"), delivery(3, dedup="k")
    enqueue(box, [old], now=100.0)
    enqueue(box, [older, newer], now=101.0)
    (first,) = claim(box, "w", 101.0)
    assert box.complete([attempted(first, 101.0)], "w", 102.0) == [True]  # old is finished
    assert box.older_pending([]) == []
    assert box.older_pending([older.id]) == []
    assert box.older_pending([newer.id]) == [older.id]


# -- rate limits ------------------------------------------------------------------------------------


def limited(limit: RateLimit, key: str = "k", **over: Any) -> ClaimRules:
    return ClaimRules(lease=1000.0, max_attempts=3, rate_key=key, rate_limit=limit, **over)


def test_a_rate_limit_lets_a_burst_go_then_spaces_the_rest_and_drops_none(box: Outbox) -> None:
    batch = [delivery(n) for n in range(6)]
    enqueue(box, batch, now=0.0)
    rules = limited(RateLimit(60, 60.0, burst=3))  # one a second after a burst of three
    assert len(claim(box, "w", 0.0, rules=rules)) == 3
    assert claim(box, "w", 0.5, rules=rules) == []
    assert box.next_due() == pytest.approx(1.0)
    assert len(claim(box, "w", 1.0, rules=rules)) == 1
    assert len(claim(box, "w", 1.5, rules=rules)) == 0
    assert len(claim(box, "w", 3.0, rules=rules)) == 2  # two intervals have passed
    leased = box.find(states=["in_flight"])
    assert len(leased) == 6 and all(d.attempt_count == 0 for d in leased)  # waits cost nothing


def test_a_rate_key_is_shared_by_its_destinations_and_no_other(box: Outbox) -> None:
    enqueue(box, [delivery(n, destination=dest) for n, dest in enumerate("aabbc")], now=0.0)
    one = RateLimit(1, 10.0, burst=1)
    rules = {"a": limited(one), "b": limited(one), "c": limited(one, key="other")}
    assert sorted(d.destination for d in claim(box, "w", 0.0, rules=rules)) in (
        ["a", "c"], ["b", "c"])
    assert claim(box, "w", 9.0, rules=rules) == []
    assert len(claim(box, "w", 10.0, rules=rules)) == 1
    assert len(claim(box, "w", 20.0, rules=rules)) == 1
    assert len(claim(box, "w", 30.0, rules=rules)) == 1
    assert box.find(states=["queued"]) == []


def test_no_span_shorter_than_the_period_holds_more_than_count_plus_burst_minus_one(
        box: Outbox) -> None:
    count, period, burst = 3, 1.0, 2
    total = 3 * count + burst
    enqueue(box, [delivery(n) for n in range(total)], now=0.0)
    rules = limited(RateLimit(count, period, burst=burst))
    sent: list[float] = []
    now, step = 0.0, 0
    while len(sent) < total:
        sent += [now] * len(claim(box, "w", now, limit=1 + step % 4, rules=rules))
        step += 1
        now += (step % 5) * period / count / 4
    most = max(sum(1 for t in sent if start <= t < start + period) for start in sent)
    assert most <= count + burst - 1
    assert sent[-1] >= (total - burst) * period / count - 1e-6


def test_hold_key_stops_a_rate_key_until_then_and_never_shortens_a_hold(box: Outbox) -> None:
    enqueue(box, [delivery(1, destination="held"), delivery(2, destination="free")], now=0.0)
    rules = {"held": limited(RateLimit(100, 1.0)), "free": limited(RateLimit(100, 1.0), "f")}
    box.hold_key("k", 30.0)  # a Retry-After of 30 s
    box.hold_key("k", 10.0)  # a shorter one later does not shorten it
    assert [d.destination for d in claim(box, "w", 1.0, rules=rules)] == ["free"]
    assert claim(box, "w", 20.0, rules=rules) == []
    assert box.next_due() == pytest.approx(30.0)
    assert [d.destination for d in claim(box, "w", 30.0, rules=rules)] == ["held"]


def test_a_hold_is_cut_to_the_destinations_longest_hold(box: Outbox) -> None:
    enqueue(box, [delivery(1)], now=0.0)
    rules = limited(RateLimit(100, 1.0), longest_hold=120.0)
    box.hold_key("k", 1e12)  # a huge Retry-After, or a clock stepped back
    assert claim(box, "w", 0.0, rules=rules) == []
    assert box.next_due() == pytest.approx(120.0)
    assert len(claim(box, "w", 120.0, rules=rules)) == 1


# -- outcomes -------------------------------------------------------------------------------------


def test_complete_stores_each_outcome_and_checks_each_lease(box: Outbox) -> None:
    batch = [delivery(n) for n in range(4)]
    enqueue(box, batch, now=100.0)
    ok, refused, later, wrong = claim(box, "w", 100.0, rules=LONG)
    attempted(ok, 100.0, reason="202 accepted").details["status_code"] = 202
    attempted(refused, 100.0, State.failed, "400 invalid routing key")
    attempted(later, 100.0, reason="503", retry_at=160.0)
    attempted(attempted(wrong, 100.0), 100.5)  # claims an attempt it does not hold
    assert box.complete([ok, refused, later, wrong], "w", 101.0) == [True, True, True, False]
    got = {d.id: d for d in box.find()}
    assert (got[ok.id].state, got[ok.id].reason, got[ok.id].details) == (
        State.delivered, "202 accepted", {"status_code": 202})
    assert [(a.number, a.status, a.reason) for a in got[ok.id].attempts] == [
        (1, "delivered", "202 accepted")]
    assert (got[refused.id].state, got[refused.id].reason) == (State.failed,
                                                               "400 invalid routing key")
    assert (got[later.id].state, got[later.id].next_attempt_at) == (State.queued, 160.0)
    assert got[wrong.id].state is State.in_flight  # untouched: still leased
    assert claim(box, "w", 159.0, rules=LONG) == []
    (retried,) = claim(box, "w", 160.0, rules=LONG)
    assert retried.id == later.id and retried.attempt_count == 1
    assert retried.first_attempt_at == 100.0


def test_a_large_batch_of_outcomes_checks_each_lease(box: Outbox) -> None:
    # More outcomes than one statement takes, each with its own values; a lost lease far into
    # the batch is told apart from the others; the same delivery twice counts once.
    batch = [delivery(n) for n in range(250)]
    enqueue(box, batch, now=100.0)
    leased = claim(box, "w", 100.0, limit=250, rules=LONG)
    assert len(leased) == 250
    for n, d in enumerate(leased):
        if n % 3:
            attempted(d, 100.0, reason=f"202 {n}").details["n"] = n
        else:
            attempted(d, 100.0, reason=f"503 {n}", retry_at=200.0 + n)
    lost = leased[170]
    attempted(lost, 100.5)  # claims an attempt it does not hold
    assert box.complete(leased, "w", 101.0) == [n != 170 for n in range(250)]
    got = {d.id: d for d in box.find(limit=300)}
    for n, d in enumerate(leased):
        if n == 170:
            assert got[d.id].state is State.in_flight
        elif n % 3:
            assert (got[d.id].state, got[d.id].reason, got[d.id].details) == (
                State.delivered, f"202 {n}", {"n": n})
        else:
            assert (got[d.id].state, got[d.id].reason, got[d.id].next_attempt_at) == (
                State.queued, f"503 {n}", 200.0 + n)
            assert [a.reason for a in got[d.id].attempts] == [f"503 {n}"]
    (again,) = claim(box, "w", 200.0, rules=LONG)
    assert box.complete([attempted(again, 200.0), again], "w", 201.0) == [True, False]
    assert stored(box, again).state is State.delivered


def test_where_a_delivery_was_posted_is_kept_and_found_by_its_incident(box: Outbox) -> None:
    history = box.history()
    assert history.posted("d", "key-1") is None
    trigger, refused = delivery(1), delivery(1, destination="other")
    enqueue(box, [trigger, refused], now=100.0)
    sent, failed = claim(box, "w", 100.0, rules=LONG)
    attempted(sent, 100.0).details["message"] = {"channel": "C1", "ts": "1.000100"}
    attempted(failed, 100.0, State.failed, "not_in_channel").details["message"] = {"ts": "x"}
    box.complete([sent, failed], "w", 101.0)
    assert history.posted("d", "key-1") == ("triggered", {"channel": "C1", "ts": "1.000100"})
    assert history.posted("other", "key-1") is None  # not delivered: nothing was posted
    assert history.posted("d", "key-2") is None
    resolve = delivery(2, status="resolved", dedup="key-1")
    enqueue(box, [resolve], now=102.0)
    (got,) = claim(box, "w", 102.0, rules=LONG)
    attempted(got, 102.0).details["message"] = {"channel": "C1", "ts": "1.000100"}
    box.complete([got], "w", 103.0)
    assert history.posted("d", "key-1") == ("resolved", {"channel": "C1", "ts": "1.000100"})
    assert stored(box, got).details["message"] == {"channel": "C1", "ts": "1.000100"}


def test_complete_by_another_owner_is_refused(box: Outbox) -> None:
    enqueue(box, [delivery(1)], now=100.0)
    (d,) = claim(box, "w", 100.0)
    assert box.complete([attempted(d, 100.0)], "someone-else", 101.0) == [False]
    assert stored(box, d).state is State.in_flight


def test_a_late_answer_is_kept_while_no_one_took_the_delivery_over(box: Outbox) -> None:
    enqueue(box, [delivery(1)], now=100.0)
    (d,) = claim(box, "w", 100.0)
    # The lease ran out at 105 but no other worker claimed it: the answer still counts.
    assert box.complete([attempted(d, 100.0, reason="200 ok")], "w", 120.0) == [True]
    got = stored(box, d)
    assert (got.state, got.reason, got.attempt_count) == (State.delivered, "200 ok", 1)
    assert claim(box, "other", 120.0) == []


def test_release_gives_a_lease_back_without_spending_an_attempt(box: Outbox) -> None:
    enqueue(box, [delivery(1), delivery(2)], now=100.0)
    first, second = claim(box, "w", 100.0, rules=LONG)
    assert box.release([first], "someone-else", 101.0) == [False]
    assert box.release([first], "w", 101.0) == [True]
    got = stored(box, first)
    assert (got.state, got.next_attempt_at, got.attempt_count, got.first_attempt_at) == (
        State.queued, 101.0, 0, None)
    (again,) = claim(box, "other", 101.0, rules=LONG)
    assert again.id == first.id
    assert box.release([first], "w", 102.0) == [False]  # no longer this owner's
    # A delivery with attempts behind it keeps them, and its first attempt's time.
    assert box.complete([attempted(second, 100.0, retry_at=110.0)], "w", 100.5) == [True]
    (second,) = claim(box, "w", 110.0, rules=LONG)
    assert box.release([second], "w", 111.0) == [True]
    got = stored(box, second)
    assert (got.state, got.attempt_count, got.first_attempt_at) == (State.queued, 1, 100.0)


# -- reading --------------------------------------------------------------------------------------


def test_next_due_is_the_earliest_unfinished_time(box: Outbox) -> None:
    assert box.next_due() is None
    soon, later = delivery(1, due=150.0), delivery(2, due=400.0)
    enqueue(box, [soon, later], now=100.0)
    assert box.next_due() == 150.0
    assert box.next_due(ids=[later.id]) == 400.0
    assert box.next_due(ids=[]) is None
    (leased,) = claim(box, "w", 150.0)
    assert box.next_due() == 155.0  # when its lease runs out
    assert box.complete([attempted(leased, 150.0)], "w", 151.0) == [True]
    assert box.next_due() == 400.0


def test_get_takes_an_id_or_a_unique_prefix_of_six_or_more(box: Outbox) -> None:
    one = delivery(1, id="abcdef01" + "0" * 24)
    two = delivery(2, id="abcdef02" + "0" * 24)
    enqueue(box, [one, two], now=100.0)
    assert stored(box, one).alert.id == "alert_1"
    got = box.get("abcdef01")
    assert got is not None and got.id == one.id
    assert box.get("abcdef") is None  # ambiguous
    assert box.get("abcde") is None  # too short, although only these two exist
    assert box.get("0123456789") is None


def test_get_reads_a_prefix_as_text_not_as_a_pattern(box: Outbox) -> None:
    enqueue(box, [delivery(1, id="abcdef01" + "0" * 24)], now=100.0)
    assert box.get("______") is None
    assert box.get("abc%%%") is None


def test_find_lists_newest_first_by_state_and_id(box: Outbox) -> None:
    batch = [delivery(n) for n in range(5)]
    enqueue(box, batch[:3], now=100.0)
    enqueue(box, batch[3:], now=90.0)  # written later with an earlier clock: still newer
    assert ids(box.find()) == ids(batch[::-1])
    assert ids(box.find(limit=2)) == ids(batch[:2:-1])
    (leased,) = claim(box, "w", 100.0, ids=[batch[1].id])
    assert ids(box.find(["in_flight"])) == [leased.id]
    assert ids(box.find(["queued", "in_flight"], 10)) == ids(batch[::-1])
    assert ids(box.find(ids=[batch[0].id, batch[4].id])) == [batch[4].id, batch[0].id]
    assert box.find(ids=[]) == []
    assert box.find(["delivered"]) == []


# -- acting ---------------------------------------------------------------------------------------


def test_retry_makes_queued_due_now_and_requeues_failed_only_when_asked(box: Outbox) -> None:
    later, refused, gave_up, done = (delivery(n) for n in range(4))
    enqueue(box, [later, refused, gave_up, done], now=100.0)
    leased = {d.id: d for d in claim(box, "w", 100.0)}
    attempted(leased[later.id], 100.0, reason="503", retry_at=900.0)
    attempted(leased[refused.id], 100.0, State.failed, "400")
    attempted(leased[gave_up.id], 100.0, State.dead, "gave up")
    attempted(leased[done.id], 100.0)
    assert box.complete(list(leased.values()), "w", 101.0) == [True] * 4
    assert box.retry(now=200.0) == 1
    got = stored(box, later)
    assert (got.state, got.next_attempt_at, got.attempt_count) == (State.queued, 200.0, 1)
    assert stored(box, refused).state is State.failed
    assert box.retry([refused.id], include_failed=True, now=300.0) == 1
    got = stored(box, refused)
    assert (got.state, got.next_attempt_at, got.attempt_count, got.first_attempt_at) == (
        State.queued, 300.0, 0, None)  # a fresh retry budget
    assert stored(box, gave_up).state is State.dead  # not among the ids
    assert box.retry(include_failed=True, now=400.0) == 3  # later, refused again, gave_up
    assert stored(box, gave_up).state is State.queued
    assert stored(box, done).state is State.delivered  # never sent again
    assert sorted(ids(claim(box, "w", 400.0))) == sorted([later.id, refused.id, gave_up.id])


def test_retry_leaves_deliveries_in_flight_alone(box: Outbox) -> None:
    enqueue(box, [delivery(1)], now=100.0)
    (leased,) = claim(box, "w", 100.0)
    assert box.retry(include_failed=True, now=101.0) == 0
    assert box.complete([attempted(leased, 100.0)], "w", 102.0) == [True]


def test_purge_deletes_only_what_finished_long_enough_ago(box: Outbox) -> None:
    quiet = delivery(1)
    quiet.finish(State.suppressed, "cooldown")
    done, running, waiting = delivery(2), delivery(3), delivery(4, due=10_000.0)
    enqueue(box, [quiet, done, running, waiting], now=100.0)
    enqueue(box, [delivery(5)], now=100.0, policy=digest_policy(max_items=10))
    leased = {d.id: d for d in claim(box, "w", 100.0)}
    assert box.complete([attempted(leased[done.id], 100.0)], "w", 110.0) == [True]
    assert box.purge(older_than=60.0, now=160.0) == 1  # the suppressed one, finished at 100
    assert box.purge(older_than=60.0, now=170.0) == 1  # the delivered one, finished at 110
    assert box.purge(older_than=0.0, now=1e9) == 0
    assert sorted(d.state.value for d in box.find()) == ["batched", "in_flight", "queued"]


# -- a damaged row --------------------------------------------------------------------------------


def test_a_claim_marks_an_unreadable_delivery_dead_and_goes_on(
        backend: Backend, box: Outbox) -> None:
    if backend.damage is None:
        pytest.skip(f"{backend.name} cannot damage a stored row")
    batch = [delivery(n) for n in range(3)]
    enqueue(box, batch, now=100.0)
    backend.damage(box, batch[1].id)
    listed = {d.id: d for d in box.find()}
    assert listed[batch[1].id].state is State.dead  # shown dead even before a claim
    assert listed[batch[1].id].reason.startswith(UNREADABLE)
    assert sorted(ids(claim(box, "w", 100.0))) == sorted([batch[0].id, batch[2].id])
    got = stored(box, batch[1])
    assert got.state is State.dead and got.reason.startswith(UNREADABLE)
    assert ids(box.find(["dead"])) == [batch[1].id]  # stored dead now, not only shown
    assert box.next_due() == 105.0


# -- two outbox objects on one store (two processes) ----------------------------------------------


def test_what_one_writes_the_other_reads_and_repeats_are_seen_across(shared: Backend) -> None:
    one, two = shared.open(), shared.open()
    ((first, _),) = enqueue(one, [delivery(1)], now=100.0, repeat_window=600.0)
    assert stored(two, first).alert.title == "Column removed 1"
    ((again, new),) = enqueue(two, [delivery(1)], now=200.0, repeat_window=600.0)
    assert not new and again.id == first.id
    assert ids(two.find()) == [first.id]


def test_a_lease_taken_by_one_holds_the_other_off_until_it_expires(shared: Backend) -> None:
    one, two = shared.open(), shared.open()
    enqueue(one, [delivery(1)], now=100.0)
    (mine,) = claim(one, "a", 100.0)
    assert claim(two, "b", 104.0) == []
    (theirs,) = claim(two, "b", 105.0)
    assert box_complete(one, mine, "a") == [False]
    assert box_complete(two, theirs, "b") == [True]
    assert stored(one, mine).state is State.delivered


def box_complete(box: Outbox, d: Delivery, owner: str) -> list[bool]:
    return box.complete([attempted(d, 106.0)], owner, 106.0)


def test_concurrent_claims_never_lease_one_delivery_twice(shared: Backend) -> None:
    boxes = [shared.open(), shared.open()]
    batch = [delivery(n, destination=f"d{n % 3}") for n in range(60)]
    enqueue(boxes[0], batch, now=100.0)
    taken: list[list[str]] = [[], []]
    empty = [False, False]
    errors: list[BaseException] = []
    rounds = threading.Barrier(2, timeout=30)  # both claim at once, round after round

    def work(i: int) -> None:
        try:
            while True:
                rounds.wait()
                got = claim(boxes[i], f"w{i}", 100.0, limit=1 + i, rules=LONG)
                taken[i] += ids(got)
                empty[i] = not got
                rounds.wait()
                if all(empty):
                    return
        except BaseException as exc:
            errors.append(exc)
            rounds.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(taken[0] + taken[1]) == sorted(ids(batch))  # each exactly once
    assert taken[0] and taken[1]  # both took part
    assert {d.state for d in boxes[1].find(limit=100)} == {State.in_flight}


def test_rate_limits_and_holds_are_shared_across_outboxes(shared: Backend) -> None:
    one, two = shared.open(), shared.open()
    enqueue(one, [delivery(n) for n in range(12)], now=0.0)
    rules = limited(RateLimit(120, 60.0, burst=4))
    assert len(claim(one, "a", 1.0, limit=3, rules=rules)) == 3
    assert len(claim(two, "b", 1.0, rules=rules)) == 1  # the rest of the shared burst
    assert claim(one, "a", 1.0, rules=rules) == []
    two.hold_key("k", 100.0)  # a Retry-After seen by one process holds the other
    assert claim(one, "a", 50.0, rules=rules) == []
    assert len(claim(one, "a", 100.0, rules=rules)) == 4  # then a full burst again


def test_the_policy_sees_what_another_outbox_notified(shared: Backend) -> None:
    one, two = shared.open(), shared.open()

    def cooldown(d: Delivery, now: float, history: History) -> Decision:
        seen = history.last_notified(d.rule, d.alert.asset.id, d.destination, now - 3600)
        return Decision("suppress", "cooldown") if seen is not None else Decision("send")

    first, second = delivery(1, asset="orders"), delivery(2, asset="orders")
    enqueue(one, [first], now=100.0, policy=Policy(cooldown))
    enqueue(two, [second], now=200.0, policy=Policy(cooldown))
    assert stored(one, second).state is State.suppressed


# -- mutes ----------------------------------------------------------------------------------------
# ``armor-notify mute``: a mute is stored in the outbox; the intake policy (the noise gate's last
# step, ``muting`` here) holds the triggers it covers until it ends, as deliveries that name it.


def muting(d: Delivery, now: float, history: History) -> Decision:
    """The noise gate's mute step alone: a trigger covered by a mute in force is held until the
    last covering mute ends."""
    covering = [m for m in history.mutes(now) if m.scope.covers(d)]
    if not covering or d.alert.status != "triggered":
        return Decision("send")
    last = max(covering, key=lambda m: m.expires_at)
    return Decision("hold", last.holding(), last.expires_at, mute=last.id)


MUTING = Policy(muting)


def test_a_mute_holds_what_it_covers_until_it_ends_and_lists_what_it_holds(box: Outbox) -> None:
    mute = box.add_mute(MuteScope(assets=("db.s.t1",)), "backfill", "ana", now=100.0,
                        until=200.0)
    assert (mute.scope.assets, mute.reason, mute.author, mute.created_at, mute.expires_at,
            mute.lifted_at) == (("db.s.t1",), "backfill", "ana", 100.0, 200.0, None)
    held, free = delivery(1), delivery(2)
    enqueue(box, [held, free], now=110.0, policy=MUTING)
    got = stored(box, held)
    assert (got.state, got.next_attempt_at, got.mute_id, got.reason) == (
        State.queued, 200.0, mute.id, mute.holding())
    assert stored(box, free).mute_id is None
    (sent,) = claim(box, "w", 150.0)
    assert sent.id == free.id and box.complete([attempted(sent, 150.0)], "w", 150.5) == [True]
    (listed,) = box.mutes(150.0)
    assert (listed.id, listed.held, listed.state(150.0)) == (mute.id, 1, "active")
    assert box.next_due() == 200.0
    # It runs out: listed only with the ended ones, what it held is due.
    assert box.mutes(200.0) == []
    (ended,) = box.mutes(200.0, ended=True)
    assert (ended.id, ended.held, ended.state(200.0)) == (mute.id, 0, "expired")
    assert ids(claim(box, "w", 200.0)) == [held.id]
    late = delivery(1)
    enqueue(box, [late], now=250.0, policy=MUTING)
    assert (stored(box, late).next_attempt_at, stored(box, late).mute_id) == (250.0, None)
    newer = box.add_mute(MuteScope(tags=("pii",)), "audit", "bo", now=300.0, until=400.0)
    assert newer.id > mute.id
    assert [m.id for m in box.mutes(300.0, ended=True)] == [newer.id, mute.id]  # newest first


def test_lifting_a_mute_makes_what_it_held_due_at_once_and_returns_their_ids(box: Outbox) -> None:
    mute = box.add_mute(MuteScope(assets=("db.s.*",)), "backfill", "ana", now=100.0,
                        until=1000.0)
    batch = [delivery(1), delivery(2)]
    enqueue(box, batch, now=110.0, policy=MUTING)
    assert claim(box, "w", 120.0) == []
    assert box.mutes(120.0)[0].held == 2
    lifted, released = box.lift_mute(mute.id, 130.0)
    assert lifted is not None and (lifted.id, lifted.lifted_at) == (mute.id, 130.0)
    assert sorted(released) == sorted(ids(batch))
    for d in batch:
        got = stored(box, d)
        assert (got.state, got.next_attempt_at, got.reason) == (
            State.queued, 130.0, f"released: mute #{mute.id} was lifted")
    assert box.mutes(130.0) == []
    (ended,) = box.mutes(130.0, ended=True)
    assert (ended.state(130.0), ended.held, ended.lifted_at, ended.ends_at) == (
        "lifted", 0, 130.0, 130.0)
    assert sorted(ids(claim(box, "w", 130.0))) == sorted(ids(batch))
    again, released = box.lift_mute(mute.id, 140.0)  # lifted already: nothing more
    assert again is not None and again.lifted_at == 130.0 and released == []
    assert box.lift_mute(mute.id + 100, 140.0) == (None, [])


def test_a_delivery_another_mute_still_covers_stays_held_when_one_is_lifted(box: Outbox) -> None:
    short = box.add_mute(MuteScope(assets=("db.s.*",)), "migration", "ana", now=100.0,
                         until=500.0)
    long = box.add_mute(MuteScope(assets=("db.s.t1",)), "backfill", "bo", now=100.0,
                        until=900.0)
    held = delivery(1)
    enqueue(box, [held], now=110.0, policy=MUTING)
    assert (stored(box, held).mute_id, stored(box, held).next_attempt_at) == (long.id, 900.0)
    assert sorted((m.id, m.held) for m in box.mutes(110.0)) == [(short.id, 0), (long.id, 1)]
    _, released = box.lift_mute(long.id, 120.0)
    assert released == []
    got = stored(box, held)
    assert (got.state, got.mute_id, got.next_attempt_at, got.reason) == (
        State.queued, short.id, 500.0, short.holding())
    assert [(m.id, m.held) for m in box.mutes(130.0)] == [(short.id, 1)]
    assert claim(box, "w", 130.0) == []
    _, released = box.lift_mute(short.id, 140.0)
    assert released == [held.id]
    assert ids(claim(box, "w", 140.0)) == [held.id]


def test_a_resolve_of_a_held_trigger_settles_both_and_nothing_is_sent(box: Outbox) -> None:
    mute = box.add_mute(MuteScope(assets=("db.s.*",)), "backfill", "ana", now=100.0,
                        until=1000.0)
    trigger, other = delivery(1, dedup="k"), delivery(2, dedup="j")
    enqueue(box, [trigger, other], now=110.0, policy=MUTING)
    resolve = delivery(1, status="resolved", dedup="k")
    ((written, new),) = enqueue(box, [resolve], now=120.0, policy=MUTING)
    assert new and written.state is State.suppressed
    assert f"held by mute #{mute.id} and never sent" in written.reason
    got = stored(box, trigger)
    assert (got.state, got.reason) == (State.suppressed,
                                       f"resolved while muted by #{mute.id}: never sent")
    assert stored(box, resolve).state is State.suppressed
    assert stored(box, other).state is State.queued  # another dedup key: still held
    assert box.mutes(130.0)[0].held == 1
    assert box.lift_mute(mute.id, 130.0)[1] == [other.id]
    assert ids(claim(box, "w", 2000.0)) == [other.id]


def test_a_mute_set_through_one_outbox_holds_the_others_intake_and_either_lifts_it(
        shared: Backend) -> None:
    one, two = shared.open(), shared.open()
    mute = one.add_mute(MuteScope(assets=("db.s.*",)), "backfill", "ana", now=100.0,
                        until=1000.0)
    held = delivery(1)
    enqueue(two, [held], now=110.0, policy=MUTING)
    assert stored(one, held).mute_id == mute.id
    assert [(m.id, m.held) for m in one.mutes(120.0)] == [(mute.id, 1)]
    _, released = two.lift_mute(mute.id, 130.0)
    assert released == [held.id]
    assert one.mutes(130.0) == []
    assert ids(claim(one, "w", 130.0)) == [held.id]


# -- the check ledger -----------------------------------------------------------------------------
# Check results go through intake as ``send`` writes them: the config's deliveries, the noise gate
# as the policy and the ledger's rules (``CheckRules``) as ``checks``; the ledger lives in the
# outbox, so every backend keeps it alike.


def check_config(registry: Registry, *, rule: Mapping[str, Any] | None = None,
                 checks: Mapping[str, Any] | None = None) -> Config:
    """Failing checks to ``pager`` and ``chat``; ``check_missing`` to ``pager``."""
    return config_from_dict({
        "version": 1,
        "destinations": {"pager": {"type": "scripted"}, "chat": {"type": "scripted"}},
        "rules": [{"name": "Checks", "event": "validity_failure",
                   "destinations": ["pager", "chat"], **(rule or {})},
                  {"name": "Missing", "event": "check_missing", "destinations": ["pager"]}],
        "checks": dict(checks or {}),
    }, registry)


def result(run: int, status: str, *, check: str = "not_null", asset: str = "orders",
           expect_every: str | None = None) -> Alert:
    """One result of ``check`` on ``db.marts.<asset>``, from run ``run-<run>``."""
    found: dict[str, Any] = {"id": check, "status": status, "run_id": f"run-{run}"}
    if expect_every is not None:
        found["expect_every"] = expect_every
    return Alert.model_validate(
        {"id": f"{check}-{run}", "event_type": "validity_failure", "title": f"{check} failed",
         "asset": {"id": asset, "name": f"db.marts.{asset}"}, "check": found},
        context={"event_types": None})


def report(box: Outbox, config: Config, alerts: Sequence[Alert], now: float, *,
           sweep: bool = False) -> list[Delivery]:
    """What intake writes for these results at ``now`` (with ``sweep``: also ``check_missing``
    for overdue checks), as ``send`` and a worker's chore write it."""
    out = enqueue(box, config.plan(alerts), now=now, policy=Gate(config),
                  checks=CheckRules(config, alerts, sweep=sweep))
    assert all(new for _, new in out)
    return [d for d, _ in out]


def test_the_ledger_pages_when_a_check_starts_failing_and_resolves_where_the_trigger_went(
        box: Outbox, registry: Registry) -> None:
    config = check_config(registry)
    triggers = report(box, config, [result(1, "fail")], 100.0)
    assert sorted((d.destination, d.state, d.alert.status) for d in triggers) == [
        ("chat", State.queued, "triggered"), ("pager", State.queued, "triggered")]
    keys = {d.destination: d.dedup_key for d in triggers}
    still = report(box, config, [result(2, "fail")], 200.0)
    assert sorted(d.destination for d in still) == ["chat", "pager"]
    assert {stored(box, d).state for d in still} == {State.suppressed}
    assert all(d.reason.startswith("check still failing since")
               and d.reason.endswith(": no new page") for d in still)
    (row,) = box.checks(failing=True)
    assert (row.key, row.state, row.since, row.last_status, row.last_run_at, row.last_run_id) == (
        ("native", "not_null", "orders"), "failing", 100.0, "fail", 200.0, "run-2")
    assert row.dedup_keys == sorted(set(keys.values()))
    resolves = report(box, config, [result(3, "pass")], 300.0)
    assert sorted((d.destination, d.alert.status, d.dedup_key) for d in resolves) == sorted(
        (name, "resolved", key) for name, key in keys.items())
    assert {stored(box, d).state for d in resolves} == {State.queued}
    assert report(box, config, [result(4, "pass")], 400.0) == []  # passing: nothing
    assert box.checks(failing=True) == []
    (row,) = box.checks()
    assert (row.state, row.since, row.last_run_id, row.incident) == (
        "passing", 300.0, "run-4", None)
    # Each resolve goes after its own trigger.
    assert sorted(ids(claim(box, "w", 400.0, rules=LONG))) == sorted(ids(triggers))
    assert sorted(box.older_pending(ids(resolves))) == sorted(ids(triggers))


def test_a_run_already_recorded_is_not_counted_again(box: Outbox, registry: Registry) -> None:
    config = check_config(registry)
    assert len(report(box, config, [result(1, "fail")], 100.0)) == 2
    assert report(box, config, [result(1, "fail")], 150.0) == []  # posted twice
    assert len(report(box, config, [result(2, "pass")], 200.0)) == 2
    assert report(box, config, [result(2, "pass")], 250.0) == []
    (row,) = box.checks()
    assert (row.state, row.last_run_at, row.last_run_id) == ("passing", 200.0, "run-2")


def test_resolve_after_needs_that_many_passes_in_a_row(box: Outbox, registry: Registry) -> None:
    config = check_config(registry, rule={"resolve_after": 2})
    triggers = report(box, config, [result(1, "fail")], 100.0)
    assert report(box, config, [result(2, "pass")], 200.0) == []
    (row,) = box.checks()
    assert (row.state, row.passes, row.resolve_after) == ("failing", 1, 2)
    assert {d.state for d in report(box, config, [result(3, "fail")], 300.0)} == {
        State.suppressed}  # a flap: counted again from nothing
    assert report(box, config, [result(4, "pass")], 400.0) == []
    resolves = report(box, config, [result(5, "pass")], 500.0)
    assert sorted(d.dedup_key for d in resolves) == sorted(d.dedup_key for d in triggers)
    assert box.checks()[0].state == "passing"


def test_an_error_is_a_failure_unless_errors_are_ignored(box: Outbox, registry: Registry) -> None:
    assert len(report(box, check_config(registry), [result(1, "error")], 100.0)) == 2
    ignoring = check_config(registry, checks={"errors": "ignore"})
    assert report(box, ignoring, [result(1, "error", check="unique")], 100.0) == []
    states = {row.check_id: (row.state, row.last_status) for row in box.checks()}
    assert states == {"not_null": ("failing", "error"), "unique": ("passing", "error")}


def test_a_check_still_failing_is_reminded_every_remind_every(
        box: Outbox, registry: Registry) -> None:
    config = check_config(registry, rule={"remind_every": "1h"})
    triggers = report(box, config, [result(1, "fail")], 0.0)
    assert {d.state for d in report(box, config, [result(2, "fail")], 1800.0)} == {
        State.suppressed}
    reminders = report(box, config, [result(3, "fail")], 3600.0)
    assert {d.state for d in reminders} == {State.queued}
    assert all(d.alert.title.startswith("Still failing since") for d in reminders)
    assert sorted(d.dedup_key for d in reminders) == sorted(d.dedup_key for d in triggers)
    assert {d.state for d in report(box, config, [result(4, "fail")], 4000.0)} == {
        State.suppressed}  # the next one is an hour after the reminder
    assert {d.state for d in report(box, config, [result(5, "fail")], 7200.0)} == {State.queued}


@pytest.mark.parametrize("given_by", ["result", "rule"])
def test_a_check_that_stops_reporting_raises_check_missing_once_until_it_reports_again(
        box: Outbox, registry: Registry, given_by: str) -> None:
    every = "1m"
    config = check_config(registry, rule={"expect_every": every} if given_by == "rule" else None)

    def heard(run: int) -> Alert:
        return result(run, "pass", expect_every=every if given_by == "result" else None)

    assert report(box, config, [heard(1)], 100.0) == []
    assert box.next_overdue() == 220.0  # twice the interval after the last result
    assert report(box, config, [], 219.0, sweep=True) == []
    (missing,) = report(box, config, [], 220.0, sweep=True)
    assert (missing.destination, missing.alert.event_type, missing.alert.status,
            missing.state) == ("pager", "check_missing", "triggered", State.queued)
    assert missing.dedup_key.startswith("armor-notify-missing-")
    assert missing.alert.asset.name == "db.marts.orders"
    assert box.next_overdue() is None
    assert report(box, config, [], 500.0, sweep=True) == []  # once, until it reports
    (row,) = box.checks(failing=True)
    assert (row.state, row.missing_since, row.dedup_keys) == (
        "passing", 220.0, [missing.dedup_key])
    (resolve,) = report(box, config, [heard(2)], 600.0)
    assert (resolve.destination, resolve.alert.status, resolve.dedup_key) == (
        "pager", "resolved", missing.dedup_key)
    assert box.checks(failing=True) == []
    assert box.next_overdue() == 720.0


def test_the_summary_counts_checks_by_state_the_missing_ones_and_mutes_with_what_they_hold(
        box: Outbox, registry: Registry) -> None:
    config = check_config(registry)
    empty = box.summary(100.0)
    assert (empty.checks, empty.checks_missing, empty.mutes, empty.held) == (
        {"passing": 0, "failing": 0}, 0, 0, 0)
    mute = box.add_mute(MuteScope(assets=("db.marts.orders",)), "backfill", "ana", now=100.0,
                        until=1000.0)
    box.add_mute(MuteScope(tags=("pii",)), "audit", "bo", now=100.0, until=150.0)  # runs out
    lifted = box.add_mute(MuteScope(assets=("db.*",)), "oops", "cy", now=100.0, until=1000.0)
    box.lift_mute(lifted.id, 105.0)
    report(box, config, [result(1, "fail")], 110.0)  # its page held: pager and chat
    report(box, config, [result(1, "fail", check="unique", asset="customers",
                                expect_every="1m")], 110.0)
    report(box, config, [result(1, "pass", check="fresh", asset="events", expect_every="1m")],
           110.0)
    report(box, config, [result(1, "pass", check="volume", asset="items")], 110.0)
    assert len(report(box, config, [], 300.0, sweep=True)) == 2  # unique and fresh go missing
    found = box.summary(300.0)
    assert (found.checks, found.checks_missing, found.mutes, found.held) == (
        {"passing": 2, "failing": 2}, 2, 1, 2)
    assert [(m.id, m.held) for m in box.mutes(300.0)] == [(mute.id, 2)]
    ended = box.summary(1000.0)  # the mute ends: what it held is due, nothing held
    assert (ended.mutes, ended.held) == (0, 0)


@pytest.mark.parametrize("statuses", [("fail", "pass"), ("fail", "fail")])
def test_results_of_one_check_in_one_intake_are_judged_one_after_the_other(
        box: Outbox, registry: Registry, statuses: tuple[str, str]) -> None:
    # One intake with two results of one check (a JSON list, a batch posted to serve): the
    # second is judged against the first, as if they had come one at a time.
    config = check_config(registry)
    written = report(box, config, [result(1, statuses[0]), result(2, statuses[1])], 100.0)
    sent = sorted((d.alert.status, d.destination, d.dedup_key) for d in written
                  if stored(box, d).state is not State.suppressed)
    (row,) = box.checks()
    if statuses[1] == "pass":  # a trigger and its resolve, or neither: no incident left open
        triggers = [(d, k) for s, d, k in sent if s == "triggered"]
        assert sorted((d, k) for s, d, k in sent if s == "resolved") == triggers, sent
        assert (row.state, row.incident) == ("passing", None)
    else:  # one page, then still failing
        assert [s for s, _, _ in sent] == ["triggered", "triggered"], sent  # pager and chat
        assert row.state == "failing" and row.dedup_keys == sorted({k for _, _, k in sent})


def test_a_muted_check_that_recovers_sends_nothing(box: Outbox, registry: Registry) -> None:
    config = check_config(registry)
    mute = box.add_mute(MuteScope(assets=("db.marts.*",)), "backfill", "ana", now=100.0,
                        until=1000.0)
    held = report(box, config, [result(1, "fail")], 110.0)
    assert all((d.state, d.mute_id, d.next_attempt_at) == (State.queued, mute.id, 1000.0)
               for d in held)
    assert box.mutes(110.0)[0].held == 2
    assert {d.state for d in report(box, config, [result(2, "fail")], 120.0)} == {
        State.suppressed}  # still failing: not a second held page
    resolves = report(box, config, [result(3, "pass")], 130.0)
    assert len(resolves) == 2 and {d.state for d in resolves} == {State.suppressed}
    assert {(stored(box, d).state, stored(box, d).reason) for d in held} == {
        (State.suppressed, f"resolved while muted by #{mute.id}: never sent")}
    assert box.mutes(140.0)[0].held == 0
    assert box.lift_mute(mute.id, 140.0)[1] == []
    assert claim(box, "w", 2000.0) == [] and box.next_due() is None


def test_a_check_paged_before_a_mute_resolves_through_it(box: Outbox, registry: Registry) -> None:
    config = check_config(registry)
    triggers = report(box, config, [result(1, "fail")], 50.0)
    box.add_mute(MuteScope(assets=("db.marts.*",)), "backfill", "ana", now=100.0, until=1000.0)
    resolves = report(box, config, [result(2, "pass")], 110.0)
    assert sorted(d.dedup_key for d in resolves) == sorted(d.dedup_key for d in triggers)
    assert all((stored(box, d).state, stored(box, d).mute_id, stored(box, d).next_attempt_at)
               == (State.queued, None, 110.0) for d in resolves)


def test_what_one_outbox_records_the_other_judges_against(
        shared: Backend, registry: Registry) -> None:
    config = check_config(registry)
    one, two = shared.open(), shared.open()
    triggers = report(one, config, [result(1, "fail", expect_every="1m")], 100.0)
    assert {d.state for d in report(two, config, [result(2, "fail")], 110.0)} == {
        State.suppressed}
    resolves = report(two, config, [result(3, "pass")], 120.0)
    assert sorted(d.dedup_key for d in resolves) == sorted(d.dedup_key for d in triggers)
    assert [row.state for row in one.checks()] == ["passing"]


def test_two_outboxes_sweeping_at_once_raise_check_missing_once(
        shared: Backend, registry: Registry) -> None:
    config = check_config(registry)
    boxes = [shared.open(), shared.open()]
    report(boxes[0], config, [result(1, "pass", expect_every="1m")], 100.0)
    written: list[list[Delivery]] = [[], []]
    errors: list[BaseException] = []
    together = threading.Barrier(2, timeout=30)

    def sweep(i: int) -> None:
        try:
            together.wait()
            written[i] = report(boxes[i], config, [], 300.0, sweep=True)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sweep, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(len(w) for w in written) == [0, 1]
    assert [d.alert.event_type for d in boxes[1].find()] == ["check_missing"]


# -- what the command line uses: the noise-control history, and closing -------------------------
# ``route --at`` reads what was notified through ``history()``; ``outbox list/show/retry/purge``
# open the outbox as a context manager.


def test_history_answers_what_the_policy_would_be_told(box: Outbox) -> None:
    enqueue(box, [delivery(1, asset="orders"), delivery(2, asset="orders", test=True)],
            now=100.0)
    enqueue(box, [delivery(3)], now=100.0, policy=digest_policy(max_items=10))
    history = box.history()
    assert history.last_notified("All", "orders", "d", 0.0) == 100.0
    assert history.last_notified("All", "orders", "d", 101.0) is None
    assert history.count_notified(0.0) == 1  # the test event is not counted (nor the digest)
    assert history.count_notified(0.0, destination="e") == 0
    assert history.digest_closes(batch_key("d")) == 1000.0


def test_an_outbox_closes_as_a_context_manager(backend: Backend) -> None:
    with backend.connect() as box:
        enqueue(box, [delivery(1)], now=100.0)
        assert len(box.find()) == 1
    with pytest.raises(Exception, match="closed"):
        box.find()

