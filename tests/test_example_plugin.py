"""The example third-party plugin (examples/armor-notify-webhook), installed for real.

A session fixture builds and installs the package with pip, offline (``--no-deps
--no-build-isolation --no-index``), into a temporary directory that is put on the path: the
same dist-info and entry point a user's ``pip install`` creates, without touching the shared
virtualenv (other test runs, and the rest of this session, see no extra plugin).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLES, SITE, run_cli

from armor_notify.plugins import PluginManager

pytestmark = pytest.mark.slow  # these tests start processes

EXAMPLE = EXAMPLES / "armor-notify-webhook"
SECRET = "whsec-example-plugin-0123456789abcdef"
ALERT = {
    "id": "alert_example_1",
    "event_type": "schema_change",
    "title": "Column removed from orders",
    "severity": "critical",
    "asset": {"id": "ast_orders_01", "name": "analytics.public.orders",
              "environment": "production"},
    "changes": [{"type": "column_removed", "column": "email"}],
}


@pytest.fixture(scope="session")
def webhook_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the installed ``armor-notify-webhook`` distribution."""
    work = tmp_path_factory.mktemp("example-plugin")
    source = work / "source"  # a copy, so that the build leaves nothing in the repository
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    site = work / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"
    return site


def pythonpath(*dirs: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(str(d) for d in dirs)}


class Receiver:
    """The receiving end of the webhook: records each request's headers and raw body."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # TCP_NODELAY: no 40 ms Nagle wait per answer

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hooks/armor-7c1d9e"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def write_config(tmp_path: Path, destinations: dict[str, Any]) -> Path:
    config = {
        "version": 1,
        "destinations": destinations,
        "rules": [{"name": "Production Breaking Changes", "event": "schema_change",
                   "destinations": list(destinations)}],
    }
    path = tmp_path / "armor-notify.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def test_the_installed_plugin_is_discovered_through_its_entry_point(
    webhook_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(webhook_site))
    pm = PluginManager().load()
    info = pm.plugins["webhook"]
    assert (info.distribution, info.version, info.builtin) == ("armor-notify-webhook", "0.1.0",
                                                               False)
    assert info.destination_types == ["webhook"] and info.error is None
    module = sys.modules["armor_notify_webhook"]
    assert Path(module.__file__ or "").is_relative_to(webhook_site), "imported the installed copy"


def test_armor_notify_plugins_lists_it(webhook_site: Path) -> None:
    res = run_cli("plugins", "--json", env=pythonpath(webhook_site, SITE))
    assert res.returncode == 0, res.stderr
    plugins = {p["name"]: p for p in json.loads(res.stdout)["plugins"]}
    assert plugins["webhook"]["distribution"] == "armor-notify-webhook"
    assert plugins["webhook"]["destination_types"] == ["webhook"]
    assert plugins["webhook"]["hooks"] == ["register_destination_types"]
    assert not plugins["webhook"]["builtin"] and plugins["webhook"]["error"] is None
    table = run_cli("plugins", env=pythonpath(webhook_site, SITE)).stdout
    assert any(line.split()[:3] == ["webhook", "armor-notify-webhook", "0.1.0"]
               for line in table.splitlines())


def test_a_rule_routes_alerts_to_it_through_the_cli_signed(
    webhook_site: Path, tmp_path: Path
) -> None:
    alert_file = tmp_path / "alert.json"
    alert_file.write_text(json.dumps(ALERT))
    with Receiver() as receiver:
        config = write_config(tmp_path, {"ops-webhook": {
            "type": "webhook", "url": receiver.url, "secret": "${WEBHOOK_SECRET}"}})
        res = run_cli("send", str(alert_file), "--config", str(config), "--json",
                      env={**pythonpath(webhook_site, SITE), "WEBHOOK_SECRET": SECRET})
    assert res.returncode == 0, res.stdout + res.stderr
    [delivery] = json.loads(res.stdout)["deliveries"]
    assert (delivery["destination"], delivery["state"]) == ("ops-webhook", "delivered")
    [(headers, body)] = receiver.requests
    # The signature, checked independently of the plugin's own verify_signature.
    timestamp = headers["x-armor-timestamp"]
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    assert headers["x-armor-signature"] == f"sha256={expected.hexdigest()}"
    assert abs(time.time() - int(timestamp)) < 60
    payload = json.loads(body)
    assert payload["rule"] == "Production Breaking Changes"
    assert payload["dedup_key"] == delivery["dedup_key"]
    assert payload["alert"]["id"] == "alert_example_1"
    for secret in (SECRET, "/hooks/armor-7c1d9e"):
        assert secret not in res.stdout + res.stderr


@pytest.mark.parametrize(("value", "loaded"), [
    ("", False),                                    # built-ins only
    ("armor-notify-scripted", False),               # only another distribution
    ("armor-notify-scripted,armor_notify_webhook", True),
])
def test_armor_notify_load_plugins_excludes_it(webhook_site: Path, value: str,
                                               loaded: bool) -> None:
    env = {**pythonpath(webhook_site, SITE), "ARMOR_NOTIFY_LOAD_PLUGINS": value}
    names = {p["name"] for p in json.loads(run_cli("plugins", "--json", env=env).stdout)["plugins"]}
    assert ("webhook" in names) is loaded
    assert ("scripted" in names) is ("scripted" in value)
    assert "pagerduty" in names


def test_a_config_using_the_excluded_plugin_says_the_type_is_unknown(
    webhook_site: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path, {"ops-webhook": {
        "type": "webhook", "url": "https://hooks.example.com/x", "secret": SECRET}})
    env = {**pythonpath(webhook_site, SITE), "ARMOR_NOTIFY_LOAD_PLUGINS": ""}
    res = run_cli("validate", "--config", str(config), env=env)
    assert res.returncode == 2
    assert "destinations.ops-webhook.type: unknown destination type 'webhook'" in res.stderr
    assert SECRET not in res.stderr
    assert run_cli("validate", "--config", str(config),
                   env=pythonpath(webhook_site, SITE)).returncode == 0


def test_its_own_test_suite_passes_with_the_kit(webhook_site: Path) -> None:
    # Run in the copy pip built from, with the installed package on the path: the plugin's
    # tests find the kit (armor_notify.testing) as a pytest plugin installed with armor-notify.
    source = webhook_site.parent / "source"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARMOR_NOTIFY_", "PYTEST_"))}
    env.update(pythonpath(webhook_site), PYTHONDONTWRITEBYTECODE="1")
    res = subprocess.run(
        [str(Path(sys.executable).with_name("pytest")), "-q", "-rA", "-p", "no:cacheprovider"],
        cwd=source, env=env, capture_output=True, text=True, timeout=50, check=False,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    conformance = [line for line in res.stdout.splitlines()
                   if line.startswith("PASSED") and "::TestWebhookConformance::test_" in line]
    assert len(conformance) >= 10, res.stdout[-3000:]
