"""The example config, pointed at loopback receivers for PagerDuty, Slack and SMTP, driven through
the real ``armor-notify`` command: what a new user sees, checked on the wire."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml
from conftest import EXAMPLES, run_cli
from fake_pagerduty import FakePagerDuty, FakeResponse
from fake_slack import FakeSlack
from fake_smtp import FakeSMTPServer, ignore_known_aiosmtpd_warnings, starttls_server

PD_KEY = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"
SMTP_PASSWORD = "s3cret-app-password"
ALERTS = EXAMPLES / "alerts"


class Receivers(NamedTuple):
    pd: FakePagerDuty
    slack: FakeSlack
    dev: FakeSlack
    smtp: FakeSMTPServer

    def env(self) -> dict[str, str]:
        return {"PAGERDUTY_INTEGRATION_KEY": PD_KEY, "SLACK_WEBHOOK_URL": self.slack.url,
                "SLACK_DEV_WEBHOOK_URL": self.dev.url, "SMTP_PASSWORD": SMTP_PASSWORD}


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[Receivers]:
    ignore_known_aiosmtpd_warnings()
    with FakePagerDuty() as pd, FakeSlack() as slack, FakeSlack("/services/TDEV/BDEV/dev") as dev, \
            starttls_server(tmp_path, password=SMTP_PASSWORD) as smtp:
        yield Receivers(pd, slack, dev, smtp)


def local_config(tmp_path: Path, pd: FakePagerDuty, smtp: FakeSMTPServer) -> Path:
    """The example config with only the endpoints changed to the loopback receivers."""
    config = yaml.safe_load((EXAMPLES / "armor-notify.yaml").read_text())
    dests = config["destinations"]
    dests["pagerduty-data-platform"].pop("region")
    dests["pagerduty-data-platform"].update(url=pd.url, retry_backoff=0.01)
    dests["email-data-eng"].update(host=smtp.host, port=smtp.port, ca_file=str(smtp.ca_file))
    path = tmp_path / "armor-notify.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def send(path: Path, config: Path, environ: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    res = run_cli("send", str(path), "--config", str(config), "--json", env=environ)
    assert "Traceback" not in res.stderr
    return res.returncode, json.loads(res.stdout), res.stdout + res.stderr


def test_breaking_change_pages_posts_and_mails_then_resolves(
        tmp_path: Path, receivers: Receivers) -> None:
    pd, slack, _, smtp = receivers
    config = local_config(tmp_path, pd, smtp)
    environ = receivers.env()

    code, doc, text = send(ALERTS / "schema_change_breaking.json", config, environ)
    assert code == 0, text
    states = {d["destination"]: d["state"] for d in doc["deliveries"]}
    assert states == {"pagerduty-data-platform": "delivered", "slack-data-incidents": "delivered",
                      "email-data-eng": "delivered"}
    (trigger,) = pd.requests
    assert trigger.path == "/v2/enqueue" and trigger.schema_errors == []
    key = "anomalyarmor-production-breaking-changes-schema_change-ast_orders_01"
    assert trigger.body["dedup_key"] == key and trigger.body["event_action"] == "trigger"
    assert trigger.body["payload"]["severity"] == "critical"
    assert trigger.body["payload"]["source"] == "anomalyarmor"
    assert trigger.body["payload"]["custom_details"]["rule"] == "Production Breaking Changes"
    assert doc["deliveries"][0]["details"]["dedup_key"] == key
    assert len(slack.requests) == 1
    assert "analytics.public.orders" in slack.requests[0].body.decode()
    (mail,) = smtp.handler.received
    assert mail.login == "alerts@example.com" and mail.tls
    assert mail.message["Subject"].startswith("[AnomalyArmor] CRITICAL: 2 breaking schema changes")
    for secret in (PD_KEY, SMTP_PASSWORD, "/services/"):
        assert secret not in text

    code, doc, text = send(ALERTS / "schema_change_resolved.json", config, environ)
    assert code == 0, text
    states = {d["destination"]: d["state"] for d in doc["deliveries"]}
    assert states["email-data-eng"] == "suppressed"  # send_resolved is off for email
    resolve = pd.requests[1]
    assert resolve.body == {"routing_key": PD_KEY, "dedup_key": key, "event_action": "resolve"}
    assert len(slack.requests) == 2 and len(smtp.handler.received) == 1


def test_a_revoked_key_fails_once_with_the_hint_and_others_still_deliver(
        tmp_path: Path, receivers: Receivers) -> None:
    pd, _, _, smtp = receivers
    pd.revoked_keys.add(PD_KEY)
    config = local_config(tmp_path, pd, smtp)
    code, doc, text = send(ALERTS / "freshness_violation.json", config, receivers.env())
    assert code == 1
    got = {d["destination"]: d for d in doc["deliveries"]}
    pd_delivery = got["pagerduty-data-platform"]
    assert pd_delivery["state"] == "failed" and pd_delivery["attempts"] == 1
    assert "400" in pd_delivery["reason"]
    assert "integration" in (pd_delivery["hint"] or "").lower()
    assert got["slack-data-incidents"]["state"] == "delivered"
    assert len(pd.requests) == 1  # a 400 is never retried
    assert PD_KEY not in text


def test_rate_limited_and_unavailable_pagerduty_recovers_with_one_dedup_key(
        tmp_path: Path, receivers: Receivers) -> None:
    pd, _, _, smtp = receivers
    pd.script(FakeResponse.too_many_requests(), FakeResponse.server_error(503))
    config = local_config(tmp_path, pd, smtp)
    code, doc, text = send(ALERTS / "freshness_violation.json", config, receivers.env())
    assert code == 0, text
    pd_delivery = next(d for d in doc["deliveries"] if d["destination"] == "pagerduty-data-platform")
    assert [h["status"] for h in pd_delivery["history"]] == ["retry", "retry", "delivered"]
    assert [r.status for r in pd.requests] == [429, 503, 202]
    assert len({r.body["dedup_key"] for r in pd.requests}) == 1


@pytest.mark.slow
def test_the_test_command_against_pagerduty(
        tmp_path: Path, receivers: Receivers) -> None:
    pd, _, _, smtp = receivers
    config = local_config(tmp_path, pd, smtp)
    res = run_cli("test", "pagerduty-data-platform", "--config", str(config), "--resolve",
                  env=receivers.env())
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "Success! Test event sent to PagerDuty"
    assert lines[1].startswith("Dedup Key: anomalyarmor-test-") and len(lines[1]) == 34
    assert [r.body["event_action"] for r in pd.requests] == ["trigger", "resolve"]
    assert pd.requests[0].body["dedup_key"] == pd.requests[1].body["dedup_key"] == lines[1][11:]


def test_slack_429_waits_for_retry_after_before_the_next_attempt(
        tmp_path: Path, receivers: Receivers) -> None:
    from datetime import datetime

    from fake_slack import rate_limited

    pd, slack, _, smtp = receivers
    slack.script(rate_limited("1"), rate_limited("1"))
    config = local_config(tmp_path, pd, smtp)
    code, doc, text = send(ALERTS / "metric_anomaly.json", config, receivers.env())
    assert code == 0, text
    (delivery,) = doc["deliveries"]
    assert delivery["destination"] == "slack-data-incidents" and delivery["state"] == "delivered"
    starts = [datetime.fromisoformat(h["started_at"]) for h in delivery["history"]]
    assert [h["status"] for h in delivery["history"]] == ["retry", "retry", "delivered"]
    assert all((later - earlier).total_seconds() >= 1.0
               for earlier, later in itertools.pairwise(starts))
    assert len(slack.requests) == 3


def test_successive_sends_reuse_one_connection() -> None:
    from armor_notify.api import Notifier
    from armor_notify.plugins import PluginManager

    with FakeSlack() as slack:
        config = {"version": 1,
                  "destinations": {"s": {"type": "slack", "webhook_url": slack.url,
                                         "rate_limit": "none"}},
                  "rules": [{"name": "r", "event": "schema_change", "destinations": ["s"]}]}
        with Notifier.from_dict(config, plugins=PluginManager().load()) as notifier:
            for i in range(5):
                alert = {"id": f"a{i}", "event_type": "schema_change", "title": f"t{i}",
                         "asset": {"id": "x", "name": "db.s.x"}}
                report = notifier.send(notifier.parse_alerts(alert))
                assert report.deliveries[0].state.value == "delivered"
        assert len(slack.requests) == 5
        assert len({r.client_port for r in slack.requests}) == 1  # kept alive, not reopened
