"""The slack destination, over the wire against a loopback receiver that answers as Slack does."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import pytest
import trustme
from armor_notify_plugins import slack
from armor_notify_plugins.slack import SlackConfig, escape
from armor_notify_plugins.slack_sender import ERROR_HINTS, SlackSender, build_payload
from conftest import tls_server_context
from fake_slack import (
    ERROR_STATUS,
    WEBHOOK_PATH,
    FakeSlack,
    Reply,
    error,
    rate_limited,
    slack_check,
)
from pydantic import ValidationError
from slack_sdk.models.blocks import Block

from armor_notify import Alert, DestinationType, Notification, Outcome, Sender, mask_url

SECRET_TOKEN = "XXXXXXXXXXXXXXXXXXXXXXXX"  # the secret part of WEBHOOK_PATH
SECRET_PARTS = ("T00000000", "B00000000", SECRET_TOKEN)

# Every code Slack documents → what a sender must do about it.
PERMANENT = sorted(code for code, status in ERROR_STATUS.items() if status < 500)


def make_alert(**overrides: Any) -> Alert:
    data: dict[str, Any] = {
        "id": "alert_abc123",
        "event_type": "schema_change",
        "severity": "critical",
        "title": "3 columns removed from orders",
        "description": "Columns were dropped by the nightly migration.",
        "asset": {
            "id": "asset-42",
            "name": "analytics.public.orders",
            "data_source": "warehouse-prod",
            "environment": "production",
        },
        "changes": [
            {"type": "column_removed", "column": "customer_email", "from": "varchar"},
            {"type": "type_changed", "column": "amount", "from": "numeric", "to": "text"},
            {"type": "column_added", "column": "discount_code", "to": "varchar"},
        ],
        "link": "https://app.anomalyarmor.ai/alerts/alert_abc123?tab=details&x=1",
        "occurred_at": "2024-05-01T12:34:56Z",
    }
    data.update(overrides)
    return Alert.model_validate(data)


def make_notification(
    alert: Alert | None = None, *, timeout: float = 2.0, test: bool = False
) -> Notification:
    return Notification(
        alert=alert or make_alert(),
        destination="slack-data-incidents",
        rule="Production Breaking Changes",
        dedup_key="anomalyarmor-prod-asset-42",
        source="anomalyarmor",
        link_text="View in AnomalyArmor",
        timeout=timeout,
        test=test,
    )


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


@pytest.fixture
def sender(fake: FakeSlack) -> Iterator[SlackSender]:
    built = SlackSender(SlackConfig(webhook_url=fake.url))
    yield built
    built.close()


def send(sender: SlackSender, notification: Notification | None = None) -> Outcome:
    outcome = sender.send(notification or make_notification())
    assert_no_secret(outcome)
    return outcome


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        shown = repr(text)
        for part in SECRET_PARTS:
            assert part not in shown, f"webhook secret leaked in {shown!r}"


def assert_valid_block_kit(payload: dict[str, Any]) -> None:
    """What Slack would check, using Slack's own Block Kit models, plus the limits they skip."""
    assert slack_check(json.dumps(payload).encode()) is None
    blocks = payload["blocks"]
    assert 1 <= len(blocks) <= 50
    for raw in blocks:
        block = Block.parse(raw)
        assert block is not None, raw
        block.validate_json()
        if raw["type"] == "header":
            assert raw["text"]["type"] == "plain_text"
            assert 1 <= len(raw["text"]["text"]) <= 150
        if raw["type"] == "section":
            if "text" in raw:
                assert 1 <= len(raw["text"]["text"]) <= 3000
            for item in raw.get("fields", []):
                assert 1 <= len(item["text"]) <= 2000
            assert len(raw.get("fields", [])) <= 10
        if raw["type"] == "context":
            assert 1 <= len(raw["elements"]) <= 10
    assert payload["text"].strip()


def all_texts(payload: dict[str, Any]) -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "text" and isinstance(value, str):
                    found.append(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(payload)
    return found


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


# --- registration and config ----------------------------------------------------------------


def test_registers_slack_type_through_the_entry_point() -> None:
    registered: list[DestinationType] = []
    slack.register_destination_types(registered.append)
    assert [t.name for t in registered] == ["slack"]
    kind = registered[0]
    assert (kind.display_name, kind.send_resolved_default, kind.default_rate_limit) == (
        "Slack",
        True,
        "1/second",
    )
    assert kind.test_reminder == ""
    assert kind.config_model is SlackConfig
    built = kind.sender(SlackConfig(webhook_url="https://hooks.slack.com/services/T1/B2/abc"))
    assert isinstance(built, Sender)
    points = {ep.name: ep.value for ep in metadata.entry_points(group="armor_notify")}
    assert points["slack"] == "armor_notify_plugins.slack"


def test_config_describes_and_rate_limits_by_webhook_without_showing_it() -> None:
    url = f"https://hooks.slack.com{WEBHOOK_PATH}"
    config = SlackConfig.model_validate({"webhook_url": url, "timeout": 5})
    assert config.describe() == "Slack webhook https://hooks.slack.com/…"
    assert config.rate_limit_key() == url
    assert_no_secret(repr(config), str(config), config.describe(), config.model_dump())


@pytest.mark.parametrize(
    "url",
    [
        f"http://hooks.slack.com{WEBHOOK_PATH}",
        f"ftp://hooks.slack.com{WEBHOOK_PATH}",
        f"hooks.slack.com{WEBHOOK_PATH}",
        "",
    ],
)
def test_config_rejects_non_https_urls_without_quoting_them(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SlackConfig(webhook_url=url)
    problem = caught.value.errors()[0]
    assert problem["loc"] == ("webhook_url",)
    assert "https://" in problem["msg"]
    # pydantic keeps the raw input in errors() for callers that ask; the messages never quote it.
    assert_no_secret(str(caught.value), caught.value.errors(include_input=False))


def test_config_allows_loopback_http_and_rejects_unknown_keys() -> None:
    SlackConfig(webhook_url=f"http://127.0.0.1:9{WEBHOOK_PATH}")
    SlackConfig(webhook_url=f"http://localhost{WEBHOOK_PATH}")
    SlackConfig(webhook_url=f"http://[::1]:8080{WEBHOOK_PATH}")
    with pytest.raises(ValidationError) as caught:
        SlackConfig.model_validate(
            {"webhook_url": f"https://hooks.slack.com{WEBHOOK_PATH}", "mention": "@here"}
        )
    assert caught.value.errors()[0]["loc"] == ("mention",)


def test_apprise_webhook_url_maps_to_native_config() -> None:
    assert slack.SLACK.from_url is not None
    config = slack.SLACK.from_url(f"slack://T00000000/B00000000/{SECRET_TOKEN}")
    assert config == {"webhook_url": f"https://hooks.slack.com{WEBHOOK_PATH}"}
    with pytest.raises(ValueError, match="a bot token does not go in a URL") as caught:
        slack.SLACK.from_url("slack://xoxb-1234-1234-SECRETSECRET/#general")
    assert "SECRETSECRET" not in str(caught.value)
    with pytest.raises(ValueError, match="incoming-webhook form") as caught:
        slack.SLACK.from_url(f"slack://T00000000/B00000000/{SECRET_TOKEN}/#general")
    assert_no_secret(str(caught.value))


# --- the message ------------------------------------------------------------------------------


def test_delivers_a_valid_block_kit_message_with_every_field(
    fake: FakeSlack, sender: SlackSender
) -> None:
    outcome = send(sender)
    assert outcome.status == "delivered"
    [request] = fake.requests
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    payload = request.json()
    assert_valid_block_kit(payload)
    assert "link_names" not in payload and "parse" not in payload

    header = payload["blocks"][0]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": ":red_circle: CRITICAL · Schema change",
                 "emoji": True},
    }
    text = "\n".join(all_texts(payload))
    for expected in (
        "*3 columns removed from orders*",
        "*Rule*\nProduction Breaking Changes",
        "*Asset*\n`analytics.public.orders`",
        "*Event type*\nschema_change",
        "*Severity*\ncritical",
        "*Data source*\nwarehouse-prod",
        "*Environment*\nproduction",
        "Columns were dropped by the nightly migration.",
        "*Changes* · 3 changes (2 breaking)",
        "• Column removed: `customer_email` (was varchar) — *breaking*",
        "• Type changed: `amount` (numeric → text) — *breaking*",
        "• Column added: `discount_code` (varchar)",
        "2024-05-01 12:34 UTC",
        "`alert_abc123`",
        # The link is a mrkdwn link (not a button, which would need an interactivity endpoint).
        "<https://app.anomalyarmor.ai/alerts/alert_abc123?tab=details&amp;x=1|View in AnomalyArmor>",
    ):
        assert expected in text
    assert payload["text"] == (
        ":red_circle: CRITICAL · Schema change: 3 columns removed from orders "
        "(analytics.public.orders)"
    )
    assert not [b for b in payload["blocks"] if b["type"] == "actions"]
    for block in payload["blocks"]:
        for item in [block.get("text"), *block.get("fields", []), *block.get("elements", [])]:
            if item and item["type"] == "mrkdwn":
                assert item["verbatim"] is True


def test_long_change_lists_end_with_and_n_more(fake: FakeSlack, sender: SlackSender) -> None:
    changes = [{"type": "column_added", "column": f"col_{i}", "to": "int"} for i in range(60)]
    changes.append({"type": "column_removed", "column": "must_show"})
    assert send(sender, make_notification(make_alert(changes=changes))).status == "delivered"
    payload = fake.requests[0].json()
    assert_valid_block_kit(payload)
    [section] = [b for b in payload["blocks"] if b.get("text", {}).get("text", "").startswith(
        "*Changes*")]
    lines = section["text"]["text"].splitlines()
    assert lines[0] == "*Changes* · 61 changes (1 breaking)"
    assert lines[1].startswith("• Column removed: `must_show`")  # breaking first
    listed = [line for line in lines if line.startswith("•")]
    assert lines[-1] == f"and {61 - len(listed)} more"
    assert 0 < len(listed) < 61


def test_resolved_and_acknowledged_forms(fake: FakeSlack, sender: SlackSender) -> None:
    assert send(sender, make_notification(make_alert(status="resolved"))).status == "delivered"
    assert send(sender, make_notification(make_alert(status="acknowledged"))).status == "delivered"
    resolved, acknowledged = (r.json() for r in fake.requests)
    for payload in (resolved, acknowledged):
        assert_valid_block_kit(payload)
    assert resolved["blocks"][0]["text"]["text"] == ":white_check_mark: Resolved · Schema change"
    assert resolved["text"].startswith(":white_check_mark: Resolved · Schema change: ")
    assert "Resolved: *3 columns removed from orders*" in all_texts(resolved)
    assert acknowledged["blocks"][0]["text"]["text"] == ":eyes: Acknowledged · Schema change"
    # The short forms leave out what the triggered message already said.
    assert not any(t.startswith("*Changes*") for t in all_texts(resolved))
    assert any("View in AnomalyArmor" in t for t in all_texts(resolved))


def test_test_notification_says_it_is_a_test(fake: FakeSlack, sender: SlackSender) -> None:
    assert send(sender, make_notification(test=True)).status == "delivered"
    payload = fake.requests[0].json()
    assert_valid_block_kit(payload)
    assert payload["blocks"][0]["text"]["text"] == ":red_circle: [Test] CRITICAL · Schema change"
    assert payload["text"].startswith(":red_circle: [Test] ")
    assert any("This is a test notification" in t for t in all_texts(payload))


def test_freshness_alert_shows_the_delay(fake: FakeSlack, sender: SlackSender) -> None:
    alert = make_alert(
        event_type="freshness_violation",
        severity="warning",
        changes=[],
        freshness={"delay_hours": 5, "threshold_hours": 2},
        link=None,
    )
    assert send(sender, make_notification(alert)).status == "delivered"
    payload = fake.requests[0].json()
    assert_valid_block_kit(payload)
    assert payload["blocks"][0]["text"]["text"] == (
        ":large_orange_circle: WARNING · Freshness violation"
    )
    assert ":hourglass: Data is 5 hours late (threshold 2 hours)" in all_texts(payload)
    assert not any("View in" in t for t in all_texts(payload))


# --- hostile text -----------------------------------------------------------------------------

HOSTILE_TITLE = "@here <!everyone> <@U123> <#C1> & *bold*"


def test_alert_text_can_never_mention_anyone(fake: FakeSlack, sender: SlackSender) -> None:
    alert = make_alert(
        title=HOSTILE_TITLE,
        description="Details: <https://evil.example|click> <!here> <!subteam^S1> &amp; done",
        asset={"id": "<@U999>", "name": "<!channel>", "data_source": "<#C2|general>",
               "environment": "@channel"},
        changes=[{"type": "column_removed", "column": "<!everyone>", "from": "<@U1>"}],
        id="<!here>",
        link="https://app.anomalyarmor.ai/a?<!channel>|x>y z",
    )
    assert send(sender, make_notification(alert)).status == "delivered"
    raw = fake.requests[0].body.decode()
    payload = json.loads(raw)
    assert_valid_block_kit(payload)
    assert "link_names" not in payload and "parse" not in payload
    # No Slack control sequence survives anywhere: every '<' that reaches Slack is one we wrote,
    # and the only one we write is the alert link, which is percent-encoded.
    for text in all_texts(payload):
        for match in re.finditer("<", text):
            assert text.startswith("<https://app.anomalyarmor.ai/a?%3C!channel%3E%7Cx%3Ey%20z|",
                                   match.start())
        assert not re.search(r"<[!@#]", text)
        assert not re.search(r"&(?!amp;|lt;|gt;)", text), text
    assert "<!" not in raw and "<@" not in raw and "<#" not in raw
    # What people read is still the original text.
    texts = "\n".join(unescape(t) for t in all_texts(payload))
    assert HOSTILE_TITLE in texts
    assert "<!channel>" in texts and "<https://evil.example|click>" in texts
    assert "&amp; done" in texts  # a literal "&amp;" stays literal


def test_escape_encodes_exactly_three_characters_ampersand_first() -> None:
    assert escape("a & b < c > d &lt; \"'*_~`") == "a &amp; b &lt; c &gt; d &amp;lt; \"'*_~`"


# --- limits -----------------------------------------------------------------------------------


def test_huge_input_stays_within_every_limit(fake: FakeSlack, sender: SlackSender) -> None:
    huge = "<&>" * 5000
    alert = make_alert(
        title="T" + huge,
        description=huge,
        asset={"id": "a" * 512, "name": "&" * 1024, "data_source": "<" * 5000,
               "environment": ">" * 5000},
        changes=[{"type": "column_removed", "column": "&" * 3000, "from": "<" * 3000}
                 for _ in range(400)],
        freshness={"delay_hours": 1e9, "threshold_hours": 1},
        link="https://example.com/" + "a" * 5000,
    )
    notification = Notification(
        alert=alert, destination="<" * 3000, rule="&" * 5000, dedup_key="k",
        source="&" * 500, link_text="<" * 300, timeout=2.0, test=True,
    )
    assert send(sender, notification).status == "delivered"
    payload = fake.requests[0].json()
    assert_valid_block_kit(payload)
    for text in all_texts(payload):
        # Cut cleanly: no entity broken in half at the end of a truncated text.
        assert not re.search(r"&(?!amp;|lt;|gt;)", text), text[-20:]
    assert len(payload["text"]) <= 3000
    # Many sections of maximum size still add up to far fewer than 50 blocks.
    assert len(payload["blocks"]) <= 12


def test_header_is_cut_to_150_characters() -> None:
    long_type = "plugin_" + "very_long_" * 30 + "event"
    alert = Alert.model_validate(
        {**make_alert().model_dump(by_alias=True), "event_type": long_type},
        context={"event_types": [long_type]},
    )
    header = build_payload(make_notification(alert))["blocks"][0]["text"]["text"]
    assert len(header) == 150
    assert header.startswith(":red_circle: CRITICAL · Plugin very long very long")
    assert header.endswith("…")


# --- Slack's answers --------------------------------------------------------------------------


@pytest.mark.parametrize("code", PERMANENT)
def test_error_codes_fail_at_once_with_the_code_and_a_hint(
    code: str, fake: FakeSlack, sender: SlackSender
) -> None:
    fake.script(error(code))
    outcome = send(sender)
    assert outcome.status == "failed"
    assert outcome.reason == code
    assert outcome.hint
    assert outcome.details["status"] == ERROR_STATUS[code]


def test_specific_hints() -> None:
    hints = ERROR_HINTS
    assert "archived" in hints["channel_is_archived"]
    assert "create a new webhook for an active channel" in hints["channel_is_archived"]
    for code in ("invalid_token", "no_service"):
        assert "revoked or removed" in hints[code]
        assert "SLACK_WEBHOOK_URL" in hints[code]
    for code in ("invalid_payload", "invalid_blocks"):
        assert "please report it" in hints[code]
    assert "admin" in hints["action_prohibited"]


def test_invalid_token_as_400_is_also_permanent(fake: FakeSlack, sender: SlackSender) -> None:
    fake.script(error("invalid_token", status=400))
    outcome = send(sender)
    assert (outcome.status, outcome.reason) == ("failed", "invalid_token")
    assert "revoked" in (outcome.hint or "")


def test_rollup_error_and_5xx_are_retried(fake: FakeSlack, sender: SlackSender) -> None:
    fake.script(error("rollup_error"), Reply(503, ""), Reply(502, "<html>bad gateway</html>"))
    first, second, third = send(sender), send(sender), send(sender)
    assert (first.status, first.reason) == ("retry", "rollup_error")
    assert first.hint
    assert (second.status, second.reason) == ("retry", "HTTP 503 Service Unavailable")
    assert (third.status, third.reason) == ("retry", "<html>bad gateway</html>")
    assert send(sender).status == "delivered"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (rate_limited("7"), 7.0),
        (rate_limited("30", body='{"calls": 42}'), 30.0),
        (rate_limited("Wed, 21 Oct 2015 07:28:00 GMT"), 0.0),
        (rate_limited(None), None),
    ],
)
def test_429_is_retried_after_what_slack_asks(
    reply: Reply, expected: float | None, fake: FakeSlack, sender: SlackSender
) -> None:
    fake.script(reply)
    outcome = send(sender)
    assert outcome.status == "retry"
    assert outcome.retry_after == expected
    assert outcome.details["status"] == 429
    assert outcome.reason == (reply.body or "HTTP 429 Too Many Requests")


def test_200_with_another_body_is_a_failure(fake: FakeSlack, sender: SlackSender) -> None:
    fake.script(Reply(200, "<html>Sign in to your proxy</html>"))
    outcome = send(sender)
    assert outcome.status == "failed"
    assert outcome.reason == "<html>Sign in to your proxy</html>"
    assert "webhook_url" in (outcome.hint or "")


def test_redirects_are_not_followed(fake: FakeSlack, sender: SlackSender) -> None:
    fake.script(Reply(302, "", {"Location": "http://127.0.0.1:9/login"}))
    outcome = send(sender)
    assert (outcome.status, outcome.reason) == ("failed", "HTTP 302 redirect")
    assert len(fake.requests) == 1


def test_unknown_webhook_path_is_no_service(fake: FakeSlack) -> None:
    wrong = fake.url.replace(SECRET_TOKEN, "Y" * len(SECRET_TOKEN))
    sender = SlackSender(SlackConfig(webhook_url=wrong))
    try:
        outcome = sender.send(make_notification())
    finally:
        sender.close()
    assert (outcome.status, outcome.reason) == ("failed", "no_service")
    assert "Y" * 10 not in repr(outcome)


def test_connection_refused_is_retried() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sender = SlackSender(SlackConfig(webhook_url=f"http://127.0.0.1:{port}{WEBHOOK_PATH}"))
    try:
        outcome = send(sender)
    finally:
        sender.close()
    assert outcome.status == "retry"
    assert outcome.reason.startswith(f"could not reach http://127.0.0.1:{port}/…: ")
    assert outcome.reason.endswith("Connection refused")
    assert "object at 0x" not in outcome.reason and "HTTPConnection(" not in outcome.reason


def test_a_slow_server_times_out_and_is_retried(fake: FakeSlack, sender: SlackSender) -> None:
    fake.script(Reply(delay=1.0))
    started = datetime.now(timezone.utc)
    outcome = send(sender, make_notification(timeout=0.2))
    elapsed = (datetime.now(timezone.utc) - started).total_seconds()
    assert outcome.status == "retry"
    assert outcome.reason == f"no answer from {mask_url(fake.url)} within 0.2 s"
    assert elapsed < 0.9
    fake.script(Reply(delay=0.05))
    assert send(sender).status == "delivered"  # the session recovers from the broken connection


def test_threads_share_kept_alive_connections(fake: FakeSlack, sender: SlackSender) -> None:
    import threading

    outcomes: list[Outcome] = []

    def worker() -> None:
        for _ in range(3):
            outcomes.append(send(sender))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [o.status for o in outcomes] == ["delivered"] * 12
    assert len(fake.requests) == 12
    # Connections are kept alive and shared: never more than one per concurrent thread.
    assert 1 <= len({r.client_port for r in fake.requests}) <= 4


@pytest.fixture
def tls_fake(certificate_authority: trustme.CA) -> Iterator[FakeSlack]:
    with FakeSlack(tls=tls_server_context(certificate_authority)) as server:
        yield server


def test_https_with_a_trusted_certificate_is_delivered(
    tls_fake: FakeSlack, certificate_authority: trustme.CA, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any
) -> None:
    bundle = tmp_path / "ca.pem"
    certificate_authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    assert tls_fake.url.startswith("https://127.0.0.1:")
    sender = SlackSender(SlackConfig(webhook_url=tls_fake.url))
    try:
        assert send(sender).status == "delivered"
    finally:
        sender.close()
    assert_valid_block_kit(tls_fake.requests[0].json())


def test_an_untrusted_certificate_fails_with_a_hint(
    tls_fake: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    sender = SlackSender(SlackConfig(webhook_url=tls_fake.url))
    try:
        outcome = send(sender)
    finally:
        sender.close()
    assert outcome.status == "failed"
    assert "certificate" in outcome.reason and "CERTIFICATE_VERIFY_FAILED" in outcome.reason
    assert "CA bundle" in (outcome.hint or "")
    assert tls_fake.requests == []


def test_the_fake_checks_like_slack(fake: FakeSlack) -> None:
    import requests

    with requests.Session() as session:
        bad_json = session.post(fake.url, data=b"{nope", timeout=2)
        no_text = session.post(fake.url, json={"blocks": []}, timeout=2)
        bad_block = session.post(
            fake.url,
            json={"text": "x", "blocks": [{"type": "header",
                                           "text": {"type": "plain_text", "text": "x" * 151}}]},
            timeout=2,
        )
        ok = session.post(fake.url, json={"text": "hello"}, timeout=2)
    assert (bad_json.status_code, bad_json.text) == (400, "invalid_payload")
    assert (no_text.status_code, no_text.text) == (400, "missing_text_or_fallback_or_attachments")
    assert (bad_block.status_code, bad_block.text) == (400, "invalid_blocks")
    assert (ok.status_code, ok.text) == (200, "ok")
