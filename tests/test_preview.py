"""``armor-notify preview`` and ``send --dry-run --json``: exactly what each destination would be
sent, secrets masked, compared with what loopback receivers then got."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli
from test_end_to_end import ALERTS, PD_KEY, SMTP_PASSWORD, Receivers, local_config
from test_end_to_end import receivers as receivers  # the fixture

from armor_notify.api import Notifier
from armor_notify.errors import ArmorNotifyError

BREAKING = ALERTS / "schema_change_breaking.json"


@pytest.mark.slow  # command-line processes against loopback servers
def test_preview_shows_what_the_receivers_then_get(tmp_path: Path, receivers: Receivers) -> None:
    pd, slack, _, smtp = receivers
    config = local_config(tmp_path, pd, smtp)
    env = receivers.env()
    shown = run_cli("preview", str(BREAKING), "--config", str(config), "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    previews = {p["destination"]: p for p in json.loads(shown.stdout)["previews"]}
    assert set(previews) == {"pagerduty-data-platform", "slack-data-incidents", "email-data-eng"}
    assert pd.requests == [] and slack.requests == [] and smtp.handler.received == []  # nothing sent

    dry = run_cli("send", str(BREAKING), "--config", str(config), "--dry-run", "--json", env=env)
    assert dry.returncode == 0, dry.stderr
    payloads = {d["destination"]: d["payload"] for d in json.loads(dry.stdout)["deliveries"]}
    assert payloads == {name: p["payload"] for name, p in previews.items()}

    sent = run_cli("send", str(BREAKING), "--config", str(config), "--state-dir",
                   str(tmp_path / "state"), env=env)
    assert sent.returncode == 0, sent.stdout + sent.stderr

    event = previews["pagerduty-data-platform"]["payload"]["event"]
    (received,) = pd.events
    assert event["routing_key"] == "a1b2…c5d6"
    assert event == {**received, "routing_key": "a1b2…c5d6"}
    assert previews["pagerduty-data-platform"]["payload"]["request"] == f"POST {pd.url}/v2/enqueue"

    (posted,) = slack.requests
    assert previews["slack-data-incidents"]["payload"]["payload"] == posted.json()

    mail = previews["email-data-eng"]["payload"]
    (got,) = smtp.handler.received
    message = got.message
    for header, value in mail["headers"].items():
        assert str(message[header]) == value, header
    def wire(kind: str) -> str:  # the parts as they arrived, with SMTP's CRLF line ends
        part = message.get_body((kind,))
        assert part is not None
        return str(part.get_content()).replace("\r\n", "\n")

    assert mail["text"] == wire("plain") and mail["html"] == wire("html")
    assert mail["request"].startswith(f"SMTP {smtp.host}:{smtp.port} (starttls)")

    for secret in (PD_KEY, SMTP_PASSWORD, slack.path):
        assert secret not in shown.stdout + dry.stdout


@pytest.mark.slow
def test_preview_for_people_one_destination_and_a_wrong_name(
        tmp_path: Path, receivers: Receivers) -> None:
    pd, _, _, smtp = receivers
    config = local_config(tmp_path, pd, smtp)
    env = receivers.env()
    shown = run_cli("preview", str(BREAKING), "--config", str(config), "-d", "email-data-eng",
                    env=env)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert out.startswith("Alert alert_7f3a9c21: schema_change triggered")
    assert "→ email-data-eng (email, rule Production Breaking Changes" in out
    assert '"Subject": "[AnomalyArmor] CRITICAL: 2 breaking schema changes' in out
    assert "text:\n      CRITICAL · Schema change" in out and "pagerduty" not in out
    wrong = run_cli("preview", str(BREAKING), "--config", str(config), "-d", "email-data",
                    env=env)
    assert wrong.returncode == 2 and "no destination named 'email-data'" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    resolved = run_cli("preview", str(ALERTS / "schema_change_resolved.json"), "--config",
                       str(config), "--json", env=env)
    by_name = {p["destination"]: p for p in json.loads(resolved.stdout)["previews"]}
    assert by_name["email-data-eng"]["not_sent_because"].startswith("send_resolved is off")
    assert by_name["pagerduty-data-platform"]["payload"]["event"]["event_action"] == "resolve"


def test_a_destination_whose_plugin_cannot_preview_says_so() -> None:
    from armor_notify.testing import Capture, build_notifier

    capture = Capture()
    with build_notifier({"version": 1, "destinations": {"c": {"type": "capture"}},
                         "rules": [{"name": "All", "event": "schema_change",
                                    "destinations": ["c"]}]},
                        capture.destination_type) as nt:
        alert = nt.parse_alerts({"event_type": "schema_change", "title": "t",
                                 "asset": {"id": "a", "name": "db.s.t"}})
        (entry,) = nt.preview(alert)
        assert entry["payload"] == {"error": "the Capture plugin cannot show what it sends "
                                             "(its sender has no preview)"}
        with pytest.raises(ArmorNotifyError, match="no destination named 'd'"):
            nt.preview(alert, destination="d")
    assert capture.notifications == []


def test_preview_needs_no_outbox_and_writes_none(tmp_path: Path) -> None:
    notifier = Notifier.from_dict({
        "version": 1, "destinations": {"s": {"type": "slack", "webhook_url":
                                             "https://hooks.slack.com/services/T/B/SECRETSECRET"}},
        "rules": [{"name": "All", "event": "schema_change", "destinations": ["s"]}]})
    with notifier:
        (entry,) = notifier.preview(notifier.parse_alerts(json.loads(BREAKING.read_text())))
    assert entry["payload"]["request"] == "POST https://hooks.slack.com/…"
    assert entry["payload"]["payload"]["blocks"][0]["type"] == "header"
    assert "SECRETSECRET" not in json.dumps(entry)
