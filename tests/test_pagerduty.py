"""The PagerDuty destination against a loopback Events API v2 receiver, over real HTTP."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme
from armor_notify_plugins.pagerduty import PAGERDUTY, PagerDutyConfig
from armor_notify_plugins.pagerduty_sender import (
    RATE_LIMIT_HINT,
    REJECTED_CONTENT_HINT,
    PagerDutySender,
    encode_event,
    event_summary,
    trigger_event,
)
from conftest import tls_server_context
from fake_pagerduty import (
    CHANGE_PATH,
    INVALID_ROUTING_KEY,
    JSON_PARSE_ERROR,
    ROUTING_KEY_CHARACTERS,
    ROUTING_KEY_LENGTH,
    SEVERITY_INVALID,
    SEVERITY_MISSING,
    SOURCE_MISSING,
    SUMMARY_TOO_LONG,
    UNRECOGNIZED_OBJECT,
    FakePagerDuty,
    FakeResponse,
    schema_errors,
)
from pydantic import ValidationError

from armor_notify import Secret
from armor_notify.alert import Alert, Freshness
from armor_notify.destinations import Notification
from armor_notify.outcome import Outcome
from armor_notify.plugins import PluginManager

KEY = "a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6"  # the seed's example Integration Key
OTHER_KEY = "0123456789abcdef0123456789abcdef"
DEDUP_KEY = "anomalyarmor-production-breaking-changes-schema_change-tbl_42"
OCCURRED = datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)
LINK = "https://app.anomalyarmor.ai/alerts/alert_123"


def make_alert(**overrides: Any) -> Alert:
    data: dict[str, Any] = {
        "id": "alert_123",
        "event_type": "schema_change",
        "severity": "critical",
        "title": "Breaking schema change in orders",
        "description": "Column customer_email was removed; amount changed type.",
        "asset": {
            "id": "tbl_42",
            "name": "analytics.public.orders",
            "data_source": "warehouse-prod",
            "schema": "public",
            "kind": "table",
            "environment": "production",
            "tags": ["gold"],
        },
        "changes": [
            {"type": "column_removed", "column": "customer_email"},
            {"type": "type_changed", "column": "amount", "from": "integer", "to": "numeric"},
            {"type": "column_added", "column": "notes", "to": "text"},
        ],
        "link": LINK,
        "occurred_at": OCCURRED.isoformat(),
    }
    data.update(overrides)
    return Alert.model_validate(data)


def make_notification(alert: Alert | None = None, *, status: str | None = None,
                      test: bool = False, timeout: float = 2.0,
                      dedup_key: str = DEDUP_KEY) -> Notification:
    alert = alert or make_alert()
    if status is not None:
        alert = alert.model_copy(update={"status": status})
    return Notification(
        alert=alert,
        destination="pagerduty-data-platform",
        rule="Production Breaking Changes",
        dedup_key=dedup_key,
        source="anomalyarmor",
        link_text="View in AnomalyArmor",
        timeout=timeout,
        test=test,
    )


def config(**options: Any) -> PagerDutyConfig:
    return PagerDutyConfig.model_validate({"integration_key": KEY, **options})


def config_error(**options: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        PagerDutyConfig.model_validate(options)
    text = str(caught.value)
    for secret in (KEY, options.get("integration_key")):
        if secret:
            assert secret not in text
    return text


def assert_no_secret(outcome: Outcome, *secrets: str) -> None:
    for secret in (KEY, *secrets):
        assert secret not in repr(outcome)
        assert secret not in outcome.reason
        assert secret not in (outcome.hint or "")
        assert secret not in json.dumps(dict(outcome.details))


@pytest.fixture
def fake() -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as server:
        yield server


@pytest.fixture
def sender_for() -> Iterator[Callable[[PagerDutyConfig], PagerDutySender]]:
    made: list[PagerDutySender] = []

    def make(cfg: PagerDutyConfig) -> PagerDutySender:
        sender = PAGERDUTY.sender(cfg)
        assert isinstance(sender, PagerDutySender)
        made.append(sender)
        return sender

    yield make
    for sender in made:
        sender.close()


@pytest.fixture
def send(
    fake: FakePagerDuty, sender_for: Callable[[PagerDutyConfig], PagerDutySender]
) -> Callable[..., Outcome]:
    """Send one notification to the fake through a sender configured with ``options``."""

    def send(notification: Notification | None = None, **options: Any) -> Outcome:
        options.setdefault("url", fake.url)
        return sender_for(config(**options)).send(notification or make_notification())

    return send


# -- registration ------------------------------------------------------------------------------


def test_registered_through_the_entry_point_like_any_plugin() -> None:
    entry_points = [ep for ep in metadata.entry_points(group="armor_notify")
                    if ep.name == "pagerduty"]
    manager = PluginManager().load(entry_points=entry_points)
    assert manager.registry.destination_types["pagerduty"] is PAGERDUTY
    assert PAGERDUTY.title == "PagerDuty"
    assert PAGERDUTY.send_resolved_default is True
    assert PAGERDUTY.default_rate_limit == "120/minute"
    assert PAGERDUTY.config_model is PagerDutyConfig
    assert "resolve the test incident in PagerDuty" in PAGERDUTY.test_reminder
    assert "--resolve" in PAGERDUTY.test_reminder


# -- config ------------------------------------------------------------------------------------


def test_a_32_character_key_is_accepted_and_masked_everywhere() -> None:
    cfg = config()
    assert cfg.integration_key.get_secret_value() == KEY
    assert KEY not in repr(cfg)
    assert KEY not in str(cfg)
    assert "a1b2…o5p6" in repr(cfg)
    assert cfg.describe() == "PagerDuty us, key a1b2…o5p6"
    assert KEY not in repr(PagerDutySender(cfg))


def test_whitespace_copied_with_the_key_is_ignored() -> None:
    assert config(integration_key=f"  {KEY}\n").integration_key.get_secret_value() == KEY


def test_a_20_character_key_gets_the_rest_api_key_hint() -> None:
    rest_key = "y_NbAkKc66ryYTWUXYEu"
    text = config_error(integration_key=rest_key)
    assert "integration_key" in text
    assert "looks like a PagerDuty REST API key, not an Events API v2 Integration Key" in text
    assert "copy its Integration Key" in text


@pytest.mark.parametrize("length", [0, 31, 33, 40])
def test_a_key_of_another_length_says_32_and_that_v1_is_not_supported(length: int) -> None:
    text = config_error(integration_key="k" * length)
    found = "is empty" if length == 0 else f"is {length} characters long"
    assert f"{found}, but an Events API v2 Integration Key has exactly 32 characters" in text
    assert "Events API v1 integrations are not supported" in text
    assert "REST API" not in text


def test_a_key_with_punctuation_is_refused_before_pagerduty_does() -> None:
    text = config_error(integration_key="a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p+")
    assert "only letters and digits" in text


def test_us_is_the_default_region() -> None:
    cfg = config()
    assert cfg.alert_endpoint == "https://events.pagerduty.com/v2/enqueue"
    assert cfg.change_endpoint == "https://events.pagerduty.com/v2/change/enqueue"
    assert cfg.endpoint == cfg.alert_endpoint


def test_eu_region_uses_the_eu_host() -> None:
    cfg = config(region="eu")
    assert cfg.alert_endpoint == "https://events.eu.pagerduty.com/v2/enqueue"
    assert cfg.change_endpoint == "https://events.eu.pagerduty.com/v2/change/enqueue"
    assert cfg.describe() == "PagerDuty eu, key a1b2…o5p6"
    assert config(region="eu", event_kind="change").endpoint == cfg.change_endpoint


@pytest.mark.parametrize(
    ("url", "alert_endpoint", "change_endpoint"),
    [
        ("https://pd.example.com", "https://pd.example.com/v2/enqueue",
         "https://pd.example.com/v2/change/enqueue"),
        ("https://pd.example.com/", "https://pd.example.com/v2/enqueue",
         "https://pd.example.com/v2/change/enqueue"),
        ("https://pd.example.com/v2", "https://pd.example.com/v2/enqueue",
         "https://pd.example.com/v2/change/enqueue"),
        # Alertmanager's form: the alert endpoint itself.
        ("https://events.pagerduty.com/v2/enqueue", "https://events.pagerduty.com/v2/enqueue",
         "https://events.pagerduty.com/v2/change/enqueue"),
        ("https://proxy.example.com/pagerduty/v2/enqueue/",
         "https://proxy.example.com/pagerduty/v2/enqueue",
         "https://proxy.example.com/pagerduty/v2/change/enqueue"),
        ("https://proxy.example.com/pd/v2/change/enqueue", "https://proxy.example.com/pd/v2/enqueue",
         "https://proxy.example.com/pd/v2/change/enqueue"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/v2/enqueue",
         "http://127.0.0.1:8080/v2/change/enqueue"),
        ("http://localhost:8080/v2/enqueue", "http://localhost:8080/v2/enqueue",
         "http://localhost:8080/v2/change/enqueue"),
    ],
)
def test_url_gives_the_alert_and_change_endpoints(
    url: str, alert_endpoint: str, change_endpoint: str
) -> None:
    cfg = config(url=url)
    assert (cfg.alert_endpoint, cfg.change_endpoint) == (alert_endpoint, change_endpoint)


def test_describe_masks_a_custom_url_path() -> None:
    cfg = config(url="https://proxy.example.com/secret-path/v2/enqueue", event_kind="change")
    assert cfg.describe() == "PagerDuty https://proxy.example.com/… change events, key a1b2…o5p6"


def test_region_and_url_together_is_an_error() -> None:
    text = config_error(integration_key=KEY, region="eu", url="https://pd.example.com")
    assert "set either region" in text
    assert "not both" in text


@pytest.mark.parametrize("url", ["http://pd.example.com", "ftp://pd.example.com", "pd.example.com"])
def test_url_must_be_https_except_on_loopback(url: str) -> None:
    text = config_error(integration_key=KEY, url=url)
    assert "url" in text
    assert "must be an https:// URL" in text


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"routing_key": KEY}, "routing_key"),
        ({"region": "ap"}, "region"),
        ({"severity": "Critical"}, "severity"),
        ({"severity": "high"}, "severity"),
        ({"event_kind": "incident"}, "event_kind"),
        ({"source": ""}, "source"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any], field: str) -> None:
    text = config_error(integration_key=KEY, **options)
    assert field in text


def test_missing_key_is_a_config_error() -> None:
    assert "integration_key" in config_error(region="us")


@pytest.mark.parametrize("severity", ["critical", "error", "warning", "info"])
def test_every_pagerduty_severity_is_allowed(severity: str) -> None:
    assert config(severity=severity).severity == severity


def test_change_events_do_not_send_resolves() -> None:
    assert config(event_kind="change").send_resolved is False
    assert config(event_kind="change", send_resolved=False).send_resolved is False
    assert config().send_resolved is None  # the type's default: on
    text = config_error(integration_key=KEY, event_kind="change", send_resolved=True)
    assert "change events cannot be acknowledged or resolved" in text


def test_destinations_sharing_a_key_share_a_rate_limit() -> None:
    first, second = config(region="us"), config(url="https://pd.example.com")
    assert first.rate_limit_key() == second.rate_limit_key() == KEY
    assert config(integration_key=OTHER_KEY).rate_limit_key() != first.rate_limit_key()


# -- the events sent -----------------------------------------------------------------------------


def test_trigger_event_carries_the_alert(fake: FakePagerDuty, send: Callable[..., Outcome]) -> None:
    outcome = send()
    assert outcome == Outcome.delivered("Event processed", dedup_key=DEDUP_KEY)
    [request] = fake.requests
    assert request.method == "POST"
    assert request.path == "/v2/enqueue"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("armor-notify/")
    assert "authorization" not in request.headers
    assert request.schema_errors == []
    assert request.body == {
        "routing_key": KEY,
        "event_action": "trigger",
        "dedup_key": DEDUP_KEY,
        "payload": {
            "summary": "Breaking schema change in orders — schema change on "
            "analytics.public.orders",
            "source": "anomalyarmor",
            "severity": "critical",
            "timestamp": "2024-05-01T12:30:00.000+00:00",
            "component": "analytics.public.orders",
            "group": "warehouse-prod",
            "class": "schema_change",
            "custom_details": {
                "rule": "Production Breaking Changes",
                "event_type": "schema_change",
                "asset_id": "tbl_42",
                "asset_name": "analytics.public.orders",
                "description": "Column customer_email was removed; amount changed type.",
                "alert_id": "alert_123",
                "monitor_severity": "critical",
                "data_source": "warehouse-prod",
                "schema": "public",
                "asset_kind": "table",
                "environment": "production",
                "tags": ["gold"],
                "link": LINK,
                "changes": [
                    {"type": "column_removed", "column": "customer_email", "breaking": True},
                    {"type": "type_changed", "column": "amount", "from": "integer",
                     "to": "numeric", "breaking": True},
                    {"type": "column_added", "column": "notes", "to": "text", "breaking": False},
                ],
                "breaking_changes": 2,
            },
        },
        "client": "anomalyarmor",
        "links": [{"href": LINK, "text": "View in AnomalyArmor"}],
        "client_url": LINK,
    }


def test_source_and_severity_come_from_the_destination(
    fake: FakePagerDuty, send: Callable[..., Outcome]
) -> None:
    assert send(source="warehouse-monitor.example.com", severity="warning").status == "delivered"
    payload = fake.events[0]["payload"]
    assert payload["source"] == "warehouse-monitor.example.com"
    assert payload["severity"] == "warning"
    assert fake.events[0]["client"] == "anomalyarmor"


def test_optional_fields_are_left_out_when_the_alert_has_none(
    fake: FakePagerDuty, send: Callable[..., Outcome]
) -> None:
    alert = make_alert(
        event_type="freshness_violation",
        title="orders is 5 hours late",
        description=None,
        asset={"id": "tbl_42", "name": "orders"},
        changes=[],
        link=None,
        freshness={"delay_hours": 5.5, "threshold_hours": 2,
                   "last_updated_at": "2024-05-01T07:00:00Z"},
    )
    assert send(make_notification(alert)).status == "delivered"
    [request] = fake.requests
    assert request.schema_errors == []
    event = request.body
    assert "links" not in event
    assert "client_url" not in event
    assert "group" not in event["payload"]
    assert event["payload"]["summary"] == "orders is 5 hours late — freshness violation"
    assert event["payload"]["component"] == "orders"
    assert event["payload"]["class"] == "freshness_violation"
    assert event["payload"]["custom_details"] == {
        "rule": "Production Breaking Changes",
        "event_type": "freshness_violation",
        "asset_id": "tbl_42",
        "asset_name": "orders",
        "alert_id": "alert_123",
        "monitor_severity": "critical",
        "freshness_delay_hours": 5.5,
        "freshness_threshold_hours": 2.0,
        "last_updated_at": "2024-05-01T07:00:00+00:00",
    }


def test_a_test_event_is_marked_as_a_test(fake: FakePagerDuty, send: Callable[..., Outcome]) -> None:
    notification = make_notification(test=True, dedup_key="anomalyarmor-test-12345")
    assert send(notification) == Outcome.delivered(
        "Event processed", dedup_key="anomalyarmor-test-12345"
    )
    payload = fake.events[0]["payload"]
    assert payload["summary"].startswith("Test event from armor-notify: Breaking schema change")
    assert payload["custom_details"]["test"] is True
    titled_test = make_notification(make_alert(title="Test alert from armor-notify"), test=True)
    assert event_summary(titled_test).startswith("Test alert from armor-notify — ")


def test_trigger_acknowledge_and_resolve_share_one_dedup_key(
    fake: FakePagerDuty, sender_for: Callable[[PagerDutyConfig], PagerDutySender]
) -> None:
    sender = sender_for(config(url=fake.url))
    outcomes = [sender.send(make_notification(status=status))
                for status in ("triggered", "acknowledged", "resolved")]
    assert [o.status for o in outcomes] == ["delivered"] * 3
    assert [o.details["dedup_key"] for o in outcomes] == [DEDUP_KEY] * 3
    trigger, acknowledge, resolve = fake.requests
    assert trigger.body["event_action"] == "trigger"
    for request, action in ((acknowledge, "acknowledge"), (resolve, "resolve")):
        assert request.path == "/v2/enqueue"
        assert request.schema_errors == []
        assert request.body == {"routing_key": KEY, "dedup_key": DEDUP_KEY, "event_action": action}
    assert {r.status for r in fake.requests} == {202}


# -- summary and size limits ---------------------------------------------------------------------


def test_a_long_title_is_cut_cleanly_and_keeps_its_context(
    fake: FakePagerDuty, send: Callable[..., Outcome]
) -> None:
    alert = make_alert(title="word " * 400)
    assert send(make_notification(alert)).status == "delivered"
    summary = fake.events[0]["payload"]["summary"]
    assert len(summary) <= 1024
    assert summary.endswith("word… — schema change on analytics.public.orders")
    assert fake.requests[0].status == 202


def test_a_huge_asset_name_still_gives_a_summary_within_1024_characters() -> None:
    name = "db." + "x" * 1000
    alert = make_alert(title="t" * 900, asset={"id": "tbl_1", "name": name})
    summary = event_summary(make_notification(alert))
    assert len(summary) <= 1024
    assert summary == "t" * 900 + " — schema change on…"


def test_a_summary_of_exactly_1024_characters_is_untouched() -> None:
    context = " — schema change on analytics.public.orders"
    title = "a" * (1024 - len(context))
    assert event_summary(make_notification(make_alert(title=title))) == title + context


def test_many_changes_are_trimmed_to_stay_under_512_kb(
    fake: FakePagerDuty, send: Callable[..., Outcome]
) -> None:
    changes = [{"type": "column_added", "column": f"column_{i:05d}_" + "c" * 60, "to": "varchar"}
               for i in range(10_000)]
    alert = make_alert(changes=changes)
    assert send(make_notification(alert)).status == "delivered"
    [request] = fake.requests
    assert request.status == 202
    assert request.schema_errors == []
    assert 400_000 < len(request.raw) <= 512_000
    details = request.body["payload"]["custom_details"]
    kept = len(details["changes"])
    assert 0 < kept < 10_000
    assert details["changes"][0]["column"].startswith("column_00000_")
    assert details["trimmed"] == (
        f"Shortened to stay under PagerDuty's 512 KB event limit: showing {kept} of 10000 schema "
        "changes"
    )
    assert details["description"] == alert.description
    assert request.body["payload"]["summary"] == event_summary(make_notification(alert))
    assert request.body["links"] == [{"href": LINK, "text": "View in AnomalyArmor"}]


def test_a_huge_description_is_cut_after_the_changes(
    fake: FakePagerDuty, send: Callable[..., Outcome]
) -> None:
    alert = make_alert(description="lorem ipsum " * 60_000)
    assert send(make_notification(alert)).status == "delivered"
    [request] = fake.requests
    assert request.status == 202
    assert len(request.raw) <= 512_000
    details = request.body["payload"]["custom_details"]
    assert "changes" not in details
    assert details["breaking_changes"] == 2
    assert details["description"].endswith("…")
    assert details["trimmed"].startswith(
        "Shortened to stay under PagerDuty's 512 KB event limit: all 3 schema changes left out; "
        "description cut to "
    )
    assert details["trimmed"].endswith(
        f"description cut to {len(details['description'])} of {len(alert.description or '')} "
        "characters"
    )


def test_when_nothing_else_fits_only_the_essentials_are_sent(
    fake: FakePagerDuty, send: Callable[..., Outcome]
) -> None:
    link = "https://app.anomalyarmor.ai/alerts" + "/segment" * 75_000
    assert send(make_notification(make_alert(link=link))).status == "delivered"
    [request] = fake.requests
    assert request.status == 202
    assert request.schema_errors == []
    event = request.body
    assert "links" not in event
    assert "client_url" not in event
    assert event["payload"]["custom_details"] == {
        "rule": "Production Breaking Changes",
        "event_type": "schema_change",
        "asset_id": "tbl_42",
        "asset_name": "analytics.public.orders",
        "trimmed": "Only the essentials are shown: the full details would exceed PagerDuty's "
        "512 KB event limit. See the alert in anomalyarmor for the rest.",
    }
    for required in ("summary", "source", "severity"):
        assert event["payload"][required]
    assert event["dedup_key"] == DEDUP_KEY


def test_non_finite_numbers_never_break_the_json() -> None:
    # Intake refuses non-finite numbers; the event builder stays safe for any Alert it is given.
    alert = make_alert()
    alert = alert.model_copy(update={"freshness": Freshness.model_construct(
        delay_hours=float("inf"), threshold_hours=None, last_updated_at=None)})
    event = trigger_event(config(), make_notification(alert))
    assert event["payload"]["custom_details"]["freshness_delay_hours"] == "inf"
    json.loads(encode_event(event))


# -- change events ---------------------------------------------------------------------------------


def test_change_events_go_to_the_change_endpoint(
    fake: FakePagerDuty, send: Callable[..., Outcome]
) -> None:
    outcome = send(event_kind="change")
    assert outcome == Outcome.delivered("Event processed")
    [request] = fake.requests
    assert request.path == CHANGE_PATH
    assert request.status == 202
    assert request.schema_errors == []
    event = request.body
    assert set(event) == {"routing_key", "payload", "links"}
    assert event["routing_key"] == KEY
    assert set(event["payload"]) == {"summary", "source", "timestamp", "custom_details"}
    assert event["payload"]["summary"] == (
        "Breaking schema change in orders — schema change on analytics.public.orders"
    )
    assert event["payload"]["source"] == "anomalyarmor"
    assert event["payload"]["timestamp"] == "2024-05-01T12:30:00.000+00:00"
    assert event["payload"]["custom_details"]["rule"] == "Production Breaking Changes"
    assert event["links"] == [{"href": LINK, "text": "View in AnomalyArmor"}]


def test_change_events_reach_the_change_endpoint_from_an_alertmanager_style_url(
    fake: FakePagerDuty, send: Callable[..., Outcome]
) -> None:
    assert send(url=f"{fake.url}/v2/enqueue", event_kind="change").status == "delivered"
    assert [r.path for r in fake.requests] == [CHANGE_PATH]
    assert send(url=f"{fake.url}/v2/enqueue").status == "delivered"
    assert [r.path for r in fake.requests] == [CHANGE_PATH, "/v2/enqueue"]


@pytest.mark.parametrize("status", ["acknowledged", "resolved"])
def test_change_events_have_no_lifecycle_so_nothing_is_sent(
    fake: FakePagerDuty, send: Callable[..., Outcome], status: str
) -> None:
    outcome = send(make_notification(status=status), event_kind="change")
    assert outcome == Outcome.delivered(
        f"nothing sent: PagerDuty change events cannot be {status}", skipped=True
    )
    assert fake.requests == []


# -- PagerDuty's answers ---------------------------------------------------------------------------


def test_pagerdutys_returned_dedup_key_is_reported(
    fake: FakePagerDuty, send: Callable[..., Outcome]
) -> None:
    fake.script(FakeResponse.accepted("pd-generated-key"))
    assert send() == Outcome.delivered("Event processed", dedup_key="pd-generated-key")


def test_a_202_that_is_not_json_is_still_delivered(
    fake: FakePagerDuty, send: Callable[..., Outcome]
) -> None:
    fake.script(FakeResponse(202, b"<html>accepted</html>"))
    assert send() == Outcome.delivered("HTTP 202 (answer not JSON)", dedup_key=DEDUP_KEY)


def test_invalid_routing_key_fails_with_pagerdutys_words_and_the_fix(
    fake: FakePagerDuty, send: Callable[..., Outcome]
) -> None:
    fake.revoked_keys.add(KEY)
    outcome = send()
    assert outcome.status == "failed"
    assert outcome.reason == "HTTP 400 invalid event (Event object is invalid): Invalid routing key"
    assert outcome.hint == (
        "Check that the Events API v2 integration still exists on the PagerDuty service "
        "(Services → your service → Integrations), copy a fresh Integration Key, and update "
        "integration_key of destination 'pagerduty-data-platform'. Events API v1 integrations "
        "are not supported."
    )
    assert outcome.retry_after is None
    assert_no_secret(outcome)
    assert fake.requests[0].body["routing_key"] == KEY


def test_a_wrong_length_key_is_refused_with_every_error_verbatim(
    fake: FakePagerDuty, sender_for: Callable[[PagerDutyConfig], PagerDutySender]
) -> None:
    # A key that skipped config validation, to see PagerDuty's own answer classified.
    rest_key = "y_NbAkKc66ryYTWUXYEu"
    cfg = PagerDutyConfig.model_construct(integration_key=Secret(rest_key), url=fake.url)
    outcome = sender_for(cfg).send(make_notification())
    assert outcome.status == "failed"
    assert outcome.reason == (
        f"HTTP 400 invalid event (Event object is invalid): {ROUTING_KEY_LENGTH}; "
        f"{ROUTING_KEY_CHARACTERS}"
    )
    assert outcome.hint is not None
    assert "copy a fresh Integration Key" in outcome.hint
    assert_no_secret(outcome, rest_key)


def test_a_ruleset_key_sending_change_events_gets_a_note(
    fake: FakePagerDuty, send: Callable[..., Outcome]
) -> None:
    ruleset_key = "R" + KEY[1:]
    fake.revoked_keys.add(ruleset_key)
    outcome = send(integration_key=ruleset_key, event_kind="change")
    assert outcome.status == "failed"
    assert outcome.hint is not None
    assert outcome.hint.endswith(
        "Keys of global rulesets (they start with R) cannot receive change events: use the key "
        "of an Events API v2 integration on a service."
    )
    assert_no_secret(outcome, ruleset_key)


def test_a_bad_severity_is_refused_verbatim(
    fake: FakePagerDuty, sender_for: Callable[[PagerDutyConfig], PagerDutySender]
) -> None:
    cfg = PagerDutyConfig.model_construct(
        integration_key=Secret(KEY), url=fake.url, severity="Critical"
    )
    outcome = sender_for(cfg).send(make_notification())
    assert outcome == Outcome.failed(
        f"HTTP 400 invalid event (Event object is invalid): {SEVERITY_INVALID}",
        hint=REJECTED_CONTENT_HINT,
    )


def test_a_json_parse_error_is_reported_verbatim(
    fake: FakePagerDuty, send: Callable[..., Outcome]
) -> None:
    fake.script(FakeResponse(400, UNRECOGNIZED_OBJECT))
    assert send() == Outcome.failed(
        "HTTP 400 Unrecognized object (Event object format is unrecognized): JSON parse error",
        hint=REJECTED_CONTENT_HINT,
    )


def test_a_400_that_is_not_json_is_quoted(fake: FakePagerDuty, send: Callable[..., Outcome]) -> None:
    fake.script(FakeResponse(400, b"Bad Request\n"))
    assert send() == Outcome.failed("HTTP 400 Bad Request", hint=REJECTED_CONTENT_HINT)


@pytest.mark.parametrize(
    ("response", "reason", "retry_after"),
    [
        (FakeResponse.too_many_requests(), "HTTP 429 Too Many Requests", None),
        (FakeResponse.too_many_requests("7"), "HTTP 429 Too Many Requests", 7.0),
        (FakeResponse(429, b"Request Limit Exceeded"),
         "HTTP 429 Too Many Requests: Request Limit Exceeded", None),
    ],
)
def test_rate_limited_events_are_retried(
    fake: FakePagerDuty, send: Callable[..., Outcome], response: FakeResponse, reason: str,
    retry_after: float | None,
) -> None:
    fake.script(response)
    assert send() == Outcome.retry(reason, retry_after=retry_after, hint=RATE_LIMIT_HINT)


@pytest.mark.parametrize(
    ("response", "reason", "retry_after"),
    [
        (FakeResponse.server_error(500), "HTTP 500: error (Internal Server Error)", None),
        (FakeResponse.server_error(503, retry_after="2"),
         "HTTP 503: error (Internal Server Error)", 2.0),
        (FakeResponse(502, b""), "HTTP 502", None),
    ],
)
def test_server_errors_are_retried(
    fake: FakePagerDuty, send: Callable[..., Outcome], response: FakeResponse, reason: str,
    retry_after: float | None,
) -> None:
    fake.script(response)
    assert send() == Outcome.retry(reason, retry_after=retry_after)


def test_a_retry_after_a_429_then_succeeds_with_the_same_event(
    fake: FakePagerDuty, sender_for: Callable[[PagerDutyConfig], PagerDutySender]
) -> None:
    fake.script(FakeResponse.too_many_requests(), FakeResponse.server_error(503))
    sender = sender_for(config(url=fake.url))
    statuses = [sender.send(make_notification()).status for _ in range(3)]
    assert statuses == ["retry", "retry", "delivered"]
    first, second, third = fake.events
    assert first == second == third


def test_an_unknown_path_fails_with_a_hint_about_url(
    fake: FakePagerDuty, send: Callable[..., Outcome]
) -> None:
    outcome = send(url=f"{fake.url}/not-pagerduty")
    assert outcome == Outcome.failed(
        "HTTP 404: Not Found (Not Found)",
        hint=f"{fake.url}/… does not look like a PagerDuty Events API: set url to its base "
        "(e.g. https://events.pagerduty.com) or use region instead.",
    )


def test_other_client_errors_fail_with_the_status_and_body(
    fake: FakePagerDuty, send: Callable[..., Outcome]
) -> None:
    fake.script(FakeResponse(403, b"Forbidden by proxy policy"))
    assert send() == Outcome.failed("HTTP 403: Forbidden by proxy policy")


def test_a_refused_connection_is_retried(
    sender_for: Callable[[PagerDutyConfig], PagerDutySender]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outcome = sender_for(config(url=f"http://127.0.0.1:{port}")).send(make_notification())
    assert outcome.status == "retry"
    assert outcome.reason.startswith(f"could not reach PagerDuty (http://127.0.0.1:{port}/…): ")
    assert "Connection refused" in outcome.reason
    assert outcome.hint == (
        "Check network access to the Events API (HTTPS, port 443) and any proxy settings."
    )
    assert_no_secret(outcome)


def test_a_server_slower_than_the_timeout_is_retried(
    sender_for: Callable[[PagerDutyConfig], PagerDutySender]
) -> None:
    with FakePagerDuty(latency=2.0) as slow:
        outcome = sender_for(config(url=slow.url)).send(make_notification(timeout=0.2))
    assert outcome == Outcome.retry(f"no answer from PagerDuty ({slow.url}/…) within 0.2 s")


def test_tls_is_verified(
    certificate_authority: trustme.CA,
    sender_for: Callable[[PagerDutyConfig], PagerDutySender],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    server_context = tls_server_context(certificate_authority)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with FakePagerDuty(ssl_context=server_context) as tls_fake:
        untrusted = sender_for(config(url=tls_fake.url)).send(make_notification())
        assert untrusted.status == "failed"
        assert untrusted.reason.startswith(
            f"TLS certificate of PagerDuty ({tls_fake.url}/…) could not be verified: "
        )
        assert untrusted.hint is not None
        assert "REQUESTS_CA_BUNDLE" in untrusted.hint
        assert tls_fake.requests == []

        bundle = tmp_path / "ca.pem"
        certificate_authority.cert_pem.write_to_path(str(bundle))
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
        trusted = sender_for(config(url=tls_fake.url)).send(make_notification())
        assert trusted == Outcome.delivered("Event processed", dedup_key=DEDUP_KEY)
        assert tls_fake.requests[0].schema_errors == []


def test_concurrent_sends_share_kept_alive_connections(
    fake: FakePagerDuty, sender_for: Callable[[PagerDutyConfig], PagerDutySender]
) -> None:
    sender = sender_for(config(url=fake.url))
    notifications = [make_notification(dedup_key=f"anomalyarmor-key-{i}") for i in range(24)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(sender.send, notifications))
    assert [o.details["dedup_key"] for o in outcomes] == [n.dedup_key for n in notifications]
    assert sorted(e["dedup_key"] for e in fake.events) == sorted(n.dedup_key for n in notifications)
    assert 1 <= len(fake._connections) <= 6  # at most one per thread, kept open
    sender.close()
    deadline = time.monotonic() + 5
    while fake._connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not fake._connections  # close() closed them
    assert sender.send(make_notification()).status == "delivered"


# -- the fake answers as PagerDuty does ------------------------------------------------------------


def post_raw(fake: FakePagerDuty, body: bytes | dict[str, Any], path: str = "/v2/enqueue"
             ) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    with requests.post(f"{fake.url}{path}", data=data, timeout=5,
                       headers={"Content-Type": "application/json"}) as response:
        return response.status_code, response.json()


def trigger(**payload_changes: Any) -> dict[str, Any]:
    payload = {"summary": "disk full", "source": "db01", "severity": "critical", **payload_changes}
    return {"routing_key": KEY, "event_action": "trigger",
            "payload": {k: v for k, v in payload.items() if v is not None}}


def invalid(*errors: str) -> tuple[int, dict[str, Any]]:
    return 400, {"status": "invalid event", "message": "Event object is invalid",
                 "errors": list(errors)}


def test_fake_accepts_a_valid_trigger_and_generates_a_dedup_key(fake: FakePagerDuty) -> None:
    status, answer = post_raw(fake, trigger())
    assert status == 202
    assert answer["status"] == "success"
    assert answer["message"] == "Event processed"
    assert len(answer["dedup_key"]) == 32


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", (400, dict(UNRECOGNIZED_OBJECT))),
        (b"[]", (400, dict(UNRECOGNIZED_OBJECT))),
        ({**trigger(), "routing_key": "y_NbAkKc66ryYTWUXYEu"},
         invalid(ROUTING_KEY_LENGTH, ROUTING_KEY_CHARACTERS)),
        (trigger(source=None), invalid(SOURCE_MISSING)),
        (trigger(source=" "), invalid(SOURCE_MISSING)),
        (trigger(severity=None), invalid(SEVERITY_MISSING)),
        (trigger(severity="Critical"), invalid(SEVERITY_INVALID)),
        (trigger(summary="s" * 1025), invalid(SUMMARY_TOO_LONG)),
    ],
)
def test_fake_refuses_as_pagerduty_documents(
    fake: FakePagerDuty, body: bytes | dict[str, Any], expected: tuple[int, Any]
) -> None:
    assert post_raw(fake, body) == expected
    assert JSON_PARSE_ERROR in json.dumps(UNRECOGNIZED_OBJECT)


def test_fake_refuses_revoked_keys_like_an_invalid_routing_key(fake: FakePagerDuty) -> None:
    fake.revoked_keys.add(KEY)
    assert post_raw(fake, trigger()) == invalid(INVALID_ROUTING_KEY)


def test_fake_checks_the_openapi_schema() -> None:
    assert schema_errors("/v2/enqueue", trigger()) == []
    assert schema_errors("/v2/enqueue", {**trigger(), "severity": "critical"}) == [
        "(body): Additional properties are not allowed ('severity' was unexpected)"
    ]
    assert schema_errors("/v2/enqueue", trigger(timestamp="yesterday")) == [
        "payload/timestamp: 'yesterday' is not a 'date-time'"
    ]
    assert schema_errors(CHANGE_PATH, {"routing_key": KEY, "payload": {}}) == [
        "payload: 'summary' is a required property"
    ]
