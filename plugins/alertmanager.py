"""The ``alertmanager`` source: Prometheus Alertmanager's webhook payload (version 4) as alerts.

Point an Alertmanager ``webhook_configs`` receiver at ``armor-notify serve`` (or save a payload
and ``armor-notify send payload.json --source alertmanager``). Each alert in the payload becomes
one armor-notify alert; a resolve closes what its trigger opened, because both carry the
alert's ``fingerprint`` in their dedup key. The mapping (``docs/sources.md`` has it as a table):

- ``status``: ``firing`` → ``triggered``, ``resolved`` → ``resolved``;
- ``id``: ``alertmanager:<fingerprint>:<startsAt>``, the same for a firing and its resolve, new
  when the alert fires again later; ``dedup_key``: ``alertmanager-<fingerprint>``;
- ``event_type``: the ``event_type`` label, else ``metric_anomaly``; ``severity``: the
  ``severity`` label (``critical``/``page``/``error``/``high`` → critical, ``warning``/``warn``
  → warning, ``info``/``low``/``none`` → info; otherwise warning);
- ``title``: the ``summary`` annotation, else the ``alertname`` label; ``description``: the
  ``description`` annotation (then ``message``);
- the asset: ``name`` from the ``asset`` label, else ``table``, ``instance``, ``job``, the
  alert name; ``id`` from ``asset_id``, else the name; ``data_source``, ``environment`` (or
  ``env``), ``schema`` and ``kind`` from the labels of those names; the ``tags`` label
  (comma-separated) gives plain tags, and every other label is a tag ``name=value``;
- ``freshness``: ``delay_hours`` and ``threshold_hours`` from the labels or annotations of those
  names, when ``delay_hours`` is there;
- ``link``: ``generatorURL`` when it is https (Prometheus's own is often plain http, which alert
  links may not be); ``occurred_at``: ``startsAt``, or ``endsAt`` for a resolve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from armor_notify import hookimpl
from armor_notify.sources import Source, SourceAlert, SourceError, SourceInput

NEVER = "0001-01-01T00:00:00Z"
"""Alertmanager's ``endsAt`` while an alert fires."""
STATUS = {"firing": "triggered", "resolved": "resolved"}
SEVERITY = {"critical": "critical", "page": "critical", "error": "critical", "high": "critical",
            "warning": "warning", "warn": "warning", "info": "info", "low": "info",
            "none": "info"}
ASSET_NAME_LABELS = ("asset", "table", "instance", "job")
ASSET_LABELS = {"data_source": "data_source", "environment": "environment", "env": "environment",
                "schema": "schema", "kind": "kind"}
MAPPED = {"alertname", "severity", "event_type", "asset", "asset_id", "table", "tags",
          "delay_hours", "threshold_hours", *ASSET_LABELS}


def read_payload(given: SourceInput) -> Sequence[SourceAlert]:
    """One native alert per alert in the webhook payload."""
    payload = given.read_json()
    if not isinstance(payload, dict):
        raise given.fail("expected Alertmanager's webhook payload: a JSON object with "
                         "\"version\": \"4\" and \"alerts\"")
    version = payload.get("version")
    if version != "4":
        raise given.fail(f"payload version {version!r}: this source reads Alertmanager's webhook "
                         "payload version \"4\"", "version")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise given.fail("expected a list of alerts", "alerts")
    made: list[SourceAlert] = []
    problems = []
    for i, item in enumerate(alerts):
        where = f"alerts[{i}]"
        try:
            made.append(SourceAlert(where, _alert(item, where, given)))
        except SourceError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SourceError(problems)
    return made


def _alert(item: Any, where: str, given: SourceInput) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise given.fail("expected an alert object", where)
    labels = _strings(item.get("labels", {}), f"{where}.labels", given)
    annotations = _strings(item.get("annotations", {}), f"{where}.annotations", given)
    status = item.get("status")
    if status not in STATUS:
        raise given.fail(f"status {status!r}: expected \"firing\" or \"resolved\"",
                         f"{where}.status")
    fingerprint = item.get("fingerprint")
    if not isinstance(fingerprint, str) or not fingerprint.strip():
        raise given.fail("missing its fingerprint (Alertmanager sends one with every alert)",
                         f"{where}.fingerprint")
    starts = _time(item.get("startsAt"), f"{where}.startsAt", given)
    ends = item.get("endsAt")
    name = labels.get("alertname") or f"alert {fingerprint}"
    asset_name = next((labels[k] for k in ASSET_NAME_LABELS if labels.get(k)), name)
    asset: dict[str, Any] = {"id": labels.get("asset_id") or asset_name, "name": asset_name}
    for label, field in ASSET_LABELS.items():
        if labels.get(label) and field not in asset:
            asset[field] = labels[label]
    plain = [t.strip() for t in labels.get("tags", "").split(",") if t.strip()]
    asset["tags"] = plain + sorted(f"{k}={v}" for k, v in labels.items() if k not in MAPPED)
    resolved_at = ends if isinstance(ends, str) and ends.strip() and ends != NEVER else None
    alert: dict[str, Any] = {
        "id": f"alertmanager:{fingerprint}:{starts}",
        "event_type": labels.get("event_type") or "metric_anomaly",
        "status": STATUS[status],
        "severity": SEVERITY.get(labels.get("severity", "").strip().lower(), "warning"),
        "title": annotations.get("summary") or name,
        "asset": asset,
        "dedup_key": f"alertmanager-{fingerprint}",
        "occurred_at": resolved_at if status == "resolved" and resolved_at else starts,
    }
    delay = labels.get("delay_hours") or annotations.get("delay_hours")
    if delay:  # how late the data is, for freshness rules (min_delay_hours)
        threshold = labels.get("threshold_hours") or annotations.get("threshold_hours")
        alert["freshness"] = {"delay_hours": delay,
                              **({"threshold_hours": threshold} if threshold else {})}
    description = annotations.get("description") or annotations.get("message")
    if description:
        alert["description"] = description
    link = item.get("generatorURL")
    if isinstance(link, str) and link.lower().startswith("https://"):
        alert["link"] = link
    return alert


def _strings(value: Any, where: str, given: SourceInput) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise given.fail("expected an object of strings", where)
    return {str(k): v for k, v in value.items()}


def _time(value: Any, where: str, given: SourceInput) -> str:
    if not isinstance(value, str) or not value.strip():
        raise given.fail("expected an RFC 3339 time", where)
    return value


ALERTMANAGER = Source(
    name="alertmanager",
    description="Prometheus Alertmanager's webhook payload (version 4)",
    read=read_payload,
)


@hookimpl
def register_sources(register: Callable[[Source], None]) -> None:
    """Register the ``alertmanager`` source."""
    register(ALERTMANAGER)

