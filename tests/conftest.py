"""Shared fixtures: the scripted test plugin on the path, fresh plugin loading, CLI runners."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SITE = Path(__file__).parent / "site"
ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"

# The scripted plugin is a real distribution on the path: discovered through entry points.
if str(SITE) not in sys.path:
    sys.path.insert(0, str(SITE))


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test loads plugins afresh, with no loading or config variables leaking in."""
    from armor_notify.plugins import reset_plugins

    for var in ("ARMOR_NOTIFY_LOAD_PLUGINS", "ARMOR_NOTIFY_CONFIG", "ARMOR_NOTIFY_TRACE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    reset_plugins()
    yield
    reset_plugins()


def run_cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
            cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the installed ``armor-notify`` command as a user would, in a new process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ARMOR_NOTIFY_")}
    full_env["PYTHONPATH"] = os.pathsep.join([str(SITE), full_env.get("PYTHONPATH", "")])
    full_env.update(env or {})
    exe = Path(sys.executable).with_name("armor-notify")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=full_env,
                          input=stdin, cwd=cwd, timeout=timeout, check=False)
