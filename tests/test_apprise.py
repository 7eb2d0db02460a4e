"""The ``apprise`` bridge and the Apprise-syntax URLs of the native destinations.

Apprise's own JSON, Form and XML services are sent to loopback HTTP receivers started here; the
Apprise-style ``pagerduty://``, ``slack://``, ``https://hooks.slack.com/…`` and ``mailto://`` URLs
are checked against the equivalent native configs, on the wire through the fakes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from armor_notify_plugins import apprise_bridge
from armor_notify_plugins.apprise_bridge import (
    APPRISE_MISSING,
    AppriseConfig,
    AppriseSender,
    render_markdown,
)
from armor_notify_plugins.email import EmailSender
from armor_notify_plugins.pagerduty_sender import PagerDutySender
from armor_notify_plugins.slack_sender import SlackSender
from conftest import SITE, run_cli
from fake_pagerduty import FakePagerDuty
from fake_slack import WEBHOOK_PATH, FakeSlack
from fake_smtp import plain_server

from armor_notify import (
    Alert,
    DestinationConfig,
    DestinationType,
    Notification,
    Outcome,
    SecretUrl,
    mask_secret,
)
from armor_notify.config import Config, config_from_dict
from armor_notify.errors import ConfigError, PluginError
from armor_notify.message import build_message
from armor_notify.plugins import Registry, load_plugins

PD_KEY = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"
REST_KEY = "RESTAPIKEY0123456789"  # 20 characters: Apprise's REST API key, ignored here
SLACK_TOKEN = "XXXXXXXXXXXXXXXXXXXXXXXX"  # the secret part of fake_slack.WEBHOOK_PATH
SLACK_HOOK = f"https://hooks.slack.com{WEBHOOK_PATH}"
PASSWORD = "SECRETPASSWORD42"
TOKEN = "TOKENTOKENTOKEN9"
SECRETS = (PD_KEY, REST_KEY, SLACK_TOKEN, PASSWORD, TOKEN)

ALERT: dict[str, Any] = {
    "id": "alert_apprise_1",
    "event_type": "schema_change",
    "severity": "critical",
    "title": "3 columns removed from orders",
    "description": "Dropped by migration 0042.",
    "asset": {"id": "ast_orders_01", "name": "analytics.public.orders",
              "data_source": "warehouse-prod", "environment": "production"},
    "changes": [{"type": "column_removed", "column": "email", "from": "varchar"},
                {"type": "column_added", "column": "contact_id", "to": "bigint"}],
    "link": "https://app.anomalyarmor.ai/alerts/alert_apprise_1",
    "occurred_at": "2024-05-01T12:00:00Z",
}


def notification(timeout: float = 5, **changes: Any) -> Notification:
    return Notification(
        alert=Alert.model_validate({**ALERT, **changes}),
        destination="hook",
        rule="Production Breaking Changes",
        dedup_key="anomalyarmor-production-breaking-changes-schema_change-ast_orders_01",
        source="anomalyarmor",
        link_text="View in AnomalyArmor",
        timeout=timeout,
    )


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in str(text)


# -- a loopback receiver for Apprise's json://, form:// and xml:// -------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}


class Receiver:
    """Answers every POST with the next scripted status (then ``default``); ``hang`` never answers."""

    def __init__(self, default: int = 200) -> None:
        self.default = default
        self.hang = False
        self.received: list[Received] = []
        self._script: deque[int] = deque()
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.02}, daemon=True)

    def url(self, scheme: str, path: str = "/alerts", userinfo: str = "") -> str:
        return f"{scheme}://{userinfo}127.0.0.1:{self._server.server_port}{path}"

    def script(self, *statuses: int) -> None:
        with self._lock:
            self._script.extend(statuses)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _answer(self, received: Received) -> int | None:
        with self._lock:
            self.received.append(received)
            if self.hang:
                return None
            return self._script.popleft() if self._script else self.default

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # TCP_NODELAY: no 40 ms Nagle wait per kept-alive answer

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver._answer(
                    Received(self.path, self.headers.get("Content-Type", ""), body))
                if status is None:
                    receiver._release.wait(10)
                    self.close_connection = True
                    return
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def sender(url: str, **options: Any) -> AppriseSender:
    return AppriseSender(AppriseConfig.model_validate({"url": url, **options}))


def parse(destinations: dict[str, Any]) -> Config:
    return config_from_dict({"version": 1, "destinations": destinations}, load_plugins().registry)


def problems(destinations: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(destinations)
    return [f"{p.path}: {p.message}" for p in info.value.problems]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# -- Apprise is imported only when a bridged destination is used --------------------------------


@pytest.mark.slow
def test_importing_listing_plugins_and_native_urls_never_import_apprise() -> None:
    code = textwrap.dedent(f"""
        import sys
        import armor_notify
        from click.testing import CliRunner
        from armor_notify.cli import cli
        from armor_notify.config import config_from_dict
        from armor_notify.plugins import load_plugins
        result = CliRunner().invoke(cli, ["plugins"])
        assert result.exit_code == 0 and "apprise" in result.output, result.output
        config_from_dict({{"version": 1, "destinations": {{
            "pd": "pagerduty://{PD_KEY}@{REST_KEY}", "slack": "{SLACK_HOOK}",
            "mail": "mailto://127.0.0.1:2525/to@example.com?from=a@example.com"}}}},
            load_plugins().registry)
        print("apprise" in sys.modules)
        config_from_dict({{"version": 1, "destinations": {{"hook": "json://127.0.0.1/x"}}}},
                         load_plugins().registry)
        print("apprise" in sys.modules)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARMOR_NOTIFY_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]


# -- sending through Apprise ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_rule_fans_out_to_apprise_services_through_the_cli(tmp_path: Path) -> None:
    with Receiver() as hooks, Receiver() as forms:
        config = write(tmp_path, "armor-notify.yaml", f"""
            version: 1
            destinations:
              hook-json: "{hooks.url('json', '/alerts/' + TOKEN)}"
              hook-form:
                type: apprise
                url: ${{FORM_URL}}
            rules:
              - name: Production Breaking Changes
                event: schema_change
                destinations: [hook-json, hook-form]
        """)
        alert = write(tmp_path, "alert.json", json.dumps(ALERT))
        env = {"FORM_URL": forms.url("form", "/in", userinfo=f"user:{PASSWORD}@")}
        result = run_cli("send", str(alert), "--config", str(config), "--json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    states = {d["destination"]: (d["destination_type"], d["state"], d["details"])
              for d in report["deliveries"]}
    assert states == {"hook-json": ("apprise", "delivered", {"apprise_service": "JSON"}),
                      "hook-form": ("apprise", "delivered", {"apprise_service": "Form"})}
    [posted] = hooks.received
    assert posted.path == f"/alerts/{TOKEN}"
    assert posted.content_type.startswith("application/json")
    body = posted.json()
    assert body["title"] == "CRITICAL · Schema change: 3 columns removed from orders"
    assert body["type"] == "failure"  # critical
    message = body["message"]
    for line in ("Rule: Production Breaking Changes", "Asset: analytics.public.orders",
                 "Dropped by migration 0042.", "- Column removed: email (was varchar) — breaking",
                 "View in AnomalyArmor: https://app.anomalyarmor.ai/alerts/alert_apprise_1"):
        assert line in message
    [form] = forms.received
    assert form.form()["title"] == body["title"] and form.form()["message"] == message
    assert_no_secret(result.stdout, result.stderr)


@pytest.mark.slow
def test_per_service_outcomes_with_apprise_reasons_through_the_cli(tmp_path: Path) -> None:
    with Receiver() as flaky, Receiver(default=400) as refusing, Receiver(default=503) as down:
        flaky.script(500)
        config = write(tmp_path, "armor-notify.yaml", f"""
            version: 1
            destinations:
              flaky: {{type: apprise, url: "{flaky.url('json')}", retry_backoff: 0.01}}
              refusing: {{type: apprise, url: "{refusing.url('form')}", retry_backoff: 0.01}}
              down:
                type: apprise
                url: "{down.url('xml', '/x/' + TOKEN)}"
                max_attempts: 2
                retry_backoff: 0.01
            rules:
              - {{name: All, event: schema_change, destinations: [flaky, refusing, down]}}
        """)
        alert = write(tmp_path, "alert.json", json.dumps(ALERT))
        result = run_cli("send", str(alert), "--config", str(config), "--json")
    assert result.returncode == 1, result.stderr
    by_name = {d["destination"]: d for d in json.loads(result.stdout)["deliveries"]}

    flaky_result = by_name["flaky"]  # 500, then 200: retried, then delivered
    assert flaky_result["state"] == "delivered" and flaky_result["attempts"] == 2
    first = flaky_result["history"][0]
    assert first["status"] == "retry"
    assert first["reason"] == ("Apprise JSON: Failed to send JSON POST notification: "
                               "Internal server error., error=500.")

    refused = by_name["refusing"]  # 400: permanent, never retried
    assert refused["state"] == "failed" and refused["attempts"] == 1
    assert "error=400" in refused["reason"] and refused["reason"].startswith("Apprise Form:")
    assert refused["details"] == {"apprise_service": "Form", "status": 400}

    gave_up = by_name["down"]  # 503 twice: retried up to max_attempts, then given up
    assert gave_up["state"] == "dead" and gave_up["attempts"] == 2
    assert [h["status"] for h in gave_up["history"]] == ["retry", "retry"]
    assert "error=503" in gave_up["reason"]
    assert len(flaky.received) == 2 and len(refusing.received) == 1 and len(down.received) == 2
    assert_no_secret(result.stdout, result.stderr)


@pytest.mark.parametrize(("status", "expected", "hint"), [
    (200, "delivered", None),
    (500, "retry", None),
    (502, "retry", None),
    (429, "retry", None),
    (408, "retry", None),
    (400, "failed", None),
    (401, "failed", "credentials"),
    (404, "failed", "deleted webhook"),
    (422, "failed", None),
])
def test_outcome_by_answer(receiver: Receiver, status: int, expected: str,
                           hint: str | None) -> None:
    receiver.default = status
    outcome = sender(receiver.url("json")).send(notification())
    assert outcome.status == expected
    assert outcome.details["apprise_service"] == "JSON"
    if expected != "delivered":
        assert f"error={status}" in outcome.reason
        assert outcome.details["status"] == status
    assert (outcome.hint is None) if hint is None else (hint in (outcome.hint or ""))


def test_reasons_mask_the_url_and_its_tokens() -> None:
    # Nothing listens there: Apprise names the host it could not reach, never the URL's secrets.
    url = f"json://user:{PASSWORD}@127.0.0.1:9/hook/{TOKEN}"
    outcome = sender(url, timeout=2).send(notification(timeout=2))
    assert outcome.status == "retry"
    assert "Connection error" in outcome.reason and "127.0.0.1" in outcome.reason
    bridge = sender(url)
    assert bridge._scrub(f"failed: {url} as user:{PASSWORD} on /hook/{TOKEN}") == (
        f"failed: json://… as {mask_secret('user:' + PASSWORD)} on /hook/{mask_secret(TOKEN)}")
    assert_no_secret(outcome, bridge, bridge.config, bridge.config.describe())


def test_concurrent_deliveries_keep_their_own_reasons() -> None:
    with Receiver(default=503) as unavailable, Receiver(default=404) as missing:
        senders = {503: sender(unavailable.url("json")), 404: sender(missing.url("json"))}
        with ThreadPoolExecutor(8) as pool:
            futures = [(code, pool.submit(senders[code].send, notification()))
                       for _ in range(6) for code in (503, 404)]
            outcomes = [(code, future.result()) for code, future in futures]
    for code, outcome in outcomes:
        assert outcome.reason.count("error=") == 1 and f"error={code}" in outcome.reason
    assert {o.status for c, o in outcomes if c == 503} == {"retry"}
    assert {o.status for c, o in outcomes if c == 404} == {"failed"}


def test_apprise_throttle_retries_and_timeouts_are_set_explicitly(receiver: Receiver) -> None:
    # retry, wait and rto in the URL are Apprise's own knobs: the bridge overrides them.
    bridge = sender(receiver.url("json", "/a?retry=3&wait=5&rto=30"), timeout=2)
    with ThreadPoolExecutor(3) as pool:
        assert all(o.status == "delivered" for o in pool.map(
            lambda _: bridge.send(notification(timeout=2)), range(6)))
    services = bridge.services()
    assert services  # one per worker thread that sent
    for service in services:
        assert service.request_rate_per_sec == 0
        assert service.retry == 0 and service.wait == 0
        assert service.socket_connect_timeout == service.socket_read_timeout == 2.0
        assert getattr(service.asset, "_service_timeout", 0) == 0

    # A service whose own default throttle is seconds long (PagerDuty: 5.5 s per instance).
    paging = sender(f"pagerduty://{PD_KEY}@{REST_KEY}", timeout=3).service()
    assert type(paging).request_rate_per_sec > 1
    assert paging.request_rate_per_sec == 0 and paging.retry == 0
    assert paging.socket_read_timeout == 3.0


def test_a_receiver_that_never_answers_is_retried_within_the_timeout(receiver: Receiver) -> None:
    receiver.hang = True
    started = time.monotonic()
    outcome = sender(receiver.url("json"), timeout=1).send(notification(timeout=1))
    took = time.monotonic() - started
    assert outcome.status == "retry"
    assert "timed out" in outcome.reason and "within 1 s" in outcome.reason
    assert 0.9 <= took < 2.5


def test_markdown_services_get_escaped_markdown(receiver: Receiver) -> None:
    hostile = "[click](https://evil.example) <b>bold</b> **x**"
    bridge = sender(receiver.url("json", "/md?format=markdown"))
    assert bridge.send(notification(title=hostile)).status == "delivered"
    message = receiver.received[-1].json()["message"]
    assert "**Rule:** Production Breaking Changes" in message
    assert "[View in AnomalyArmor](https://app.anomalyarmor.ai/alerts/alert_apprise_1)" in message
    text = render_markdown(build_message(notification(description=hostile)), "anomalyarmor")
    assert r"\[click\]\(https://evil\.example\) \<b\>bold\</b\> \*\*x\*\*" in text
    assert "[click]" not in text and "<b>" not in text

    plain = sender(receiver.url("json", "/plain"))
    assert plain.send(notification()).status == "delivered"
    assert "Rule: Production Breaking Changes" in receiver.received[-1].json()["message"]


def test_resolved_alerts_are_sent_as_success() -> None:
    resolved = build_message(notification(status="resolved"))
    assert apprise_bridge.notify_type(resolved) == "success"
    assert apprise_bridge.notify_type(build_message(notification(severity="warning"))) == "warning"
    assert apprise_bridge.notify_type(build_message(notification(severity="info"))) == "info"
    body = apprise_bridge.render_text(resolved, "anomalyarmor")
    assert "Column removed" not in body and "Rule: Production Breaking Changes" in body


# -- config: type: apprise, bare URLs, errors ------------------------------------------------------


def test_type_apprise_and_bare_urls_become_the_bridge() -> None:
    config = parse({
        "typed": {"type": "apprise", "url": f"json://u:{PASSWORD}@127.0.0.1/{TOKEN}"},
        "bare": f"discord://1234567890/{TOKEN}",
        "native-https": f"https://discord.com/api/webhooks/1234567890/{TOKEN}",
    })
    described = {name: (d.type.name, d.describe()) for name, d in config.destinations.items()}
    assert described == {"typed": ("apprise", "Apprise JSON (json://…)"),
                         "bare": ("apprise", "Apprise Discord (discord://…)"),
                         "native-https": ("apprise", "Apprise Discord (https://…)")}
    assert_no_secret(repr(config.destinations))
    assert config.destinations["bare"].send_resolved is True
    assert config.destinations["bare"].rate_limit is None


def test_unknown_schemes_are_reported_by_scheme_only() -> None:
    found = problems({
        "typo": f"fomr://{TOKEN}@example.com",
        "typed": {"type": "apprise", "url": f"nosuch://{TOKEN}"},
        "other-https": f"https://example.com/hooks/{TOKEN}",
        "teams": f"msteams://{TOKEN}/{TOKEN}",
        "unreadable": "slack://",
        "plain-http": f"json://example.com/{TOKEN}",
    })
    assert found == [
        "destinations.typo: cannot read this fomr:// URL: no installed destination type handles "
        "'fomr://' URLs, and Apprise has no service for 'fomr://' URLs (did you mean 'form://'?)",
        "destinations.typed.url: Apprise has no service for 'nosuch://' URLs",
        "destinations.other-https: cannot read this https:// URL: Apprise does not recognise "
        "this https:// URL: Apprise reads the https:// URLs of a few services (such as Discord "
        "webhooks); otherwise write the service's own scheme, e.g. json:// or jsons:// for any "
        "JSON webhook",
        "destinations.teams: cannot read this msteams:// URL: no installed destination type "
        "handles 'msteams://' URLs, and Apprise has no service for 'msteams://' URLs: Microsoft "
        "retired Office 365 connectors (recent Apprise releases have no msteams://); post to "
        "Teams through a Power Automate workflow with workflows:// instead",
        "destinations.unreadable: cannot read this slack:// URL: only Apprise's incoming-webhook "
        "form slack://TokenA/TokenB/TokenC is supported (a webhook always posts to the channel "
        "it was created for, under the app's name); to use Apprise's other Slack options, write "
        "type: apprise with this url",
        "destinations.plain-http: cannot read this json:// URL: json:// sends alerts over "
        "plain http: use jsons:// "
        "(https); plain json:// is allowed only for loopback hosts (localhost, 127.0.0.0/8, ::1)",
    ]
    assert_no_secret(*found)


def test_apprise_that_cannot_read_a_known_scheme_points_to_its_docs() -> None:
    [found] = problems({"bad": {"type": "apprise", "url": "discord://"}})
    assert found.startswith("destinations.bad.url: Apprise could not read this discord:// URL: "
                            "check it against the service's URL forms")


def test_missing_apprise_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "apprise", None)  # `import apprise` raises ImportError
    found = problems({"typed": {"type": "apprise", "url": "json://127.0.0.1/x"},
                      "bare": "json://127.0.0.1/x"})
    assert found == [
        f"destinations.typed.url: {APPRISE_MISSING}",
        "destinations.bare: cannot read this json:// URL: no installed destination type handles "
        f"'json://' URLs, and {APPRISE_MISSING}",
    ]
    # Native URLs do not need Apprise.
    assert parse({"pd": f"pagerduty://{PD_KEY}@{REST_KEY}"}).destinations["pd"].type.name == (
        "pagerduty")
    with pytest.raises(ValueError, match="pip install 'armor-notify\\[apprise\\]'"):
        AppriseSender(AppriseConfig.model_construct(url=apprise_bridge.AppriseUrl("json://x/")))


@pytest.mark.slow
def test_missing_apprise_through_the_cli(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "apprise"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("No module named \'apprise\'")\n')
    env = {"PYTHONPATH": os.pathsep.join([str(shadow.parent), str(SITE)])}
    config = write(tmp_path, "armor-notify.yaml", """
        version: 1
        destinations:
          hook: {type: apprise, url: "json://127.0.0.1/x"}
    """)
    result = run_cli("validate", "--config", str(config), env=env)
    assert result.returncode == 2
    assert f"destinations.hook.url: {APPRISE_MISSING}" in result.stderr
    assert "Traceback" not in result.stderr
    listing = run_cli("plugins", env=env)
    assert listing.returncode == 0 and "apprise" in listing.stdout


@pytest.mark.slow
def test_validate_and_route_show_the_type_each_url_became(tmp_path: Path) -> None:
    with Receiver() as hooks:
        config = write(tmp_path, "armor-notify.yaml", f"""
            version: 1
            destinations:
              pd: "pagerduty://{PD_KEY}@{REST_KEY}/anomalyarmor?region=eu"
              slack-token: "slack://T00000000/B00000000/{SLACK_TOKEN}"
              slack-hook: "{SLACK_HOOK}"
              mail: "mailtos://alerts%40example.com:{PASSWORD}@smtp.example.com/data@example.com"
              discord: "https://discord.com/api/webhooks/1234567890/{TOKEN}"
              hook: "{hooks.url('json', '/in/' + TOKEN, userinfo=f'u:{PASSWORD}@')}"
            rules:
              - name: All
                event: schema_change
                destinations: [pd, slack-token, slack-hook, mail, discord, hook]
        """)
        alert = write(tmp_path, "alert.json", json.dumps(ALERT))
        validated = run_cli("validate", "--config", str(config), "--json")
        validated_text = run_cli("validate", "--config", str(config))
        routed = run_cli("route", str(alert), "--config", str(config), "--json")
        routed_text = run_cli("route", str(alert), "--config", str(config))
    assert validated.returncode == routed.returncode == 0, validated.stderr + routed.stderr
    expected = {
        "pd": ("pagerduty", "PagerDuty eu, key a1b2…c5d6"),
        "slack-token": ("slack", "Slack webhook https://hooks.slack.com/…"),
        "slack-hook": ("slack", "Slack webhook https://hooks.slack.com/…"),
        "mail": ("email", "email via smtp.example.com:587 (starttls) to data@example.com"),
        "discord": ("apprise", "Apprise Discord (https://…)"),
        "hook": ("apprise", "Apprise JSON (json://…)"),
    }
    dests = json.loads(validated.stdout)["destinations"]
    assert {d["name"]: (d["type"], d["target"]) for d in dests} == expected
    routes = json.loads(routed.stdout)["alerts"][0]["routes"]
    assert {r["destination"]: (r["type"], r["target"]) for r in routes} == expected
    for name, (type_name, target) in expected.items():
        for text in (validated_text.stdout, routed_text.stdout):
            assert any(name in line and type_name in line and target in line
                       for line in text.splitlines()), (name, text)
    assert_no_secret(validated.stdout, validated.stderr, validated_text.stdout,
                     routed.stdout, routed.stderr, routed_text.stdout)


# -- Apprise-syntax URLs of the native destinations -----------------------------------------------


@pytest.mark.parametrize(("url", "native"), [
    (f"pagerduty://{PD_KEY}@{REST_KEY}",
     {"type": "pagerduty", "integration_key": PD_KEY}),
    (f"pagerduty://{PD_KEY}@{REST_KEY}/warehouse-monitor/orders?region=eu&severity=warning",
     {"type": "pagerduty", "integration_key": PD_KEY, "region": "eu", "severity": "warning",
      "source": "warehouse-monitor"}),
    (f"pagerduty://{REST_KEY}?integrationkey={PD_KEY}&source=wh&+team=data&dedup=x&retry=2",
     {"type": "pagerduty", "integration_key": PD_KEY, "source": "wh"}),
    (f"slack://T00000000/B00000000/{SLACK_TOKEN}", {"type": "slack", "webhook_url": SLACK_HOOK}),
    (SLACK_HOOK, {"type": "slack", "webhook_url": SLACK_HOOK}),
    (f"mailtos://alerts%40example.com:{PASSWORD}@smtp.example.com/data@example.com",
     {"type": "email", "host": "smtp.example.com", "security": "starttls",
      "username": "alerts@example.com", "password": PASSWORD, "from": "alerts@example.com",
      "to": ["data@example.com"]}),
    (f"mailtos://alerts:{PASSWORD}@example.com:465?mode=ssl&smtp=mail.example.com"
     "&to=a@example.com,b@example.com&cc=c@example.com&name=AnomalyArmor&verify=no",
     {"type": "email", "host": "mail.example.com", "port": 465, "security": "ssl",
      "username": "alerts", "password": PASSWORD, "from": "AnomalyArmor <alerts@example.com>",
      "to": ["a@example.com", "b@example.com"], "cc": ["c@example.com"], "verify": False}),
    (f"mailtos://{PASSWORD}@smtp.example.com?user=ops@example.com",
     {"type": "email", "host": "smtp.example.com", "security": "starttls",
      "username": "ops@example.com", "password": PASSWORD, "from": "ops@example.com",
      "to": ["ops@example.com"]}),
    ("mailto://127.0.0.1:2525/data@example.com?from=alerts@example.com",
     {"type": "email", "host": "127.0.0.1", "port": 2525, "security": "none",
      "from": "alerts@example.com", "to": ["data@example.com"]}),
])
def test_apprise_syntax_maps_to_the_native_config(url: str, native: dict[str, Any]) -> None:
    config = parse({"from-url": url, "native": native})
    mapped, expected = config.destinations["from-url"], config.destinations["native"]
    assert mapped.type.name == expected.type.name == native["type"]
    assert mapped.config == expected.config


@pytest.mark.parametrize(("url", "message"), [
    (f"pagerduty://{REST_KEY}", "no integration key: write pagerduty://INTEGRATION_KEY@API_KEY"),
    (f"pagerduty://{PD_KEY}@{REST_KEY}?severty=info", "unknown parameter 'severty'"),
    ("https://hooks.slack.com/workflows/T0/A0/123/abc", "only Slack incoming-webhook URLs"),
    (f"mailto://alerts:{PASSWORD}@smtp.example.com/x@example.com", "sends mail unencrypted"),
    (f"mailtos://alerts:{PASSWORD}@smtp.example.com?bcc=x@example.com", "parameter 'bcc'"),
    ("mailtos://smtp.example.com", "no sender address"),
])
def test_apprise_syntax_errors_name_the_problem_not_the_secret(url: str, message: str) -> None:
    [found] = problems({"d": url})
    assert message in found
    assert_no_secret(found)


@pytest.mark.parametrize(("url", "native_type"), [
    (f"pagerduty://{PD_KEY}@{REST_KEY}?FORMAT=markdown&overflow=split&tz=UTC&cto=3&rto=4",
     "pagerduty"),
    (f"mailtos://alerts:{PASSWORD}@smtp.example.com/a@example.com?Format=html&retry=3&store=no",
     "email"),
])
def test_apprise_options_for_every_service_are_accepted_and_ignored(
    url: str, native_type: str
) -> None:
    # Apprise takes these for any service; the native types time, retry and format themselves,
    # so the URL still becomes the native destination (no "unknown parameter").
    assert parse({"d": url}).destinations["d"].type.name == native_type


def test_verify_is_read_by_email_and_ignored_by_pagerduty() -> None:
    config = parse({"mail": f"mailtos://alerts:{PASSWORD}@smtp.example.com/a@example.com?verify=no",
                    "pd": f"pagerduty://{PD_KEY}@{REST_KEY}?verify=no"})
    assert config.destinations["mail"].config.verify is False  # type: ignore[attr-defined]
    assert config.destinations["pd"].type.name == "pagerduty"


def test_pagerduty_url_sends_the_same_events_as_the_native_config() -> None:
    config = parse({
        "from-url": f"pagerduty://{PD_KEY}@{REST_KEY}/warehouse-monitor?severity=error",
        "native": {"type": "pagerduty", "integration_key": PD_KEY, "source": "warehouse-monitor",
                   "severity": "error"},
    })
    with FakePagerDuty() as fake:
        for name in ("from-url", "native"):
            # Both point at the loopback fake instead of events.pagerduty.com.
            local = config.destinations[name].config.model_copy(update={"url": fake.url})
            for status in ("triggered", "resolved"):
                outcome = PagerDutySender(local).send(notification(status=status))  # type: ignore[arg-type]
                assert outcome.status == "delivered", outcome
        events = fake.events
    assert len(events) == 4 and all(not r.schema_errors for r in fake.requests)
    assert events[:2] == events[2:]
    assert events[0]["payload"]["source"] == "warehouse-monitor"
    assert events[0]["payload"]["severity"] == "error"


def test_slack_urls_send_the_same_message_as_the_native_config() -> None:
    config = parse({"token": f"slack://T00000000/B00000000/{SLACK_TOKEN}", "hook": SLACK_HOOK,
                    "native": {"type": "slack", "webhook_url": SLACK_HOOK}})
    with FakeSlack() as fake:
        for name in ("token", "hook", "native"):
            dest = config.destinations[name].config
            assert dest.webhook_url.get_secret_value() == SLACK_HOOK  # type: ignore[attr-defined]
            local = dest.model_copy(update={"webhook_url": SecretUrl(fake.url)})
            assert SlackSender(local).send(notification()).status == "delivered"  # type: ignore[arg-type]
        bodies = [json.loads(r.body) for r in fake.requests]
    assert len(bodies) == 3 and bodies[0] == bodies[1] == bodies[2]


def test_mailto_url_sends_the_same_email_as_the_native_config() -> None:
    with plain_server() as server:
        config = parse({
            "from-url": f"mailto://{server.host}:{server.port}/data-eng@example.com"
                        "?from=alerts@example.com&name=AnomalyArmor&cc=lead@example.com",
            "native": {"type": "email", "host": server.host, "port": server.port,
                       "security": "none", "from": "AnomalyArmor <alerts@example.com>",
                       "to": ["data-eng@example.com"], "cc": ["lead@example.com"]},
        })
        for name in ("from-url", "native"):
            sent = EmailSender(config.destinations[name].config).send(notification())  # type: ignore[arg-type]
            assert sent.status == "delivered", sent
        received = server.handler.received
    assert len(received) == 2
    first, second = (r.message for r in received)
    varying = ("Date", "Message-ID", "Content-Type")  # Content-Type: its MIME boundary
    assert [(k, v) for k, v in first.items() if k not in varying] == [
        (k, v) for k, v in second.items() if k not in varying]
    parts = [[(p.get_content_type(), p.get_content()) for p in m.iter_parts()]
             for m in (first, second)]
    assert parts[0] == parts[1] and [t for t, _ in parts[0]] == ["text/plain", "text/html"]
    assert received[0].rcpt_tos == received[1].rcpt_tos == ["data-eng@example.com",
                                                            "lead@example.com"]


# -- the core: a fallback type for bare URLs -------------------------------------------------------


class HookConfig(DestinationConfig):
    url: str


class NoSender:
    def __init__(self, config: Any) -> None:
        pass

    def send(self, notification: Notification) -> Outcome:
        return Outcome.delivered()


def test_bare_urls_go_to_claiming_types_first_then_to_the_fallback() -> None:
    def only_example_com(url: str) -> dict[str, Any] | None:
        return {"url": url} if "://example.com" in url else None

    registry = Registry()
    registry.add_destination_type("one", DestinationType(
        "picky", HookConfig, NoSender, url_schemes=("https",), from_url=only_example_com))
    registry.add_destination_type("two", DestinationType(
        "catch-all", HookConfig, NoSender, url_fallback=True, from_url=lambda url: {"url": url}))
    assert [t.name for t in registry.types_for_scheme("https")] == ["picky", "catch-all"]
    assert [t.name for t in registry.types_for_scheme("whatever")] == ["catch-all"]
    assert registry.type_for_scheme("whatever") is registry.destination_types["catch-all"]
    config = config_from_dict({"version": 1, "destinations": {
        "mine": "https://example.com/x", "declined": "https://other.example/x",
        "unclaimed": "gopher://x"}}, registry)
    assert {n: d.type.name for n, d in config.destinations.items()} == {
        "mine": "picky", "declined": "catch-all", "unclaimed": "catch-all"}

    with pytest.raises(PluginError, match="both take every otherwise unclaimed URL scheme"):
        registry.add_destination_type("three", DestinationType(
            "second-catch-all", HookConfig, NoSender, url_fallback=True))

    without_fallback = Registry()
    without_fallback.add_destination_type("one", DestinationType(
        "picky", HookConfig, NoSender, url_schemes=("https",), from_url=only_example_com))
    with pytest.raises(ConfigError) as info:
        config_from_dict({"version": 1, "destinations": {"d": "https://other.example/x"}},
                         without_fallback)
    assert "no installed destination type handles 'https://' URLs" in (
        info.value.problems[0].message)
