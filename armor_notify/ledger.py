"""The check-state ledger: page when a check starts failing, resolve when it passes, and notice
when it stops reporting.

A check result is an alert with a ``check`` (``{id, status: pass|fail|error, run_id?,
expect_every?}``): a native one, or one a source made (dbt tests and freshness, Great
Expectations suites). The ledger keeps one entry per (source, check id, asset id) in the outbox,
next to the deliveries, and judges each result against it inside the outbox's intake
transaction, so every process sharing the outbox sees one history:

- **edges, not levels**: a first failure, or a failure after passing, pages (the alert is routed
  as usual); a failure while failing sends nothing (``check still failing since …: no new
  page``), or a reminder when a matched rule's ``remind_every`` has passed; a pass while failing
  resolves, with the dedup key the trigger used, every destination that got the trigger (after
  ``resolve_after`` consecutive passes); a pass while passing sends nothing.
- ``error`` (the check could not run) counts as a failure, unless ``checks.errors: ignore``.
- A result of a run already recorded (the same ``run_id``) is not counted twice.
- **missing runs**: a check expected every ``expect_every`` (from the result or a matched rule)
  with no result for twice that long raises ``check_missing`` (a workers' chore:
  :class:`~armor_notify.check_intake.CheckRules` with ``sweep``), its own incident, resolved
  when the check reports again. Missing is never a pass: a failing check stays failing.

This module is the ledger itself: its entries, the decision (:func:`judge`) and its SQL, run
through the :class:`~armor_notify.sql.Db` seam over the ``checks`` table, the same on SQLite and
PostgreSQL. A config's check rules are applied at intake by
:class:`armor_notify.check_intake.CheckRules`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .alert import Alert, Check
from .delivery import Delivery, State
from .durations import format_duration
from .times import iso, readable

if TYPE_CHECKING:
    from .sql import Db, Reads

NATIVE = "native"
"""The source of check results given as armor-notify's own JSON."""
MISSED_RUNS = 2
"""A check with no result for this many of its intervals raises ``check_missing``."""
MISSING_EVENT = "check_missing"

Key = tuple[str, str, str]
"""(source, check id, asset id)."""


def key_of(alert: Alert) -> Key:
    assert alert.check is not None
    return (alert.check.source or NATIVE, alert.check.id, alert.asset.id)


@dataclass(frozen=True)
class Route:
    """A destination that got a trigger, and how (the resolve goes the same way)."""

    destination: str
    destination_type: str
    rule: str
    dedup_key: str


@dataclass
class Incident:
    """The trigger a failing (or missing) check sent, and where it went."""

    alert: Alert
    routes: list[Route]
    informed: list[str] = field(default_factory=list)
    """Owners of assets folded into it who were told (once per incident)."""

    def to_json(self) -> str:
        return json.dumps({"alert": self.alert.model_dump(mode="json", by_alias=True),
                           "routes": [r.__dict__ for r in self.routes],
                           "informed": self.informed})

    @classmethod
    def from_json(cls, text: str | None) -> Incident | None:
        if not text:
            return None
        data = json.loads(text)
        return cls(Alert.model_validate(data["alert"], context={"event_types": None}),
                   [Route(**r) for r in data["routes"]], list(data.get("informed", [])))

    def add(self, deliveries: Iterable[Delivery]) -> None:
        """Remember the deliveries that carry the trigger (not those suppressed)."""
        known = {(r.destination, r.dedup_key) for r in self.routes}
        for d in deliveries:
            if d.state in _NOT_SENT:
                continue
            if (d.destination, d.dedup_key) not in known:
                known.add((d.destination, d.dedup_key))
                self.routes.append(Route(d.destination, d.destination_type, d.rule, d.dedup_key))

    def drop(self, deliveries: Iterable[Delivery]) -> None:
        """Forget the routes of these deliveries that were not sent after all."""
        gone = {(d.destination, d.dedup_key) for d in deliveries if d.state in _NOT_SENT}
        self.routes = [r for r in self.routes if (r.destination, r.dedup_key) not in gone]


_NOT_SENT = (State.suppressed, State.skipped, State.failed, State.dead)


@dataclass
class CheckState:
    """One ledger entry."""

    source: str
    check_id: str
    asset_id: str
    state: str
    """``passing`` or ``failing``."""
    since: float
    """When it entered that state."""
    last_status: str
    last_run_at: float
    last_run_id: str | None
    passes: int = 0
    """Consecutive passes while failing (towards ``resolve_after``)."""
    resolve_after: int = 1
    expect_every: float | None = None
    missing_since: float | None = None
    reminded_at: float | None = None
    alert: Alert | None = None
    """The last result, as given (for ``check_missing`` and listings)."""
    incident: Incident | None = None
    missing: Incident | None = None
    folded_into: str | None = None
    """While failing below a failing root (lineage): the root's asset name; it pages on its own
    only if still failing ``lineage.grace`` after the root resolves."""
    release_at: float | None = None
    """When a folded check still failing pages on its own (its root resolved)."""

    @property
    def key(self) -> Key:
        return (self.source, self.check_id, self.asset_id)

    @property
    def overdue_at(self) -> float | None:
        """When the workers' sweep has work with this check: it goes missing, or, folded under
        a root that resolved, it is released."""
        times = [self.release_at] if self.release_at is not None else []
        if self.expect_every is not None and self.missing_since is None:
            times.append(self.last_run_at + MISSED_RUNS * self.expect_every)
        return min(times, default=None)

    @property
    def dedup_keys(self) -> list[str]:
        """The failure's incident's dedup keys, then the missing run's."""
        return [*_keys(self.incident), *_keys(self.missing)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "check": self.check_id, "asset_id": self.asset_id,
            "asset": self.alert.asset.name if self.alert else self.asset_id,
            "state": self.state, "since": iso(self.since), "last_status": self.last_status,
            "last_run_at": iso(self.last_run_at), "last_run_id": self.last_run_id,
            "passes": self.passes, "resolve_after": self.resolve_after,
            "expect_every": self.expect_every,
            "missing_since": iso(self.missing_since) if self.missing_since is not None else None,
            "folded_into": self.folded_into,
            "dedup_keys": _keys(self.incident),
            "missing_dedup_keys": _keys(self.missing),
            "destinations": sorted({r.destination for r in self.incident.routes})
            if self.incident else [],
        }


def _keys(incident: Incident | None) -> list[str]:
    return sorted({r.dedup_key for r in incident.routes}) if incident else []


@dataclass(frozen=True)
class Judgement:
    """What a result does to its ledger entry (before any routing)."""

    action: str
    """``page`` (a new failure), ``hold`` (still failing: no new page, or a reminder when one is
    due), ``resolve``, ``count`` (a pass short of ``resolve_after``), ``nothing`` (passing, or an
    ignored error), ``repeat`` (this run was already recorded)."""
    note: str


def judge(row: CheckState | None, check: Check, *, errors: str, zone: str = "UTC") -> Judgement:
    """The ledger's decision for one result, as ``send`` makes it and ``route`` explains it."""
    if row is not None and check.run_id is not None and row.last_run_id == check.run_id:
        return Judgement("repeat", f"run {check.run_id} of this check was already recorded: "
                                   "nothing new")
    if check.status == "error" and errors == "ignore":
        return Judgement("nothing", "the check could not run (error; checks.errors: ignore): "
                                    "recorded, nothing sent")
    failing_since = f"since {readable(row.since, zone)}" if row is not None else ""
    if check.failing:
        if row is None or row.state == "passing":
            return Judgement("page", "check started failing: paged")
        if row.folded_into is not None:
            return Judgement("hold", f"check still failing {failing_since}, folded into "
                                     f"{row.folded_into}: no page of its own")
        if row.incident is None or not row.incident.routes:
            return Judgement("page", f"check failing {failing_since}, and no page of it got "
                                     "through: paged again")
        return Judgement("hold", f"check still failing {failing_since}: no new page")
    if row is None or row.state == "passing":
        return Judgement("nothing", "check passing: nothing to send")
    if row.folded_into is not None:
        return Judgement("resolve", f"check passed (it was folded into {row.folded_into}: "
                                    "nothing of its own to resolve)")
    if row.passes + 1 >= row.resolve_after:
        return Judgement("resolve", f"check passed: resolves its incident (failing "
                                    f"{failing_since})")
    return Judgement("count", f"check passed {row.passes + 1} of the {row.resolve_after} runs "
                              f"in a row needed to resolve (failing {failing_since})")


# -- SQL ------------------------------------------------------------------------------------------

COLUMNS = ("source, check_id, asset_id, state, since, last_status, last_run_at, last_run_id, "
            "passes, resolve_after, expect_every, missing_since, reminded_at, alert, incident, "
            "missing_incident, folded_into, release_at")


def state_of(row: Sequence[Any]) -> CheckState:
    alert = row[13]
    return CheckState(
        str(row[0]), str(row[1]), str(row[2]), str(row[3]), float(row[4]), str(row[5]),
        float(row[6]), row[7], int(row[8]), int(row[9]),
        None if row[10] is None else float(row[10]),
        None if row[11] is None else float(row[11]),
        None if row[12] is None else float(row[12]),
        Alert.model_validate_json(alert, context={"event_types": None}) if alert else None,
        Incident.from_json(row[14]), Incident.from_json(row[15]),
        None if row[16] is None else str(row[16]), None if row[17] is None else float(row[17]))


def read(db: Reads, key: Key) -> CheckState | None:
    """The entry, its incident without the routes whose page did not get through (the last
    trigger sent there failed or died: a failure that follows pages again)."""
    row = db.one(f"SELECT {COLUMNS} FROM checks WHERE source=? AND check_id=? AND asset_id=?",
                 key)
    if row is None:
        return None
    state = state_of(row)
    if state.state == "failing" and state.incident is not None:
        state.incident.routes = [r for r in state.incident.routes if _got_through(db, r, state)]
    return state


def _got_through(db: Reads, route: Route, state: CheckState) -> bool:
    last = db.one("SELECT state FROM deliveries WHERE destination=? AND dedup_key=? AND "
                  "alert_status='triggered' AND created_at>=? ORDER BY seq DESC LIMIT 1",
                  (route.destination, route.dedup_key, state.since))
    return last is None or last[0] not in ("failed", "dead")  # (none left: purged, kept)


def listing(db: Reads, *, failing: bool = False) -> list[CheckState]:
    """The ledger, failing (and missing) checks first, then by check."""
    where = "WHERE state='failing' OR missing_since IS NOT NULL" if failing else ""
    rows = db.all(f"SELECT {COLUMNS} FROM checks {where} ORDER BY "
                  "CASE WHEN state='failing' OR missing_since IS NOT NULL THEN 0 ELSE 1 END, "
                  "source, check_id, asset_id")
    return [state_of(r) for r in rows]


@dataclass(frozen=True)
class Failing:
    """A check failing now, as lineage folding needs it (read without validating the stored
    alert: this is asked for every intake and every explanation)."""

    key: Key
    asset: str
    """The asset's name."""
    since: float
    routes: tuple[Route, ...]
    """Where its page went."""


def folded_note(root: str, since: float, zone: str, dedup_keys: Iterable[str]) -> str:
    """Why a check is folded into ``root``'s incident (its first dedup key names it)."""
    keys = sorted(set(dedup_keys))
    incident = f", incident {keys[0]}" if keys else ""
    return f"folded into {root} (failing since {readable(since, zone)}{incident})"


def failing(db: Reads, since: float) -> list[Failing]:
    """Checks failing now, not folded into another, that began failing at or after ``since``
    (the roots lineage folds alerts into)."""
    out = []
    for source, check_id, asset_id, began, alert, incident in db.all(
            "SELECT source, check_id, asset_id, since, alert, incident FROM checks WHERE "
            "state='failing' AND folded_into IS NULL AND since>=? ORDER BY since LIMIT 10000",
            (since,)):
        try:
            name = str(json.loads(alert)["asset"]["name"])
            routes = tuple(Route(**r) for r in json.loads(incident)["routes"]) if incident \
                else ()
        except (ValueError, KeyError, TypeError):  # a damaged entry is no root
            continue
        out.append(Failing((str(source), str(check_id), str(asset_id)), name, float(began),
                           routes))
    return out


def next_overdue(db: Reads) -> float | None:
    """When the next check that keeps reporting would become missing."""
    row = db.one("SELECT min(overdue_at) FROM checks WHERE overdue_at IS NOT NULL")
    return None if row is None or row[0] is None else float(row[0])


def write(db: Db, s: CheckState) -> None:
    db.execute(
        f"INSERT INTO checks ({COLUMNS}, overdue_at) VALUES "
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (source, check_id, asset_id) DO UPDATE SET state=excluded.state, "
        "folded_into=excluded.folded_into, release_at=excluded.release_at, "
        "since=excluded.since, last_status=excluded.last_status, "
        "last_run_at=excluded.last_run_at, last_run_id=excluded.last_run_id, "
        "passes=excluded.passes, resolve_after=excluded.resolve_after, "
        "expect_every=excluded.expect_every, missing_since=excluded.missing_since, "
        "reminded_at=excluded.reminded_at, alert=excluded.alert, incident=excluded.incident, "
        "missing_incident=excluded.missing_incident, overdue_at=excluded.overdue_at",
        (*s.key, s.state, s.since, s.last_status, s.last_run_at, s.last_run_id, s.passes,
         s.resolve_after, s.expect_every, s.missing_since, s.reminded_at,
         s.alert.model_dump_json(by_alias=True) if s.alert else None,
         s.incident.to_json() if s.incident else None,
         s.missing.to_json() if s.missing else None, s.folded_into, s.release_at,
         s.overdue_at))


def missing_alert(row: CheckState, zone: str) -> Alert:
    """The ``check_missing`` alert of a check that stopped reporting: its own incident (a dedup
    key of the check), about the asset of its last result."""
    assert row.alert is not None and row.expect_every is not None
    last = row.alert
    digest = hashlib.sha256("\x00".join(row.key).encode()).hexdigest()[:24]
    every = format_duration(row.expect_every)
    return Alert.model_validate({
        "id": f"check_missing:{digest}:{int(row.last_run_at)}",
        "event_type": MISSING_EVENT,
        "severity": "warning",
        "title": f"Check {row.check_id} on {last.asset.name} has not reported since "
                 f"{readable(row.last_run_at, zone)} (expected every {every})",
        "description": f"No result of {row.source} check {row.check_id} for "
                       f"{MISSED_RUNS}× its interval ({every}). Its last result was "
                       f"{row.last_status}; the check is {row.state}.",
        "asset": last.asset.model_dump(by_alias=True, exclude_none=True),
        "dedup_key": f"armor-notify-missing-{digest}",
        **({"link": last.link} if last.link else {}),
    }, context={"event_types": None})
