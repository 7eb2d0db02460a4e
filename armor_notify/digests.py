"""Digests: the summary delivery that carries a digest's alerts, and its headline.

A destination with a digest collects alerts (the noise gate decides which, see
:mod:`armor_notify.gate`); when the window closes or fills, the outbox turns the collected
deliveries into one delivery made here, whose alert is a summary titled with
:func:`digest_headline` and whose ``digest`` holds every member's alert. The event types are
worded as in every message (:func:`armor_notify.message.event_noun`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone

from .alert import Alert, Asset, Severity
from .delivery import Delivery
from .message import event_noun


def digest_headline(alerts: Sequence[Alert]) -> str:
    """``3 schema changes in 2 tables (2 breaking)``; mixed events: ``12 alerts in 5 assets``."""
    count = len(alerts)
    assets = len({a.asset.id for a in alerts})
    kinds = {a.event_type for a in alerts}
    noun = (event_noun(kinds.pop(), count) if len(kinds) == 1
            else "alert" if count == 1 else "alerts")
    where = "table" if all((a.asset.kind or "table") in ("table", "view") for a in alerts) \
        else "asset"
    text = f"{count} {noun} in {assets} {where}{'s' if assets != 1 else ''}"
    notes = []
    breaking = sum(1 for a in alerts if a.breaking_changes)
    if breaking:
        notes.append(f"{breaking} breaking")
    resolved = sum(1 for a in alerts if a.status == "resolved")
    if resolved:
        notes.append(f"{resolved} resolved")
    return text + (f" ({', '.join(notes)})" if notes else "")


def make_digest(members: Sequence[Delivery], now: float) -> Delivery:
    """One queued delivery that carries every member's alert. Its dedup key is its own, unless
    every member belongs to one incident: then the incident's (a destination that threads
    posts it in the incident's thread)."""
    alerts = tuple(m.alert for m in members)
    first = members[0]
    rules = {m.rule for m in members}
    severity = max((a.severity for a in alerts), key=lambda s: s.rank, default=Severity.info)
    summary = Alert.model_validate({
        "id": f"digest_{first.destination}_{int(now)}",
        "event_type": Counter(a.event_type for a in alerts).most_common(1)[0][0],
        "severity": severity,
        "title": digest_headline(alerts),
        "asset": Asset(id="digest", name=f"digest for {first.destination}"),
        "occurred_at": datetime.fromtimestamp(now, timezone.utc),
    }, context={"event_types": None})
    digest = Delivery(alert=summary, destination=first.destination,
                      destination_type=first.destination_type,
                      rule=rules.pop() if len(rules) == 1 else "digest",
                      dedup_key="", digest=alerts)
    keys = {m.dedup_key for m in members}
    digest.dedup_key = keys.pop() if len(keys) == 1 else f"anomalyarmor-digest-{digest.id}"
    digest.created_at = now
    digest.next_attempt_at = now
    return digest

