"""Shared fixtures: the scripted test plugin on the path, fresh plugin loading, CLI runners, a
certificate authority for loopback TLS servers."""

from __future__ import annotations

import atexit
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trustme

if TYPE_CHECKING:
    from armor_notify.registry import Registry

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

    for var in ("ARMOR_NOTIFY_LOAD_PLUGINS", "ARMOR_NOTIFY_CONFIG", "ARMOR_NOTIFY_TRACE_PLUGINS",
                "ARMOR_NOTIFY_STATE_DIR"):
        monkeypatch.delenv(var, raising=False)
    reset_plugins()
    yield
    reset_plugins()


class _TempDirs:
    """Temporary state directories, removed when the test session ends."""

    def __init__(self) -> None:
        self.made: list[str] = []
        atexit.register(lambda: [shutil.rmtree(d, ignore_errors=True) for d in self.made])

    def mkdtemp(self) -> str:
        self.made.append(tempfile.mkdtemp(prefix="armor-notify-state-"))
        return self.made[-1]


_state_dirs = _TempDirs()


def run_cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
            cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the installed ``armor-notify`` command as a user would, in a new process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ARMOR_NOTIFY_")}
    # No empty entry: it would put the working directory (and a stale *.egg-info there) on the path.
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in [str(SITE), full_env.get("PYTHONPATH", "")] if p)
    # Each run gets its own outbox unless the test shares one on purpose.
    full_env["ARMOR_NOTIFY_STATE_DIR"] = _state_dirs.mkdtemp()
    full_env.update(env or {})
    exe = Path(sys.executable).with_name("armor-notify")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=full_env,
                          input=stdin, cwd=cwd, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    """Installed plugins (pagerduty, slack, email and the scripted test plugin), loaded once per
    module, with no ARMOR_NOTIFY_LOAD_PLUGINS from the environment."""
    from armor_notify.plugins import LOAD_ENV, PluginManager

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(LOAD_ENV, raising=False)
        yield PluginManager().load().registry


@pytest.fixture(scope="session")
def certificate_authority() -> trustme.CA:
    """A private certificate authority (trustme) that loopback TLS servers' certificates come from."""
    return trustme.CA()


def tls_server_context(ca: trustme.CA) -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1 issued by ``ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


def wait_for(condition: Callable[[], Any], timeout: float = 20) -> bool:
    """Poll ``condition`` every 50 ms until it holds or ``timeout`` seconds pass; its last
    answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())
