"""Producers that retry: the same alert sent twice (a retried Airflow task, a re-run job) pages
once. An alert without ``id`` gets one derived from its content, so the repeat window recognises
the second copy; counted at loopback receivers."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from fake_pagerduty import FakePagerDuty
from fake_slack import FakeSlack

from armor_notify.alert import Alert, Asset, Change, Severity
from armor_notify.api import Notifier
from armor_notify.delivery import State
from armor_notify.outbox import SqliteOutbox
from armor_notify.plugins import PluginManager

KEY = "a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6"

# No id and no occurred_at: what a simple producer sends. occurred_at then defaults to the time
# of reading, which must not make the two copies different alerts.
ALERT: dict[str, Any] = {
    "event_type": "schema_change",
    "severity": "critical",
    "title": "Column customer_id removed from orders",
    "asset": {"id": "asset-orders", "name": "analytics.public.orders", "environment": "production"},
    "changes": [{"type": "column_removed", "column": "customer_id"}],
}


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as receiver:
        yield receiver


@pytest.fixture
def pagerduty() -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as receiver:
        yield receiver


def notifier(slack: FakeSlack, pagerduty: FakePagerDuty, outbox: SqliteOutbox | None = None,
             **defaults: Any) -> Notifier:
    config = {
        "version": 1,
        "defaults": defaults,
        "destinations": {
            "pd": {"type": "pagerduty", "integration_key": KEY, "url": pagerduty.url,
                   "rate_limit": "none"},
            "chat": {"type": "slack", "webhook_url": slack.url, "rate_limit": "none"},
        },
        "rules": [{"name": "Everything", "event": "schema_change",
                   "destinations": ["pd", "chat"]}],
    }
    return Notifier.from_dict(config, plugins=PluginManager().load(), outbox=outbox,
                              rng=random.Random(7))


def test_the_same_alert_without_an_id_sent_twice_is_delivered_once(
        slack: FakeSlack, pagerduty: FakePagerDuty) -> None:
    with notifier(slack, pagerduty) as nt:
        first = nt.send(nt.parse_alerts(json.loads(json.dumps(ALERT))))
        # The retried job reads its file again: a new object, keys in another order.
        again = dict(reversed(list(json.loads(json.dumps(ALERT)).items())))
        second = nt.send(nt.parse_alerts(again))

    assert [d.state for d in first.deliveries] == [State.delivered, State.delivered]
    assert not any(d.repeat for d in first.deliveries)
    assert all(d.repeat for d in second.deliveries)
    assert [d.id for d in second.deliveries] == [d.id for d in first.deliveries]
    assert second.exit_code == 0
    assert len(pagerduty.requests) == 1  # counted at the receivers: one page ...
    assert len(slack.requests) == 1  # ... and one message


def test_different_content_is_a_different_alert(slack: FakeSlack,
                                                pagerduty: FakePagerDuty) -> None:
    with notifier(slack, pagerduty) as nt:
        nt.send(nt.parse_alerts(ALERT))
        other = nt.send(nt.parse_alerts({**ALERT, "title": "Column email removed from orders"}))
        resolved = nt.send(nt.parse_alerts({**ALERT, "status": "resolved"}))
    assert not any(d.repeat for d in (*other.deliveries, *resolved.deliveries))
    assert len(slack.requests) == 3
    # The resolve closes the page the trigger opened: the dedup key does not depend on the id.
    keys = [event["dedup_key"] for event in pagerduty.events]
    assert [event["event_action"] for event in pagerduty.events] == ["trigger", "trigger",
                                                                      "resolve"]
    assert keys[0] == keys[2]


def test_a_repeat_is_recognised_across_processes_sharing_an_outbox_file(
        slack: FakeSlack, pagerduty: FakePagerDuty, tmp_path: Path) -> None:
    for _ in range(2):  # two runs of the same job, each with its own Notifier on the same file
        with notifier(slack, pagerduty, SqliteOutbox.open(tmp_path)) as nt:
            nt.send(nt.parse_alerts(ALERT))
    assert len(pagerduty.requests) == 1
    assert len(slack.requests) == 1


def test_outside_the_repeat_window_the_same_content_is_sent_again(
        slack: FakeSlack, pagerduty: FakePagerDuty) -> None:
    with notifier(slack, pagerduty, repeat_window=0) as nt:
        nt.send(nt.parse_alerts(ALERT))
        nt.send(nt.parse_alerts(ALERT))
    assert len(slack.requests) == 2


def test_an_explicit_id_still_decides(slack: FakeSlack, pagerduty: FakePagerDuty) -> None:
    with notifier(slack, pagerduty) as nt:
        nt.send(nt.parse_alerts({**ALERT, "id": "run-1"}))
        nt.send(nt.parse_alerts({**ALERT, "id": "run-2"}))  # the producer says: a new alert
        nt.send(nt.parse_alerts({**ALERT, "id": "run-1", "title": "edited"}))  # a repeat
    assert len(slack.requests) == 2


def test_an_alert_built_in_python_gets_an_id_from_its_content_too() -> None:
    def build(title: str) -> Alert:
        return Alert(event_type="schema_change", severity=Severity.critical, title=title,
                     asset=Asset(id="asset-orders", name="analytics.public.orders",
                                 environment="production"),
                     changes=(Change(type="column_removed", column="customer_id"),))

    assert build("a").id == build("a").id != build("b").id
    # Given as the same plain values, it is the same alert as its JSON.
    plain = {k: v for k, v in ALERT.items() if k != "changes"}
    assert Alert(**plain).id == Alert.model_validate_json(json.dumps(plain)).id


@pytest.mark.slow
def test_send_run_twice_on_the_same_file_pages_once(slack: FakeSlack, pagerduty: FakePagerDuty,
                                                    tmp_path: Path) -> None:
    config = tmp_path / "armor-notify.yaml"
    config.write_text(json.dumps({
        "version": 1,
        "destinations": {"pd": {"type": "pagerduty", "integration_key": KEY,
                                "url": pagerduty.url, "rate_limit": "none"}},
        "rules": [{"name": "Everything", "event": "schema_change", "destinations": ["pd"]}],
    }))
    alerts = tmp_path / "alerts.json"
    alerts.write_text(json.dumps([ALERT, {**ALERT, "title": "Another change"}]))
    env = {"ARMOR_NOTIFY_STATE_DIR": str(tmp_path / "state")}
    first = run_cli("send", str(alerts), "--config", str(config), "--json", env=env)
    second = run_cli("send", str(alerts), "--config", str(config), "--json", env=env)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    repeats = [d["repeat"] for d in json.loads(second.stdout)["deliveries"]]
    assert repeats == [True, True]
    assert len(pagerduty.requests) == 2  # two alerts, each paged once
