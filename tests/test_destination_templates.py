"""Templates in destinations: PagerDuty's summary and custom details, Slack's text and blocks,
email's subject and parts, rendered from the alert, escaped for each target, checked when the
config is loaded, and failing one delivery (never the batch) when they fail for an alert."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import run_cli
from fake_pagerduty import FakePagerDuty
from fake_slack import FakeSlack
from fake_slack_api import TOKEN, FakeSlackApi
from fake_smtp import FakeSMTPServer, ignore_known_aiosmtpd_warnings, plain_server

from armor_notify.api import Notifier
from armor_notify.delivery import State
from armor_notify.errors import ConfigError

PD_KEY = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"
HOSTILE = {
    "id": "alert_hostile", "event_type": "schema_change", "severity": "critical",
    "occurred_at": "2026-11-30T10:00:00Z",
    "title": "<!channel> dropped <script>alert(1)</script> & more",
    "description": "x\r\nBcc: evil@example.com",
    "asset": {"id": "ast_1", "name": "<!here>.public.orders", "environment": "prod\r\nX: y"},
}
TEMPLATES = {
    "pd": {"summary": "{{ alert.asset.name }}: {{ alert.title }}\n{{ alert.description }}",
           "custom_details": {"runbook": "https://runbooks.example.com/{{ alert.event_type }}",
                              "who": "{{ alert.asset.environment }}"}},
    "slack": {"text": "{{ alert.title }} <!channel> is ours, not the alert's",
              "blocks": [{"type": "header", "text": {"type": "plain_text",
                                                     "text": "{{ message.headline }}"}},
                         {"type": "section", "text": {"text": "*{{ alert.title }}* on "
                                                               "`{{ alert.asset.name }}`"},
                          "fields": [{"text": "*Env*\n{{ alert.asset.environment }}"}]},
                         {"type": "divider"},
                         {"type": "context", "elements": [{"text": "{{ alert.description }}"}]}]},
    "email": {"subject": "[{{ alert.severity | upper }}] {{ alert.title }} {{ alert.description }}",
              "text": "{{ alert.title }}\nasset: {{ alert.asset.name }}\n",
              "html": "<h1>{{ alert.title }}</h1><p>{{ alert.asset.name }}</p>"},
}


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[tuple[FakePagerDuty, FakeSlack, FakeSlackApi,
                                                FakeSMTPServer]]:
    ignore_known_aiosmtpd_warnings()
    with FakePagerDuty() as pd, FakeSlack() as slack, FakeSlackApi() as api, \
            plain_server() as smtp:
        yield pd, slack, api, smtp


def config(pd: FakePagerDuty, slack: FakeSlack, api: FakeSlackApi,
           smtp: FakeSMTPServer) -> dict[str, Any]:
    return {"version": 1, "destinations": {
        "pd": {"type": "pagerduty", "integration_key": PD_KEY, "url": pd.url,
               "template": TEMPLATES["pd"]},
        "slack": {"type": "slack", "webhook_url": slack.url, "template": TEMPLATES["slack"]},
        "bot": {"type": "slack", "token": TOKEN, "channel": "C0123ALERTS", "api_url": api.url,
                "template": TEMPLATES["slack"]},
        "mail": {"type": "email", **smtp.config(security="none", allow_insecure=True),
                 "template": TEMPLATES["email"]}},
        "rules": [{"name": "All", "event": "schema_change",
                   "destinations": ["pd", "slack", "bot", "mail"]}]}


def test_templates_cannot_bring_back_the_injections_the_built_in_formats_prevent(
        receivers: Any) -> None:
    pd, slack, api, smtp = receivers
    with Notifier.from_dict(config(pd, slack, api, smtp)) as nt:
        report = nt.send(nt.parse_alerts(HOSTILE), wait=10)
        previews = {p["destination"]: p["payload"] for p in nt.preview(nt.parse_alerts(HOSTILE))}
    assert {d.destination: d.state for d in report.deliveries} == dict.fromkeys(
        ("pd", "slack", "bot", "mail"), State.delivered), [d.reason for d in report.deliveries]

    (event,) = pd.events
    payload = event["payload"]
    assert payload["summary"] == ("<!here>.public.orders: <!channel> dropped "
                                  "<script>alert(1)</script> & more x Bcc: evil@example.com")
    assert payload["custom_details"]["runbook"] == "https://runbooks.example.com/schema_change"
    assert payload["custom_details"]["who"] == "prod X: y"
    assert payload["custom_details"]["rule"] == "All"  # the built-in details stay
    assert event == {**previews["pd"]["event"], "routing_key": PD_KEY}

    for body in (slack.requests[0].json(), api.requests[0].json()):
        text = json.dumps(body)
        assert "<!channel> dropped" not in text and "<!here>" not in text
        assert body["text"] == ("&lt;!channel&gt; dropped &lt;script&gt;alert(1)&lt;/script&gt; "
                                "&amp; more <!channel> is ours, not the alert's")
        header, section, divider, context = body["blocks"]
        assert header == {"type": "header", "text": {"type": "plain_text",
                                                     "text": "CRITICAL · Schema change"}}
        assert section["text"] == {"type": "mrkdwn", "verbatim": True, "text": (
            "*&lt;!channel&gt; dropped &lt;script&gt;alert(1)&lt;/script&gt; &amp; more* on "
            "`&lt;!here&gt;.public.orders`")}
        assert section["fields"][0]["text"] == "*Env*\nprod X: y"
        assert divider == {"type": "divider"}
        assert context["elements"][0]["text"] == "x\r\nBcc: evil@example.com"  # just text here
        assert "link_names" not in body and "parse" not in body
    assert previews["slack"]["payload"] == slack.requests[0].json()

    (mail,) = smtp.handler.received
    message = mail.message
    assert message["Subject"] == ("[CRITICAL] <!channel> dropped <script>alert(1)</script> & "
                                  "more x Bcc: evil@example.com")
    assert message["Bcc"] is None and mail.rcpt_tos == ["data-eng@example.com"]
    html_part = message.get_body(("html",))
    assert html_part is not None
    assert html_part.get_content().strip() == (
        "<h1>&lt;!channel&gt; dropped &lt;script&gt;alert(1)&lt;/script&gt; &amp; more</h1>"
        "<p>&lt;!here&gt;.public.orders</p>")
    assert previews["mail"]["headers"]["Subject"] == message["Subject"]


def test_a_template_that_fails_for_one_alert_fails_that_delivery_only(receivers: Any) -> None:
    pd, slack, api, smtp = receivers
    data = config(pd, slack, api, smtp)
    data["destinations"]["slack"]["template"] = {
        "text": "{{ alert.freshness.delay_hours }} hours late"}
    with Notifier.from_dict(data) as nt:
        fresh = {**HOSTILE, "id": "alert_fresh", "event_type": "schema_change",
                 "freshness": {"delay_hours": 5}}
        report = nt.send(nt.parse_alerts([HOSTILE, fresh]), wait=10)
    states = {(d.alert.id, d.destination): d for d in report.deliveries}
    failed = states[("alert_hostile", "slack")]
    assert failed.state is State.failed and failed.attempt_count == 1
    assert failed.reason.startswith("a template failed for this alert: template.text, line 1:")
    assert failed.reason.endswith("'None' has no attribute 'delay_hours'")
    assert "armor-notify preview ALERT_FILE -d slack" in (failed.hint or "")
    assert states[("alert_fresh", "slack")].state is State.delivered
    assert slack.requests[0].json()["text"] == "5.0 hours late"
    others = [d for d in report.deliveries if d.destination != "slack"]
    assert {d.state for d in others} == {State.delivered} and len(others) == 6


def test_template_mistakes_are_config_errors_on_their_line(tmp_path: Path) -> None:
    path = tmp_path / "armor-notify.yaml"
    path.write_text(yaml.safe_dump({"version": 1}) + """\
destinations:
  mail:
    type: email
    host: localhost
    security: none
    from: a@example.com
    to: [b@example.com]
    template:
      subject: "{{ alert.titel }}"
      text: |
        Hello
        {% for c in alert.changes %}{{ c.column }}{% endfor %}
        {{ alert.title
  slack:
    type: slack
    webhook_url: https://hooks.slack.com/services/T/B/SECRETSECRET
    template:
      blocks:
        - type: header
          text: {type: mrkdwn, text: "{{ alert.title }}"}
        - type: table
        - type: section
rules: []
""")
    with pytest.raises(ConfigError) as caught:
        Notifier.from_file(path)
    found = {(p.path, p.line): p.message for p in caught.value.problems}
    assert found[("destinations.mail.template.subject", 10)] == (
        "line 1: unknown field 'alert.titel' (did you mean 'alert.title'?)")
    text = found[("destinations.mail.template.text", 14)]  # the unclosed {{ on the text's 3rd line
    assert text.startswith("line 3: unexpected end of template")
    assert found[("destinations.slack.template.blocks[0].header.text", 20)] == (
        "a header's text is plain_text (Slack shows no mrkdwn there)")
    assert "'table' found using 'type' does not match any of the expected tags: 'header', " \
           "'section', 'context', 'divider'" in found[("destinations.slack.template.blocks[1]", 22)]
    assert found[("destinations.slack.template.blocks[2].section", 23)] == (
        "a section needs text or fields")
    assert len(found) == 5 and "SECRETSECRET" not in str(caught.value)

    shown = run_cli("validate", "--config", str(path))
    assert shown.returncode == 2 and f"{path}:10:" in shown.stderr and f"{path}:14:" in shown.stderr
