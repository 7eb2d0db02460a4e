"""A server that echoes a destination's secret back never gets it shown or stored.

The fakes have echo modes: Slack refuses with ``403 invalid_token`` quoting the webhook URL (as
is, percent-encoded, JSON-escaped), its path and its token, also in the reason phrase; PagerDuty
accepts with the integration key as ``dedup_key`` and in ``message``, or refuses with a 400 whose
message and ``errors`` quote it; the SMTP server's 535 reply quotes the password it was sent.
``send``, ``test``, ``worker`` and ``outbox list/show`` then run against them, and their output and
every file of the state directory (the SQLite WAL included) are searched for every form of each
secret.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from armor_notify_plugins.email import EmailConfig, EmailSender
from armor_notify_plugins.pagerduty import PagerDutyConfig
from armor_notify_plugins.pagerduty_sender import PagerDutySender
from armor_notify_plugins.slack import SlackConfig
from armor_notify_plugins.slack_sender import SlackSender
from conftest import run_cli
from fake_pagerduty import FakePagerDuty
from fake_slack import FakeSlack
from fake_smtp import FakeSMTPServer, ignore_known_aiosmtpd_warnings, starttls_server

from armor_notify import Alert, Notification, Outcome
from armor_notify.http import Redactor

KEY = "Q7x2mK9pL4vN8rT1wZ5yB3cD6fH0jS2a"
PASSWORD = "pw/with spaces&\"quotes\"+ünïcode"
WRONG_PASSWORD = "not-the-password/&\"é\"-91c3"
SLACK_PATH = "/services/T0SECRET1/B0SECRET2/tokenTOKENtoken1234567890"

ALERT: dict[str, Any] = {
    "id": "alert_echo_1",
    "event_type": "schema_change",
    "severity": "critical",
    "title": "Column removed from orders",
    "asset": {"id": "tbl_1", "name": "analytics.public.orders", "environment": "production"},
    "changes": [{"type": "column_removed", "column": "email"}],
}


def forms(secret: str) -> set[str]:
    """Every way a secret could be written down: as is, percent-encoded, JSON-escaped."""
    dumped = json.dumps(secret)[1:-1]
    return {secret, quote(secret, safe=""), quote(secret, safe="/:"), dumped,
            dumped.replace("/", "\\/"), json.dumps(secret, ensure_ascii=False)[1:-1]}


def secrets_of(slack_url: str, password: str) -> set[str]:
    """Each secret, its pieces that are secret on their own, and every form of them."""
    token = SLACK_PATH.rsplit("/", 1)[1]
    found: set[str] = set()
    for secret in (KEY, slack_url, SLACK_PATH, token, password):
        found |= forms(secret)
    return found


def assert_nothing_secret(text: str, secrets: set[str], where: str) -> None:
    for secret in secrets:
        assert secret.lower() not in text.lower(), f"{secret!r} in {where}"


def notification() -> Notification:
    return Notification(alert=Alert.model_validate(ALERT), destination="d", rule="r",
                        dedup_key="dedup-echo-1", source="anomalyarmor", link_text="View",
                        timeout=5)


def shown(outcome: Outcome) -> str:
    return json.dumps([outcome.reason, outcome.hint, dict(outcome.details)], ensure_ascii=False)


@pytest.fixture
def smtp_echo(tmp_path: Path) -> Iterator[FakeSMTPServer]:
    ignore_known_aiosmtpd_warnings()
    with starttls_server(tmp_path, password=PASSWORD, echo_password=True) as server:
        yield server


# -- each sender ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["accepted", "invalid"])
def test_pagerduty_never_repeats_the_key_it_is_sent_back(mode: str) -> None:
    with FakePagerDuty() as fake:
        fake.echo_key = mode
        sender = PagerDutySender(PagerDutyConfig(integration_key=KEY, url=fake.url))  # type: ignore[arg-type]
        outcome = sender.send(notification())
        sender.close()
    assert outcome.status == ("delivered" if mode == "accepted" else "failed")
    assert_nothing_secret(shown(outcome), forms(KEY), "the outcome")
    if mode == "accepted":  # the echoed dedup key is not kept: resolving uses the one sent
        assert outcome.details["dedup_key"] == "dedup-echo-1"
    else:
        assert "Invalid routing key" in outcome.reason


def test_slack_never_repeats_the_webhook_url_its_path_or_its_token() -> None:
    with FakeSlack(SLACK_PATH) as fake:
        fake.echo_secret = True
        sender = SlackSender(SlackConfig(webhook_url=fake.url))  # type: ignore[arg-type]
        outcome = sender.send(notification())
        sender.close()
    assert outcome.status == "failed" and outcome.reason.startswith("invalid_token")
    assert_nothing_secret(shown(outcome), secrets_of(fake.url, PASSWORD) - forms(PASSWORD),
                          "the outcome")


def test_email_never_repeats_the_password_a_server_quotes(smtp_echo: FakeSMTPServer) -> None:
    config = EmailConfig.model_validate(smtp_echo.config(password=WRONG_PASSWORD))
    outcome = EmailSender(config).send(notification())
    assert outcome.status == "failed" and "535" in outcome.reason
    assert_nothing_secret(shown(outcome), forms(WRONG_PASSWORD), "the outcome")


def test_the_redactor_masks_every_form_and_piece() -> None:
    url = f"https://hooks.slack.com{SLACK_PATH}"
    redactor = Redactor([url, KEY, PASSWORD])
    for secret in secrets_of(url, PASSWORD):
        text = redactor.text(f"before {secret} after")
        assert secret not in text and text.startswith("before ") and text.endswith(" after")
    assert redactor.text("services are fine") == "services are fine"
    masked = redactor.outcome(Outcome.failed(KEY, hint=url, key={KEY: [url.upper()]}))
    assert_nothing_secret(shown(masked), forms(KEY) | forms(url), "a masked outcome")


# -- end to end ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_no_command_shows_or_stores_an_echoed_secret(
        tmp_path: Path, smtp_echo: FakeSMTPServer) -> None:
    state = tmp_path / "state"
    with FakePagerDuty() as accepting, FakePagerDuty() as refusing, FakeSlack(SLACK_PATH) as slack:
        accepting.echo_key = "accepted"
        refusing.echo_key = "invalid"
        slack.echo_secret = True
        email = smtp_echo.config(password=WRONG_PASSWORD)
        config = tmp_path / "armor-notify.yaml"
        config.write_text(json.dumps({
            "version": 1,
            "destinations": {
                "pd-echo": {"type": "pagerduty", "integration_key": KEY, "url": accepting.url,
                            "rate_limit": "none"},
                "pd-refuse": {"type": "pagerduty", "integration_key": KEY[::-1],
                              "url": refusing.url, "rate_limit": "none"},
                "chat": {"type": "slack", "webhook_url": slack.url, "rate_limit": "none"},
                "mail": {"type": "email", **email, "rate_limit": "none"},
            },
            "rules": [{"name": "everything", "event": "schema_change",
                       "destinations": ["pd-echo", "pd-refuse", "chat", "mail"]}],
        }))
        alerts = tmp_path / "alerts.json"
        alerts.write_text(json.dumps(ALERT))
        queued = tmp_path / "queued.json"
        queued.write_text(json.dumps({**ALERT, "id": "alert_echo_2"}))
        common = ["--config", str(config)]
        state_dir = ["--state-dir", str(state)]
        runs = [run_cli("send", str(alerts), *common, *state_dir, "--wait", "10")]
        # An open connection keeps the write-ahead log on disk (the last one to close removes
        # it), so the -wal file is searched as the commands left it.
        keeper = sqlite3.connect(state / "outbox.sqlite3")
        keeper.execute("SELECT count(*) FROM sqlite_master").fetchall()
        runs += [
            run_cli("send", str(alerts), *common, *state_dir, "--json", "--wait", "10"),
            run_cli("send", str(queued), *common, *state_dir, "--wait", "0"),
            run_cli("worker", "--once", "--wait", "10", *common, *state_dir),
            *(run_cli("test", name, *common) for name in ("pd-echo", "pd-refuse", "chat", "mail")),
            run_cli("test", "chat", "--json", *common),
            run_cli("outbox", "list", *state_dir),
            run_cli("outbox", "list", "--json", *state_dir),
        ]
        listing = json.loads(runs[-1].stdout)
        deliveries = listing["deliveries"] if isinstance(listing, dict) else listing
        ids = [d["id"] for d in deliveries]
        assert len(ids) == 8, runs[-1].stdout
        for delivery_id in ids:
            runs.append(run_cli("outbox", "show", delivery_id, *state_dir))
            runs.append(run_cli("outbox", "show", delivery_id, "--json", *state_dir))
    secrets = secrets_of(slack.url, WRONG_PASSWORD) | forms(KEY[::-1])
    for run in runs:
        assert "Traceback" not in run.stderr, run.stderr
        assert run.returncode in (0, 1, 3), (run.args, run.stdout, run.stderr)
        assert_nothing_secret(run.stdout + run.stderr, secrets, " ".join(run.args[1:3]))
    # The server really echoed: the deliveries record its (masked) words.
    assert "Event processed for routing key" in runs[0].stdout + runs[1].stdout
    assert "invalid_token" in runs[0].stdout
    files = [path for path in state.rglob("*") if path.is_file()]
    assert {"outbox.sqlite3", "outbox.sqlite3-wal"} <= {path.name for path in files}
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"{secret!r} in {path.name}"
            assert secret.encode("utf-16-le") not in data, f"{secret!r} (UTF-16) in {path.name}"
    keeper.close()
