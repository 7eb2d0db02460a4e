"""A third-party alert source, installed as its own distribution: Nagios-style notifications.

Reads ``{"notifications": [{"host": ..., "service": ..., "state": "CRITICAL"|"OK", ...}]}``.
"""

from __future__ import annotations

from armor_notify import Source, SourceAlert, SourceInput, hookimpl


def read(given: SourceInput) -> list[SourceAlert]:
    data = given.read_json()
    items = data.get("notifications") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise given.fail("expected {\"notifications\": [...]}", "notifications")
    made = []
    for i, item in enumerate(items):
        where = f"notifications[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("host"), str):
            raise given.fail("expected a notification with a host", where)
        service = str(item.get("service", "host"))
        made.append(SourceAlert(where, {
            "id": f"nagios:{item['host']}:{service}",
            "event_type": "metric_anomaly",
            "status": "resolved" if item.get("state") == "OK" else "triggered",
            "severity": "critical" if item.get("state") == "CRITICAL" else "warning",
            "title": f"{service} on {item['host']} is {item.get('state', 'UNKNOWN')}",
            "asset": {"id": item["host"], "name": item["host"]},
        }))
    return made


NAGIOS = Source("nagios", "Nagios notifications (JSON)", read)


@hookimpl
def register_sources(register):  # type: ignore[no-untyped-def]
    register(NAGIOS)
