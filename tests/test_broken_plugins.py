"""Broken third-party plugins are reported clearly and never stop the others.

``tests/site-broken/`` holds two installed-looking distributions that break on purpose:
``armor-notify-broken-import`` (its module cannot be imported) and ``armor-notify-raising`` (its
``register_destination_types`` raises). They are put on the path only for these tests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import SITE, run_cli

pytestmark = pytest.mark.slow  # these tests start processes

BROKEN = Path(__file__).parent / "site-broken"
ENV = {"PYTHONPATH": os.pathsep.join([str(BROKEN), str(SITE)])}
IMPORT_ERROR = ("failed to import armor_notify_broken_import: ImportError: cannot import name "
                "'register_webhook_signer' from 'armor_notify'")
HOOK_ERROR = ("register_destination_types raised RuntimeError: settings file "
              "~/.config/raising.toml not found")
ALERT = {
    "id": "alert_broken_1",
    "event_type": "schema_change",
    "title": "Column removed",
    "asset": {"id": "tbl_1", "name": "analytics.public.orders"},
}


def write(tmp_path: Path, destinations: dict[str, object]) -> tuple[Path, Path]:
    config = tmp_path / "armor-notify.yaml"
    config.write_text(json.dumps({
        "version": 1, "destinations": destinations,
        "rules": [{"name": "All", "event": "schema_change", "destinations": list(destinations)}],
    }))
    alert = tmp_path / "alert.json"
    alert.write_text(json.dumps(ALERT))
    return config, alert


def test_plugins_lists_each_broken_plugin_with_its_error() -> None:
    res = run_cli("plugins", "--json", env=ENV)
    assert res.returncode == 0, res.stderr
    plugins = {p["name"]: p for p in json.loads(res.stdout)["plugins"]}
    broken, raising = plugins["broken_import"], plugins["raising"]
    assert (broken["distribution"], broken["version"]) == ("armor-notify-broken-import", "2.0")
    assert IMPORT_ERROR in broken["error"]
    assert (raising["distribution"], raising["version"]) == ("armor-notify-raising", "0.3")
    assert raising["error"] == HOOK_ERROR and raising["destination_types"] == []
    for healthy in ("pagerduty", "slack", "email", "scripted"):
        assert plugins[healthy]["error"] is None

    table = run_cli("plugins", env=ENV)
    assert table.returncode == 0 and "Traceback" not in table.stdout + table.stderr
    lines = {line.split()[0]: line for line in table.stdout.splitlines() if line.strip()}
    assert "error: failed to import armor_notify_broken_import" in lines["broken_import"]
    assert "error: register_destination_types raised RuntimeError" in lines["raising"]
    assert lines["scripted"].rstrip().endswith("ok")


def test_send_still_delivers_to_every_other_destination_and_warns(tmp_path: Path) -> None:
    config, alert = write(tmp_path, {
        "healthy": {"type": "scripted", "script": ["ok"]},
        "buggy-sender": {"type": "scripted", "script": ["raise"]},
    })
    res = run_cli("send", str(alert), "--config", str(config), "--json", env=ENV)
    states = {d["destination"]: d for d in json.loads(res.stdout)["deliveries"]}
    assert states["healthy"]["state"] == "delivered"
    assert states["buggy-sender"]["state"] == "failed"
    assert "the plugin raised ValueError: scripted plugin bug" in states["buggy-sender"]["reason"]
    assert res.returncode == 1  # some delivery failed
    assert ("armor-notify: warning: plugin 'broken_import' (armor-notify-broken-import 2.0): "
            + IMPORT_ERROR) in res.stderr
    assert ("armor-notify: warning: plugin 'raising' (armor-notify-raising 0.3): "
            + HOOK_ERROR) in res.stderr
    assert "Traceback" not in res.stderr


def test_a_destination_of_a_broken_plugin_names_the_plugins_that_failed(tmp_path: Path) -> None:
    config, _ = write(tmp_path, {"raised": {"type": "raising"}})
    res = run_cli("validate", "--config", str(config), env=ENV)
    assert res.returncode == 2
    assert ("destinations.raised.type: unknown destination type 'raising'" in res.stderr)
    assert "(plugins that failed to load: broken_import, raising)" in res.stderr


def test_excluding_the_broken_plugins_silences_them(tmp_path: Path) -> None:
    config, alert = write(tmp_path, {"healthy": {"type": "scripted"}})
    env = {**ENV, "ARMOR_NOTIFY_LOAD_PLUGINS": "armor-notify-scripted"}
    res = run_cli("send", str(alert), "--config", str(config), env=env)
    assert res.returncode == 0, res.stderr
    assert "warning" not in res.stderr
    names = {p["name"] for p in json.loads(run_cli("plugins", "--json", env=env).stdout)["plugins"]}
    assert "scripted" in names and not names & {"broken_import", "raising"}
