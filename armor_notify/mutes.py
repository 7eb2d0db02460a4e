"""Mutes: "quiet about these assets until then, because of this work" (``armor-notify mute``,
``armor-notify run --mute … -- CMD``), kept in the outbox so every process honours them.

A mute names its scope (asset patterns, tags, rules: every one given must match), a reason, who
set it (``$USER``) and when it ends; an end is mandatory. Alerts under a mute are **held, not
dropped**: a trigger is written to the outbox as a delivery due when the mute ends, so what is
still failing then is delivered. A resolve of a held trigger settles both (nothing was sent, so
nothing needs resolving), and resolves and acknowledgements themselves are never held. Lifting a
mute early (``unmute``, or ``run``'s command exiting) makes what it held due at once, unless
another mute still covers it or its rule's operating hours or a blackout still hold it.

The SQL here runs inside the backends' transactions, through the :class:`~armor_notify.outbox_core.Db`
seam, over the ``mutes`` table and the ``mute_id`` column of ``deliveries``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .durations import format_duration
from .times import readable

if TYPE_CHECKING:
    from .delivery import Delivery
    from .matching import AssetGlobs
    from .noise import Decision
    from .sql import Db, Reads

Closed = Callable[[str, float], "Decision | None"]
"""A rule's name and a time → the hold its schedule or a blackout puts on it then."""

MAX_MUTE = 30 * 86400.0
"""The longest a mute may last (30 days): a forgotten mute must not silence a team for good."""


@dataclass(frozen=True)
class MuteScope:
    """What a mute covers: assets (glob patterns, as a rule's ``scope.assets``: with a dot the
    qualified name, without one the table's name), tags (any of them) and rule names. Every part
    given must match; at least one is given."""

    assets: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.assets or self.tags or self.rules)

    @cached_property
    def _assets(self) -> AssetGlobs | None:
        from .matching import AssetGlobs
        from .rules import Patterns

        return AssetGlobs(Patterns(include=self.assets)) if self.assets else None

    def covers(self, delivery: Delivery) -> bool:
        asset = delivery.alert.asset
        if self._assets is not None and not self._assets.matches(asset.name, asset.table_name):
            return False
        if self.tags and not {t.lower() for t in self.tags} & {t.lower() for t in asset.tags}:
            return False
        return not self.rules or delivery.rule.lower() in {r.lower() for r in self.rules}

    def describe(self) -> str:
        parts = [*(f"asset {a}" for a in self.assets), *(f"tag {t}" for t in self.tags),
                 *(f"rule {r}" for r in self.rules)]
        return ", ".join(parts)

    def as_json(self) -> str:
        return json.dumps({"assets": list(self.assets), "tags": list(self.tags),
                           "rules": list(self.rules)})

    @classmethod
    def from_json(cls, text: str) -> MuteScope:
        data = json.loads(text)
        return cls(tuple(data.get("assets", ())), tuple(data.get("tags", ())),
                   tuple(data.get("rules", ())))


@dataclass(frozen=True)
class Mute:
    """One stored mute."""

    id: int
    scope: MuteScope
    reason: str
    author: str
    created_at: float
    expires_at: float
    lifted_at: float | None = None
    held: int = 0
    """Deliveries it holds now (when read for listing)."""

    @property
    def ends_at(self) -> float:
        return self.expires_at if self.lifted_at is None else min(self.expires_at, self.lifted_at)

    def active(self, at: float) -> bool:
        return self.created_at <= at < self.ends_at

    def state(self, at: float) -> str:
        if self.lifted_at is not None and self.lifted_at <= at:
            return "lifted"
        return "active" if self.active(at) else ("expired" if at >= self.expires_at else "future")

    def holding(self, zone: str = "UTC") -> str:
        """``muted by #12 until 2026-11-30 14:00 UTC: backfill``."""
        return f"muted by #{self.id} until {readable(self.expires_at, zone)}: {self.reason}"

    def as_dict(self, at: float) -> dict[str, Any]:
        from .times import iso

        return {"id": self.id, "assets": list(self.scope.assets), "tags": list(self.scope.tags),
                "rules": list(self.scope.rules), "reason": self.reason, "author": self.author,
                "created_at": iso(self.created_at), "expires_at": iso(self.expires_at),
                "lifted_at": iso(self.lifted_at) if self.lifted_at is not None else None,
                "state": self.state(at), "held": self.held,
                "length": format_duration(round(self.expires_at - self.created_at))}


# -- SQL, over a backend's transaction ----------------------------------------------------------

_COLUMNS = "id, scope, reason, author, created_at, expires_at, lifted_at"


def _mute(row: Sequence[Any], held: int = 0) -> Mute:
    return Mute(int(row[0]), MuteScope.from_json(str(row[1])), str(row[2]), str(row[3]),
                float(row[4]), float(row[5]), None if row[6] is None else float(row[6]), held)


def add(db: Db, scope: MuteScope, reason: str, author: str, now: float, until: float) -> Mute:
    """Store a new mute; it holds what arrives from now on."""
    row = db.one(f"INSERT INTO mutes (scope, reason, author, created_at, expires_at) VALUES "
                 f"(?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
                 (scope.as_json(), reason, author, now, until))
    assert row is not None
    return _mute(row)


def active(db: Reads, now: float) -> list[Mute]:
    """The mutes in force at ``now``."""
    return [_mute(r) for r in db.all(
        f"SELECT {_COLUMNS} FROM mutes WHERE created_at<=? AND expires_at>? AND "
        "(lifted_at IS NULL OR lifted_at>?) ORDER BY id", (now, now, now))]


def listing(db: Reads, now: float, *, ended: bool) -> list[Mute]:
    """Mutes in force (with ``ended``, also those lifted or expired), newest first, each with
    how many deliveries it holds now."""
    where = "" if ended else "WHERE expires_at>? AND (lifted_at IS NULL OR lifted_at>?)"
    rows = db.all(f"SELECT {_COLUMNS} FROM mutes {where} ORDER BY id DESC LIMIT 1000",
                  () if ended else (now, now))
    held: dict[Any, Any] = dict(db.all(
        "SELECT mute_id, count(*) FROM deliveries WHERE mute_id IS NOT NULL AND "
        "state='queued' AND attempt=0 AND run_at>? GROUP BY mute_id", (now,)))
    return [_mute(r, int(held.get(r[0], 0))) for r in rows]


def settle_held(db: Db, delivery: Delivery, now: float) -> None:
    """A resolve about to be written whose trigger is still held by a mute: both end, since
    nothing was sent (the held trigger is written off as resolved while muted)."""
    from .delivery import State

    if delivery.alert.status != "resolved" or delivery.state is not State.queued:
        return
    rows = db.all("SELECT id, mute_id FROM deliveries WHERE destination=? AND dedup_key=? AND "
                  "state='queued' AND attempt=0 AND mute_id IS NOT NULL AND run_at>?",
                  (delivery.destination, delivery.dedup_key, now))
    if not rows:
        return
    where, ids = db.among("id", [r[0] for r in rows])
    mute = rows[0][1]
    db.execute(f"UPDATE deliveries SET state='suppressed', finalized_at=?, reason=? WHERE {where}",
               (now, f"resolved while muted by #{mute}: never sent", *ids))
    delivery.finish(State.suppressed, f"its trigger was held by mute #{mute} and never sent: "
                                      "nothing to resolve")


def lift(db: Db, mute_id: int, now: float, zone: str,
         closed: Closed | None = None) -> tuple[Mute | None, list[str]]:
    """End a mute now; what it held is due at once, or moves to another mute that still covers
    it, or waits for its rule's operating hours or a blackout to end (``closed``: the intake
    policy's answer for a rule, see :meth:`armor_notify.gate.Gate.closed_until`). Returns the
    mute (``None``: no such mute) and the ids of the deliveries released now."""
    from .alert import Alert
    from .delivery import Delivery

    row = db.one(f"SELECT {_COLUMNS} FROM mutes WHERE id=?", (mute_id,))
    if row is None:
        return None, []
    mute = _mute(row)
    if mute.ends_at > now:
        db.execute("UPDATE mutes SET lifted_at=? WHERE id=?", (now, mute_id))
        mute = replace(mute, lifted_at=now)
    others = [m for m in active(db, now) if m.id != mute_id]
    released: list[str] = []
    for id_, alert_json, rule, destination in db.all(
            "SELECT id, alert, rule, destination FROM deliveries WHERE mute_id=? AND "
            "state='queued' AND attempt=0 AND run_at>?", (mute_id, now)):
        try:
            alert = Alert.model_validate_json(alert_json, context={"event_types": None})
        except ValueError:
            alert = None
        probe = Delivery(alert=alert, destination=destination, destination_type="", rule=rule,
                         dedup_key="") if alert is not None else None
        still = [m for m in others if probe is not None and m.scope.covers(probe)]
        hold = closed(rule, now) if closed is not None and not still else None
        if still:
            last = max(still, key=lambda m: m.expires_at)
            db.execute("UPDATE deliveries SET run_at=?, mute_id=?, reason=? WHERE id=?",
                       (last.expires_at, last.id, last.holding(zone), id_))
        elif hold is not None and (hold.until or 0.0) > now:
            db.execute("UPDATE deliveries SET run_at=?, mute_id=NULL, reason=? WHERE id=?",
                       (hold.until, f"mute #{mute_id} was lifted; {hold.reason}", id_))
        else:
            db.execute("UPDATE deliveries SET run_at=?, reason=? WHERE id=?",
                       (now, f"released: mute #{mute_id} was lifted", id_))
            released.append(str(id_))
    return mute, released
