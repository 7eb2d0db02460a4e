"""A config's check rules applied at intake: what each check result sends, decided against the
check-state ledger (:mod:`armor_notify.ledger`) inside the outbox's intake transaction.

:class:`CheckRules` is handed to ``Outbox.enqueue`` as its ``checks`` (as the noise gate is its
``policy``): it reads the config (rules' ``resolve_after``, ``remind_every``, ``expect_every``,
the ``checks:`` section, destinations' ``send_resolved``), which the outbox never imports.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from . import ledger
from .alert import Alert, Check, Severity
from .delivery import Delivery, State
from .ledger import CheckState, Incident, Key, folded_note, key_of
from .lineage import Below, Lineage, roots_above
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
    lineage: Lineage | None = None
    """The config's lineage, when it has one that could be read: a check that starts failing
    below a failing root is folded into the root's incident."""
    notes: dict[str, str] = field(default_factory=dict)
    """Alert id → what the ledger did with it (shown by ``send``)."""
    _rows: dict[Key, CheckState] = field(default_factory=dict)
    _triggers: list[tuple[Key, str, list[Delivery], str]] = field(default_factory=list)
    _roots: Roots | None = None
    """(check, ``incident`` or ``missing``, the deliveries carrying its page, the result's id)."""

    @property
    def zone(self) -> str:
        return self.config.defaults.timezone

    def before(self, db: Db, deliveries: Sequence[Delivery], now: float) -> list[Delivery]:
        planned: dict[int, list[Delivery]] = {}
        for d in deliveries:
            planned.setdefault(id(d.alert), []).append(d)
        out: list[Delivery] = []
        if self.lineage is not None and any(a.check is not None and a.check.failing
                                            for a in self.alerts):
            self._roots = Roots.of(db, self, planned, now)
        for alert in self.alerts:
            mine = planned.pop(id(alert), [])
            out += self._result(db, alert, mine, now) if alert.check is not None else mine
        if self._roots is not None:
            self._roots.list_blast_radius()
            out += self._roots.tell_owners(db, now)
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
            folded = self._roots.fold(alert, planned, row) if self._roots is not None else None
            if folded is not None:
                self.notes[alert.id] = f"check started failing: {folded}"
            else:
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
            row.folded_into, row.release_at = None, None
            self._release_below(db, alert.asset.name, now)
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
            every = rule.model.remind_every if rule is not None and row.folded_into is None \
                else None
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

    def _release_below(self, db: Db, root: str, now: float) -> None:
        """The root resolved: what was folded into it pages on its own if it still fails
        ``lineage.grace`` from now (a workers' sweep)."""
        at = now + self.config.lineage.grace
        for found in db.all(f"SELECT {ledger.COLUMNS} FROM checks WHERE folded_into=? AND "
                            "state='failing'", (root,)):
            state = ledger.state_of(found)
            row = self._rows.setdefault(state.key, state)
            if row.folded_into == root and row.state == "failing":
                row.release_at = at
        for row in self._rows.values():  # folded earlier in this intake
            if row.folded_into == root and row.state == "failing":
                row.release_at = at

    def _release(self, row: CheckState, now: float) -> list[Delivery]:
        """A folded check still failing after its root resolved: its own page now."""
        row.folded_into, row.release_at = None, None
        if row.state != "failing" or row.alert is None:
            return []
        planned = self._checked(self.config.plan([row.alert]))
        row.incident = Incident(row.alert, [])
        row.incident.add(planned)
        self._triggers.append((row.key, "incident", planned, row.alert.id))
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
            if row.release_at is not None and row.release_at <= now:
                out += self._release(row, now)
            if row.missing_since is not None or row.alert is None or row.expect_every is None \
                    or row.last_run_at + ledger.MISSED_RUNS * row.expect_every > now:
                continue
            alert = ledger.missing_alert(row, self.zone)
            planned = self._checked(self.config.plan([alert]))
            row.missing_since, row.missing = now, Incident(alert, [])
            row.missing.add(planned)
            self._triggers.append((row.key, "missing", planned, alert.id))
            out += planned
        return out


@dataclass
class Roots:
    """One intake's failing roots, for folding: the checks failing now (in the ledger, begun
    within ``lineage.window``, and those failing in this intake), and which lie upstream of
    each asset (:meth:`Lineage.below`)."""

    rules: CheckRules
    below: Below
    failing: dict[str, tuple[float, list[Delivery], list[ledger.Route]]]
    """Root (lower-case asset name) → when it began failing, its planned deliveries in this
    intake, its incident's routes."""
    names: dict[str, str]
    """Lower-case → the root's name as written."""
    keys: dict[str, Key]
    """Root (lower-case) → its ledger key."""
    blast: dict[str, list[str]] = field(default_factory=dict)
    """Root (lower-case) → the assets folded into it in this intake."""
    told: dict[str, list[tuple[str, Alert, str]]] = field(default_factory=dict)
    """Root (lower-case) → (owner, the folded alert, its rule) to tell, once per incident."""

    @classmethod
    def of(cls, db: Db, rules: CheckRules, planned: dict[int, list[Delivery]],
           now: float) -> Roots:
        settings = rules.config.lineage
        failing: dict[str, tuple[float, list[Delivery], list[ledger.Route]]] = {}
        names: dict[str, str] = {}
        keys: dict[str, Key] = {}
        for root in ledger.failing(db, now - settings.window):
            names[root.asset.lower()], keys[root.asset.lower()] = root.asset, root.key
            failing[root.asset.lower()] = (root.since, [], list(root.routes))
        for alert in rules.alerts:
            if alert.check is not None and alert.check.failing:
                low = alert.asset.name.lower()
                names.setdefault(low, alert.asset.name)
                keys.setdefault(low, key_of(alert))
                since, _, routes = failing.get(low, (now, [], []))
                failing[low] = (since, planned.get(id(alert), []), routes)
        assert rules.lineage is not None
        return cls(rules, rules.lineage.below(names.values(), depth=settings.depth), failing,
                   names, keys)

    def fold(self, alert: Alert, planned: list[Delivery], row: CheckState) -> str | None:
        """Fold a check that starts failing into the furthest failing root upstream of it (ties:
        the earliest to fail), as each delivery's rule says; ``None``: not folded (no root,
        or every rule says ``fold: off``). Returns the note."""
        roots = roots_above(self.below, alert.asset.name, alert.asset.id, alert.asset.upstream,
                            self.failing)
        if not roots:
            return None
        root, _ = max(roots, key=lambda r: (r[1], -self.failing[r[0].lower()][0]))
        since, root_planned, routes = self.failing[root.lower()]
        keys = {d.destination: d.dedup_key for d in root_planned}
        keys.update({r.destination: r.dedup_key for r in routes})
        why = folded_note(root, since, self.rules.zone, keys.values())
        folded = False
        for d in planned:
            rule = self.rules.config.rule(d.rule)
            mode = rule.model.fold if rule is not None else "suppress"
            if mode == "off" or d.state is not State.queued:
                continue
            folded = True
            if mode == "dedup" and d.destination in keys:
                d.dedup_key = keys[d.destination]
                d.reason = why
            else:
                d.finish(State.suppressed, why)
        if not folded:
            return None
        row.folded_into = root
        self.blast.setdefault(root.lower(), []).append(alert.asset.name)
        rule_name = planned[0].rule if planned else ""
        self.told.setdefault(root.lower(), []).extend(
            (owner, alert, rule_name) for owner in alert.asset.owners)
        return why

    def tell_owners(self, db: Db, now: float) -> list[Delivery]:
        """One informational message (not a page) per incident to each owner of an asset
        folded into it, on the owner's messaging destinations (those that can digest: Slack,
        email; never PagerDuty)."""
        config = self.rules.config
        mapped = {k.lower(): v for k, v in config.owners.items()}
        out: list[Delivery] = []
        for root, items in self.told.items():
            row = self.rules._row(db, self.keys[root])
            incident = row.incident if row is not None else None
            if incident is None:
                continue
            for owner, alert, rule in items:
                if owner.lower() in {o.lower() for o in incident.informed}:
                    continue
                incident.informed.append(owner)
                targets = mapped.get(owner.lower(), ())
                info = alert.model_copy(update={
                    "severity": Severity.info,
                    "title": f"Upstream incident: {self.names[root]} is failing, and "
                             f"{alert.asset.name} (yours) with it",
                    "description": f"{alert.asset.name} is failing below {self.names[root]}, "
                                   "whose incident is paged: no action is needed until it "
                                   "resolves. This is the one message about it.",
                    "check": None})
                digest = hashlib.sha256(f"{root}\x00{owner}".encode()).hexdigest()[:16]
                for name in targets:
                    dest = config.destinations.get(name)
                    if dest is None or not dest.type.supports_digest:
                        continue
                    out.append(Delivery(alert=info, destination=name,
                                        destination_type=dest.type.name, rule=rule,
                                        dedup_key=f"armor-notify-informed-{digest}",
                                        checked=True))
        return out

    def list_blast_radius(self) -> None:
        """A root paged in this intake lists what was folded into it (its description: the
        PagerDuty event's details, a line in Slack and email)."""
        for root, children in self.blast.items():
            _, root_planned, _ = self.failing[root]
            shown = ", ".join(children[:BLAST_LISTED]) + (
                f" and {len(children) - BLAST_LISTED} more" if len(children) > BLAST_LISTED
                else "")
            line = (f"Blast radius: {len(children)} downstream asset"
                    f"{'s' * (len(children) != 1)} failing with it: {shown}")
            for d in root_planned:
                if d.state is State.queued:
                    text = f"{d.alert.description}\n\n{line}" if d.alert.description else line
                    d.alert = d.alert.model_copy(update={"description": text})


BLAST_LISTED = 50
"""Folded assets named in a root's page (more are counted): PagerDuty's event stays small."""


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
