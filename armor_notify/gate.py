"""The noise gate: a config's noise controls (and the outbox's mutes), applied to each delivery
as the outbox writes it.

The gate reads the config (rules, destinations, blackouts, the company time zone), so it sits
above it. The outbox does not import it: :class:`armor_notify.api.Notifier` hands it to
``Outbox.enqueue`` as the intake policy (:class:`armor_notify.outbox.IntakePolicy`), and the
outbox calls :meth:`Gate.decide` inside its intake transaction with its own history. The models
it applies (schedules, blackouts, digests) and the decisions it returns are in
:mod:`armor_notify.noise`.
"""

from __future__ import annotations

from datetime import datetime, timezone

from .config import Config, Destination
from .delivery import Delivery
from .durations import format_duration
from .history import History
from .noise import SEND, Decision, batch_key, start_of_day
from .rules import RuleModel
from .times import readable


class Gate:
    """Applies a config's noise controls to planned deliveries, in the product's order: the
    rule's operating schedule, company-wide blackouts, the cooldown, daily limits; digests last."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def decide(self, delivery: Delivery, now: float, history: History) -> Decision:
        if delivery.state.value != "queued" or delivery.test:
            return SEND
        compiled = self.config.rule(delivery.rule)
        dest = self.config.destinations.get(delivery.destination)
        if compiled is None or dest is None:
            return SEND
        rule = compiled.model
        at = datetime.fromtimestamp(now, timezone.utc)
        decision = self._closed(rule, at) or self._cooling_down(rule, delivery, dest, now,
                                                                history)
        if decision is None:
            decision = self._counted(rule, delivery, dest, at, now, history)
        if decision.action == "suppress" or delivery.alert.status != "triggered":
            return decision
        return self._muted(delivery, decision, now, history) or decision

    def closed_until(self, rule_name: str, now: float) -> Decision | None:
        """The hold ``rule_name``'s operating schedule or a blackout puts on its alerts at
        ``now`` (``hold: true``), or ``None``: what a lifted mute releases still waits for it."""
        compiled = self.config.rule(rule_name)
        if compiled is None or not compiled.model.hold:
            return None
        return self._closed(compiled.model, datetime.fromtimestamp(now, timezone.utc))

    def _muted(self, delivery: Delivery, decision: Decision, now: float,
               history: History) -> Decision | None:
        """5. mutes (``armor-notify mute``): a trigger a mute covers is held until the last
        covering mute ends (not digested), or after that until its rule's operating hours open
        (``hold: true``), so what still fails then is delivered. Resolves and acknowledgements
        are never held."""
        covering = [m for m in history.mutes(now) if m.scope.covers(delivery)]
        if not covering:
            return None
        last = max(covering, key=lambda m: m.expires_at)
        # When the mute ends, the rule's operating hours (hold: true) may still be closed.
        reopens = self.closed_until(delivery.rule, last.expires_at)
        until = max(last.expires_at, reopens.until or 0.0) if reopens else last.expires_at
        return Decision("hold", last.holding(self._zone), until, mute=last.id)

    @property
    def _zone(self) -> str:
        return self.config.defaults.timezone

    def _closed(self, rule: RuleModel, at: datetime) -> Decision | None:
        """1. the rule's operating schedule, 2. company-wide blackouts: suppress, or hold until
        they open; ``None`` when both are open."""
        if rule.schedule is not None and not rule.schedule.is_open(at):
            opens = rule.schedule.next_open(at).timestamp()
            if rule.hold:
                return Decision("hold", f"held: outside operating hours until "
                                        f"{readable(opens, rule.schedule.timezone)}", opens)
            return Decision("suppress", "outside operating hours")
        for blackout in self.config.blackouts:
            ends = blackout.active_until(at, self._zone)
            if ends is not None:
                if rule.hold:
                    return Decision("hold", f"held: blackout period '{blackout.name}' until "
                                            f"{readable(ends.timestamp(), self._zone)}",
                                    ends.timestamp())
                return Decision("suppress", f"blackout period '{blackout.name}'")
        return None

    def _cooling_down(self, rule: RuleModel, delivery: Delivery, dest: Destination, now: float,
                      history: History) -> Decision | None:
        """3. the cooldown: suppress when this rule already notified about this asset recently."""
        alert = delivery.alert
        if rule.cooldown is None or alert.status != "triggered":
            return None
        last = history.last_notified(rule.name, alert.asset.id, dest.name, now - rule.cooldown)
        if last is None:
            return None
        return Decision("suppress", f"cooldown: rule '{rule.name}' notified about "
                                    f"{alert.asset.name} at {readable(last, self._zone)} (cooldown "
                                    f"{format_duration(rule.cooldown)})")

    def _counted(self, rule: RuleModel, delivery: Delivery, dest: Destination, at: datetime,
                 now: float, history: History) -> Decision:
        """4. daily limits, per rule and per destination, then the digest: a digested delivery
        is collected even over a limit (the digest counts it); otherwise over a limit is
        suppressed, and the rest is sent."""
        over = self._over_daily_limit(rule, dest, at, history)
        digest = dest.config.digest or (rule.digest if dest.type.supports_digest else None)
        if digest is not None:
            closes = history.digest_closes(batch_key(delivery.destination)) or now + digest.window
            note = f"; {over}, counted into the digest" if over else ""
            return Decision("digest", f"collected for the digest sent by "
                                      f"{readable(closes, self._zone)}{note}", closes, digest)
        if over:
            return Decision("suppress", over)
        return SEND

    def _over_daily_limit(self, rule: RuleModel, dest: Destination, at: datetime,
                          history: History) -> str:
        """Which daily limit is reached (rule first, then destination), or ``""``."""
        today = start_of_day(at, self._zone)
        if rule.daily_limit is not None and history.count_notified(
                today, rule=rule.name) >= rule.daily_limit:
            return f"daily limit of {rule.daily_limit} reached for rule '{rule.name}'"
        if dest.config.daily_limit is not None and history.count_notified(
                today, destination=dest.name) >= dest.config.daily_limit:
            return (f"daily limit of {dest.config.daily_limit} reached for destination "
                    f"'{dest.name}'")
        return ""
