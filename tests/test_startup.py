"""Start-up: what each kind of command imports (issue 14).

Speed itself is measured in ``bench/bench_startup.py``; these tests pin the cause of it, which
does not depend on the machine: ``--version``, ``--help`` and shell completion import click and
nothing heavy, and ``route``/``validate`` never import the HTTP stack or the email sender.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = str(ROOT / "examples/armor-notify.yaml")
ALERT = str(ROOT / "examples/alerts/schema_change_breaking.json")
ENV = {
    "PAGERDUTY_INTEGRATION_KEY": "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXX",
    "SLACK_DEV_WEBHOOK_URL": "https://hooks.slack.com/services/T00000000/B11111111/YYYYYYYYYYYY",
    "SMTP_PASSWORD": "not-a-real-password",
}
HEAVY = ("pydantic", "yaml", "pluggy", "importlib.metadata", "requests", "urllib3", "sqlite3",
         "smtplib", "ssl", "zoneinfo", "traceback", "armor_notify.alert", "armor_notify.config",
         "armor_notify.api")
SENDING = ("requests", "urllib3", "smtplib", "ssl", "logging", "armor_notify.dispatcher",
           "armor_notify.http", "armor_notify_plugins.pagerduty_sender",
           "armor_notify_plugins.slack_sender", "armor_notify_plugins.email.sender",
           "armor_notify_plugins.email.compose",
           "jinja2")  # (the example config has no templates: Jinja2 is never needed)

# Runs the command line in-process, then reports what it imported as the last line of stderr.
RUN = """\
import json, sys
sys.argv = ["armor-notify", *json.loads(sys.argv[1])]
from armor_notify.cli import main
try:
    main()
except SystemExit:
    pass
sys.stderr.write("\\n" + json.dumps(sorted(sys.modules)))
"""


def imported(*args: str, env: dict[str, str] | None = None) -> tuple[str, set[str]]:
    proc = subprocess.run([sys.executable, "-c", RUN, json.dumps(args)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **ENV, **(env or {})})
    return proc.stdout, set(json.loads(proc.stderr.rsplit("\n", 1)[-1]))


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--version"], ["--help"], ["outbox", "--help"]])
def test_version_and_help_import_nothing_heavy(args: list[str]) -> None:
    out, modules = imported(*args)
    assert out.strip()  # it printed its answer
    assert not modules.intersection(HEAVY), sorted(modules.intersection(HEAVY))


@pytest.mark.slow
def test_shell_completion_offers_commands_without_importing_anything_heavy() -> None:
    out, modules = imported(env={"_ARMOR_NOTIFY_COMPLETE": "bash_complete",
                                 "COMP_WORDS": "armor-notify ou", "COMP_CWORD": "1"})
    assert "plain,outbox" in out.splitlines()
    assert not modules.intersection(HEAVY), sorted(modules.intersection(HEAVY))


@pytest.mark.slow
@pytest.mark.parametrize("args", [["validate", "--config", EXAMPLE],
                                  ["route", ALERT, "--config", EXAMPLE]])
def test_route_and_validate_never_import_the_sending_side(args: list[str]) -> None:
    out, modules = imported(*args)
    assert "pagerduty-data-platform" in out  # it really validated and routed
    assert "armor_notify.config" in modules  # (the check below is not vacuous)
    assert not modules.intersection(SENDING), sorted(modules.intersection(SENDING))
