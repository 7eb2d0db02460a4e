"""A config's check rules applied at intake: what each check result sends, decided against the
check-state ledger (:mod:`armor_notify.ledger`) inside the outbox's intake transaction.

:class:`CheckRules` is handed to ``Outbox.enqueue`` as its ``checks`` (as the noise gate is its
``policy``): it reads the config (rules' ``resolve_after``, ``remind_every``, ``expect_every``,
the ``checks:`` section, destinations' ``send_resolved``), which the outbox never imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from . import ledger
from .alert import Alert, Check
from .delivery import Delivery, State
from .ledger import CheckState, Incident, Key, key_of
from .times import readable

if TYPE_CHECKING:
    from .config import Config
    from .sql import Db


@dataclass
class CheckRules:
    """A config's check rules, applied by the outbox inside its intake transaction (the
    ``checks`` it is handed): :meth:`before` turns the planned deliveries of check results into
    what the ledger decides, :meth:`after` remembers where triggers went.

    ``alerts``: the alerts of this intake, in order (a result may have no planned delivery and
    still resolve); ``sweep``: also raise ``check_missing`` for checks overdue at ``now``.
    """

    config: Config
    alerts: Sequence[Alert] = ()
    sweep: bool = False
    notes: dict[str, str] = field(default_factory=dict)
    """Alert id → what the ledger did with it (shown by ``send``)."""
    _rows: dict[Key, CheckState] = field(default_factory=dict)
    _triggers: list[tuple[Key, str, list[Delivery], str]] = field(default_factory=list)
    """(check, ``incident`` or ``missing``, the deliveries carrying its page, the result's id)."""

    @property
    def zone(self) -> str:
        return self.config.defaults.timezone

    def before(self, db: Db, deliveries: Sequence[Delivery], now: float) -> list[Delivery]:
        planned: dict[int, list[Delivery]] = {}
        for d in deliveries:
            planned.setdefault(id(d.alert), []).append(d)
        out: list[Delivery] = []
        for alert in self.alerts:
            mine = planned.pop(id(alert), [])
            out += self._result(db, alert, mine, now) if alert.check is not None else mine
        for rest in planned.values():  # deliveries of alerts not listed: as they are
            out += rest
        if self.sweep:
            out += self._missing(db, now)
        for row in self._rows.values():
            ledger.write(db, row)
        return out

    def after(self, db: Db, written: Sequence[Delivery]) -> None:
        """Forget the routes of triggers the noise controls suppressed on the way in (an
        incident records where its page goes when it opens), and say what became of a new
        failure's page."""
        for key, kind, deliveries, alert_id in self._triggers:
            row = self._rows[key]
            incident = row.missing if kind == "missing" else row.incident
            if incident is not None:
                incident.drop(deliveries)
                ledger.write(db, row)
            note = self.notes.get(alert_id, "")
            if kind == "incident" and note.endswith(": paged"):
                self.notes[alert_id] = note.removesuffix("paged") + _page_went(deliveries)
        self._triggers.clear()

    def _row(self, db: Db, key: Key) -> CheckState | None:
        if key not in self._rows:
            found = ledger.read(db, key)
            if found is None:
                return None
            self._rows[key] = found
        return self._rows[key]

    def _settings(self, planned: Sequence[Delivery]) -> tuple[int, float | None]:
        """resolve_after (the most any matched rule asks) and expect_every (the shortest)."""
        rules = [r.model for r in (self.config.rule(d.rule) for d in planned) if r is not None]
        resolve_after = max([self.config.checks.resolve_after,
                             *(r.resolve_after for r in rules if r.resolve_after)])
        every = [r.expect_every for r in rules if r.expect_every]
        return resolve_after, min(every) if every else None

    def _result(self, db: Db, alert: Alert, planned: list[Delivery], now: float) -> list[Delivery]:
        check = alert.check
        assert check is not None
        key = key_of(alert)
        row = self._row(db, key)
        verdict = ledger.judge(row, check, errors=self.config.checks.errors, zone=self.zone)
        self.notes[alert.id] = verdict.note
        if verdict.action == "repeat":
            return []
        out: list[Delivery] = []
        if row is not None and row.missing is not None:  # it reports again
            out += self._resolves(row.missing, alert, None, now)
            row.missing, row.missing_since = None, None
            self.notes[alert.id] += "; it reports again: its check_missing incident resolves"
        resolve_after, rule_every = self._settings(planned)
        if row is None:
            row = self._rows[key] = CheckState(*key, state="passing", since=now,
                                               last_status=check.status, last_run_at=now,
                                               last_run_id=None)
        if verdict.action == "page":
            if row.state != "failing":
                row.since = now
            row.state, row.passes, row.reminded_at = "failing", 0, None
            row.resolve_after = resolve_after
            row.incident = Incident(alert, [])
            row.incident.add(planned)  # at once: a later result in this intake sees it
            self._triggers.append((key, "incident", planned, alert.id))
            out += self._checked(planned)
        elif verdict.action == "hold":
            row.passes = 0
            out += self._still_failing(row, key, planned, now, verdict.note)
        elif verdict.action == "resolve":
            assert row.incident is not None
            out += self._resolves(row.incident, alert, check, now)
            row.state, row.since, row.passes = "passing", now, 0
            row.incident, row.reminded_at = None, None
        elif verdict.action == "count":
            row.passes += 1
        row.last_status, row.last_run_at, row.last_run_id = check.status, now, check.run_id
        row.expect_every = check.expect_every or rule_every or row.expect_every
        row.alert = alert
        return out

    @staticmethod
    def _checked(deliveries: list[Delivery]) -> list[Delivery]:
        for d in deliveries:
            d.checked = True
        return deliveries

    def _still_failing(self, row: CheckState, key: Key, planned: list[Delivery], now: float,
                       note: str) -> list[Delivery]:
        """No new page, except a reminder where a matched rule's ``remind_every`` has passed."""
        reminders: list[Delivery] = []
        last = max(row.since, row.reminded_at or 0.0)
        for d in self._checked(planned):
            rule = self.config.rule(d.rule)
            every = rule.model.remind_every if rule is not None else None
            if d.state is not State.queued:
                continue
            if every is not None and now - last >= every:
                d.alert = d.alert.model_copy(update={
                    "title": f"Still failing since {readable(row.since, self.zone)}: "
                             f"{d.alert.title}"})
                reminders.append(d)
            else:
                d.finish(State.suppressed, note)
        if reminders:
            row.reminded_at = now
            if row.incident is not None:
                row.incident.add(reminders)
            self._triggers.append((key, "incident", reminders, reminders[0].alert.id))
            self.notes[planned[0].alert.id] = (f"check still failing since "
                                               f"{readable(row.since, self.zone)}: reminder sent")
        return planned

    def _resolves(self, incident: Incident, report: Alert, check: Check | None,
                  now: float) -> list[Delivery]:
        """A resolve of ``incident`` to every destination that got its trigger, with its
        dedup key: the trigger's alert, resolved, under the id of the result that resolves
        it."""
        resolved = incident.alert.model_copy(update={
            "id": report.id, "status": "resolved", "check": check,
            "occurred_at": datetime.fromtimestamp(now, timezone.utc)})
        out = []
        for route in incident.routes:
            dest = self.config.destinations.get(route.destination)
            d = Delivery(alert=resolved, destination=route.destination,
                         destination_type=route.destination_type, rule=route.rule,
                         dedup_key=route.dedup_key, checked=True)
            if dest is None:
                d.finish(State.failed, f"destination '{route.destination}' is no longer in the "
                                       "config: its incident cannot be resolved from here")
            elif not dest.send_resolved:
                d.finish(State.suppressed, "send_resolved is off for this destination "
                                           "(resolved alerts are not sent)")
            out.append(d)
        return out

    def _missing(self, db: Db, now: float) -> list[Delivery]:
        """``check_missing`` for every check overdue at ``now`` (once each, until it reports)."""
        out: list[Delivery] = []
        for found in db.all(f"SELECT {ledger.COLUMNS} FROM checks WHERE overdue_at IS NOT NULL "
                            "AND overdue_at<=? ORDER BY overdue_at LIMIT 1000", (now,)):
            state = ledger.state_of(found)
            row = self._rows.setdefault(state.key, state)
            if row.missing_since is not None or row.alert is None or row.expect_every is None:
                continue
            alert = ledger.missing_alert(row, self.zone)
            planned = self._checked(self.config.plan([alert]))
            row.missing_since, row.missing = now, Incident(alert, [])
            row.missing.add(planned)
            self._triggers.append((row.key, "missing", planned, alert.id))
            out += planned
        return out


def _page_went(deliveries: Sequence[Delivery]) -> str:
    """How a new failure's page went out: ``paged``, ``held …``, or why not."""
    if not deliveries:
        return "no rule routes it, nothing sent"
    if any(d.state not in (State.suppressed, State.skipped) and not d.held for d in deliveries):
        return "paged"
    held = next((d for d in deliveries if d.held), None)
    if held is not None:
        return f"page held ({held.reason})"
    return f"not paged ({deliveries[0].reason})"
