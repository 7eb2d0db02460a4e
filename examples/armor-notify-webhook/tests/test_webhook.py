"""Tests of the webhook destination, written with armor-notify's plugin test kit.

The kit (``armor_notify.testing``) is a pytest plugin installed with armor-notify: the fixtures
``make_alert``, ``send_alert`` and ``notifier_factory`` need no import, and the conformance suite
is a base class.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import armor_notify_webhook
import pytest
from armor_notify_webhook import WEBHOOK, SignatureError, sign, verify_signature
from receiver import PATH, Answer, Receiver

from armor_notify import DestinationType
from armor_notify.delivery import State
from armor_notify.errors import ConfigError
from armor_notify.testing import DestinationConformance, Reply

SECRET = "whsec-0123456789abcdef0123456789abcdef"
TOKEN = "Bearer tok-5f4e3d2c1b0a99887766"


def answer_for(reply: Reply) -> Answer:
    """What the receiver says when the conformance suite asks for ``reply``."""
    if reply.kind == "delivered":
        return Answer()
    if reply.kind == "permanent":
        return Answer(410, '{"error": "this hook was deleted"}')
    if reply.kind == "hang":
        return Answer(hang=True)
    if reply.retry_after is not None:
        return Answer(429, "slow down", {"Retry-After": str(reply.retry_after)})
    return Answer(503, "<html>Service Unavailable</html>")


class TestWebhookConformance(DestinationConformance):
    def destination_type(self) -> DestinationType:
        return WEBHOOK

    def valid_config(self) -> dict[str, Any]:
        return {"url": "https://hooks.example.com/armor/0a1b2c3d4e5f", "secret": SECRET,
                "headers": {"Authorization": TOKEN}}

    def invalid_configs(self) -> Sequence[tuple[dict[str, Any], str]]:
        return [
            ({"url": "http://hooks.example.com/armor", "secret": SECRET}, "url"),
            ({"url": "https://hooks.example.com/armor", "secret": "short"}, "secret"),
            ({"url": "https://hooks.example.com/armor"}, "secret"),
            ({"url": "https://hooks.example.com/armor", "secret": SECRET,
              "headers": {"X-Armor-Signature": "sha256=forged"}}, "headers"),
            ({"url": "https://hooks.example.com/armor", "secret": SECRET,
              "headers": {"X-Tenant": "a\r\nX-Injected: yes"}}, "headers"),
        ]

    def secrets(self, config: Mapping[str, Any]) -> list[str]:
        values = [config.get("url"), config.get("secret"), *config.get("headers", {}).values()]
        return [str(v) for v in values if v and len(str(v)) >= 8]

    @contextlib.contextmanager
    def receiver(self, replies: Sequence[Reply]) -> Iterator[dict[str, Any]]:
        with Receiver(SECRET) as server:
            server.script(*(answer_for(r) for r in replies))
            yield {"url": server.url, "secret": SECRET, "headers": {"Authorization": TOKEN}}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(SECRET) as server:
        yield server


def config_for(server: Receiver, **options: Any) -> dict[str, Any]:
    return {"url": server.url, "secret": SECRET, "rate_limit": "none", "timeout": 2, **options}


def test_the_request_is_signed_and_carries_the_alert_rule_and_dedup_key(
    receiver: Receiver, send_alert: Any, make_alert: Any
) -> None:
    alert = make_alert(title="orders lost a column")
    report = send_alert(WEBHOOK, config_for(receiver), alert)
    assert report.deliveries[0].state is State.delivered
    [request] = receiver.requests
    assert request.signature_error is None
    verify_signature(SECRET, request.body, request.headers)  # what a receiver does
    payload = json.loads(request.body)
    assert payload["rule"] == "Conformance"
    assert payload["dedup_key"] == report.deliveries[0].dedup_key
    assert payload["action"] == "trigger"
    assert payload["alert"]["id"] == alert.id
    assert payload["alert"]["title"] == "orders lost a column"
    assert payload["alert"]["asset"]["name"] == "analytics.public.orders"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("armor-notify-webhook/")


def test_extra_headers_are_sent_and_never_shown(receiver: Receiver, send_alert: Any) -> None:
    report = send_alert(WEBHOOK, config_for(receiver, headers={"Authorization": TOKEN}))
    assert receiver.requests[0].headers["authorization"] == TOKEN
    assert TOKEN not in json.dumps(report.as_dict(), default=str)
    config = WEBHOOK.config_model.model_validate(config_for(receiver, headers={"Authorization": TOKEN}))
    assert config.describe().startswith("webhook http://127.0.0.1:")
    assert config.describe().endswith("/… (signed), headers Authorization")
    assert TOKEN not in repr(config)


def test_a_4xx_fails_with_the_status_and_an_excerpt_of_the_body(
    receiver: Receiver, send_alert: Any
) -> None:
    receiver.script(Answer(422, json.dumps({"error": "unknown field 'alert.severity'",
                                            "detail": "x" * 500})))
    delivery = send_alert(WEBHOOK, config_for(receiver)).deliveries[0]
    assert delivery.state is State.failed
    assert delivery.reason.startswith('HTTP 422 Unprocessable Entity: {"error": "unknown field')
    assert len(delivery.reason) < 260 and delivery.reason.endswith("…")
    assert delivery.attempt_count == 1


def test_secrets_a_receiver_echoes_back_are_never_shown(
    receiver: Receiver, send_alert: Any
) -> None:
    receiver.script(Answer(403, echo=True))
    report = send_alert(WEBHOOK, config_for(receiver, headers={"Authorization": TOKEN}))
    delivery = report.deliveries[0]
    assert delivery.state is State.failed and delivery.reason.startswith("HTTP 403 Refused")
    shown = json.dumps(report.as_dict(), default=str)
    for secret in (TOKEN, TOKEN.split()[1], receiver.url, PATH, PATH.rsplit("/", 1)[1]):
        assert secret not in shown
        assert json.dumps(secret)[1:-1].replace("/", "\\/") not in shown


def test_a_wrong_secret_is_refused_by_the_receiver_with_a_hint(send_alert: Any) -> None:
    with Receiver("another-secret-entirely-0000") as server:
        delivery = send_alert(WEBHOOK, config_for(server)).deliveries[0]
    assert delivery.state is State.failed
    assert "HTTP 401" in delivery.reason and "signature does not match" in delivery.reason
    assert "same secret" in (delivery.hint or "")


def test_redirects_are_not_followed(receiver: Receiver, send_alert: Any) -> None:
    receiver.script(Answer(307, "", {"Location": "https://elsewhere.example.com/"}))
    delivery = send_alert(WEBHOOK, config_for(receiver)).deliveries[0]
    assert delivery.state is State.failed and "HTTP 307" in delivery.reason
    assert len(receiver.requests) == 1


def test_a_refused_connection_is_retried_and_the_url_path_stays_hidden(send_alert: Any) -> None:
    with Receiver(SECRET) as server:
        url = server.url  # nothing listens there once the receiver stops
    report = send_alert(WEBHOOK, {"url": url, "secret": SECRET, "max_attempts": 2,
                                  "retry_backoff": 0.01, "rate_limit": "none"})
    delivery = report.deliveries[0]
    assert [a.status for a in delivery.attempts] == ["retry", "retry"]
    assert "could not reach http://127.0.0.1:" in delivery.reason
    assert "/hooks/armor" not in json.dumps(report.as_dict(), default=str)


def test_verify_signature_refuses_tampering_replays_and_missing_headers() -> None:
    body = b'{"alert": {"id": "a1"}}'
    now = 1_700_000_000
    headers = {"X-Armor-Timestamp": str(now), "X-Armor-Signature": sign(SECRET, now, body)}
    verify_signature(SECRET, body, headers, now=now + 10)
    verify_signature(SECRET.encode(), body, {k.lower(): v for k, v in headers.items()}, now=now)
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(SECRET, body.replace(b"a1", b"a2"), headers, now=now)
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature("not-the-shared-secret-at-all", body, headers, now=now)
    with pytest.raises(SignatureError, match="does not match"):  # a timestamp moved forward
        verify_signature(SECRET, body, {**headers, "X-Armor-Timestamp": str(now + 600)},
                         now=now + 600)
    with pytest.raises(SignatureError, match="replayed"):
        verify_signature(SECRET, body, headers, now=now + 301)
    with pytest.raises(SignatureError, match="missing"):
        verify_signature(SECRET, body, {"X-Armor-Signature": headers["X-Armor-Signature"]})
    with pytest.raises(SignatureError, match="Unix time"):
        verify_signature(SECRET, body, {**headers, "X-Armor-Timestamp": "yesterday"})


def test_every_attempt_is_signed_afresh(receiver: Receiver, send_alert: Any) -> None:
    receiver.script(Answer(503, "busy"))
    report = send_alert(WEBHOOK, config_for(receiver, retry_backoff=0.01))
    assert report.deliveries[0].state is State.delivered
    assert [r.signature_error for r in receiver.requests] == [None, None]
    assert int(receiver.requests[1].headers["x-armor-timestamp"]) <= time.time()


def test_config_errors_name_the_field_and_never_echo_the_secret(notifier_factory: Any) -> None:
    yaml_text = """
version: 1
destinations:
  ops-webhook:
    type: webhook
    url: https://hooks.example.com/armor
    secret: ${WEBHOOK_SECRET}
    headers: {Content-Type: text/plain}
rules:
  - {name: Everything, event: schema_change, destinations: [ops-webhook]}
"""
    with pytest.raises(ConfigError) as caught:
        notifier_factory(yaml_text, armor_notify_webhook, environ={"WEBHOOK_SECRET": "tooshort12"})
    text = str(caught.value)
    assert "destinations.ops-webhook.secret: use at least 16 random characters" in text
    assert ("destinations.ops-webhook.headers: Content-Type is set by the webhook plugin itself"
            in text)
    assert "tooshort12" not in text


def test_a_yaml_config_routes_alerts_by_rule(
    receiver: Receiver, notifier_factory: Any, make_alert: Any
) -> None:
    yaml_text = f"""
version: 1
destinations:
  ops-webhook: {{type: webhook, url: "{receiver.url}", secret: "${{WEBHOOK_SECRET}}"}}
rules:
  - name: Production only
    event: schema_change
    scope: {{environments: [production]}}
    destinations: [ops-webhook]
"""
    notifier = notifier_factory(yaml_text, armor_notify_webhook, environ={"WEBHOOK_SECRET": SECRET})
    report = notifier.send([make_alert(), make_alert(asset={"environment": "dev"})])
    assert [d.state for d in report.deliveries] == [State.delivered]
    assert json.loads(receiver.requests[0].body)["rule"] == "Production only"
