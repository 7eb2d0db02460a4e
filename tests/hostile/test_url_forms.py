"""Destination URLs that parsers read differently are refused, for every URL option.

``http://10.99.0.1\\@127.0.0.1/`` once passed as a loopback URL (so plain http was allowed) while
the HTTP client connected to 10.99.0.1 and posted the key in clear text. A URL is now read once,
with the parser the client uses, and forms that two parsers could read differently are refused
with a message that never quotes the URL (its path may be the secret).
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from armor_notify_plugins.pagerduty import PagerDutyConfig
from armor_notify_plugins.slack import SlackConfig
from conftest import EXAMPLES, run_cli
from pydantic import BaseModel, ValidationError

from armor_notify.destinations import destination_url


def _example_plugin() -> ModuleType:
    """The example webhook plugin's source, loaded under its own name: the installed copy that
    test_example_plugin.py imports as ``armor_notify_webhook`` must stay the one it finds."""
    path = EXAMPLES / "armor-notify-webhook" / "armor_notify_webhook" / "__init__.py"
    spec = importlib.util.spec_from_file_location("armor_notify_webhook_source", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the model's annotations through it
    spec.loader.exec_module(module)
    return module


WebhookConfig = _example_plugin().WebhookConfig

KEY = "a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6"
TOKEN = "XXXXtokenXXXXsecretXXXXX"

# (the URL, words the refusal says). Every URL carries TOKEN in its path: never in a message.
REFUSED: list[tuple[str, str]] = [
    (f"http://10.99.0.1\\@127.0.0.1/services/{TOKEN}", "backslash"),
    (f"http://127.0.0.1\\@10.99.0.1/services/{TOKEN}", "backslash"),
    (f"https://hooks.slack.com\\services\\{TOKEN}", "backslash"),
    (f"http://10.99.0.1/\\..\\{TOKEN}", "backslash"),
    (f"http://user:pass@127.0.0.1/{TOKEN}", "user name or password"),
    (f"http://10.99.0.1@127.0.0.1/{TOKEN}", "user name or password"),
    (f"http://a@b@127.0.0.1/{TOKEN}", "user name or password"),
    (f"https://user@hooks.slack.com/services/{TOKEN}", "user name or password"),
    (f"http://127.0.0.1:80@10.99.0.1/{TOKEN}", "user name or password"),
    (f"http://%31%32%37.0.0.1/{TOKEN}", "percent-encoded host"),
    (f"http://127.0.0.1%2f@10.99.0.1/{TOKEN}", "user name or password"),
    (f"http://[::1%25eth0]/{TOKEN}", "percent-encoded host"),
    (f"http://127.0.0.1 /{TOKEN}", "space, line break or control"),
    (f" http://127.0.0.1/{TOKEN}", "space, line break or control"),
    (f"http://127.0.0.1/{TOKEN}\n", "space, line break or control"),
    (f"http://127.0.0.1\t.evil.example/{TOKEN}", "space, line break or control"),
    (f"http://127.0.0.1/{TOKEN}\x00", "space, line break or control"),
    (f"http://127.0.0.1/\x1b[2K{TOKEN}", "space, line break or control"),
    (f"http://127.0.0.1\u3000/{TOKEN}", "non-ASCII"),
    (f"http://ｌｏｃａｌｈｏｓｔ/{TOKEN}", "non-ASCII"),
    (f"https://hooks.slack.com/services/{TOKEN}\u200b", "non-ASCII"),
    (f"ftp://127.0.0.1/{TOKEN}", "must be an https:// URL"),
    (f"file:///etc/{TOKEN}", "must be an https:// URL"),
    (f"javascript://127.0.0.1/{TOKEN}", "must be an https:// URL"),
    (f"//127.0.0.1/{TOKEN}", "must be an https:// URL"),
    (f"http:/127.0.0.1/{TOKEN}", "must be an https:// URL"),
    (f"https:///{TOKEN}", "has no host"),
    (f"http://127.0.0.1:99999/{TOKEN}", "host or port that cannot be read"),
    (f"http://127.0.0.1:80:80/{TOKEN}", "host or port that cannot be read"),
    (f"http://127.0.0.1:0/{TOKEN}", "port outside 1-65535"),
    (f"http://10.99.0.1/{TOKEN}", "must be an https:// URL"),
    (f"http://127.1/{TOKEN}", "must be an https:// URL"),  # 127.0.0.1 to inet_aton only
    (f"http://0x7f000001/{TOKEN}", "must be an https:// URL"),
    (f"http://127.0.0.1.nip.io/{TOKEN}", "must be an https:// URL"),
    (f"http://[::ffff:10.99.0.1]/{TOKEN}", "must be an https:// URL"),
]

ACCEPTED = [
    f"https://hooks.slack.com/services/T0/B0/{TOKEN}",
    "https://events.pagerduty.com",
    "https://events.eu.pagerduty.com/v2/enqueue",
    f"HTTPS://Hooks.Slack.com/services/T0/B0/{TOKEN}",
    f"http://127.0.0.1:8080/{TOKEN}",
    f"http://localhost:8080/{TOKEN}?a=b",
    f"http://[::1]:8080/{TOKEN}",
    f"https://[2001:db8::1]:8443/{TOKEN}",
    f"https://receiver.example.com/hooks/a@b/{TOKEN}",  # '@' in the path is the path's
]

MODELS: dict[str, Callable[[str], BaseModel]] = {
    "pagerduty url": lambda url: PagerDutyConfig(integration_key=KEY, url=url),  # type: ignore[arg-type]
    "slack webhook_url": lambda url: SlackConfig(webhook_url=url),  # type: ignore[arg-type]
    "webhook url": lambda url: WebhookConfig(url=url, secret="s" * 32),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize(("url", "says"), REFUSED)
def test_an_ambiguous_or_unsafe_url_is_refused(model: str, url: str, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        MODELS[model](url)
    message = str(caught.value)
    assert says in message
    assert TOKEN not in message and "10.99.0.1" not in message


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("url", ACCEPTED)
def test_a_plain_url_is_accepted_as_written(model: str, url: str) -> None:
    config: Any = MODELS[model](url)
    value = config.url if model == "pagerduty url" else (
        config.webhook_url if model == "slack webhook_url" else config.url)
    assert (value if isinstance(value, str) else value.get_secret_value()) == url
    assert destination_url(url) == url


def test_the_host_checked_is_the_host_the_client_connects_to() -> None:
    # destination_url reads URLs with the standard library; the client connects with urllib3's
    # parser. Over every accepted URL and many near-misses built from the tricky parts, what
    # destination_url accepts must name, for urllib3, exactly the host and port it checked.
    from urllib.parse import urlsplit

    from urllib3.util import parse_url

    parts = itertools.product(
        ["http", "https", "HTTP"],
        ["127.0.0.1", "localhost", "[::1]", "[2001:db8::1]", "Example.COM", "a.b", "10.0.0.1",
         "127.0.0.1.", "0x7f.1", "[::ffff:127.0.0.1]", "[fe80::1%25eth0]", "::1", "a;b", "a,b"],
        ["", ":", ":8080", ":0", ":65536", ":99999", ":8o", "::80", ":+80"],
        ["", "/", "/p@q", "?x=@y", "#@z", "/a/../b", ";@x"],
    )
    checked = 0
    for scheme, host, port, rest in parts:
        url = f"{scheme}://{host}{port}{rest}"
        try:
            destination_url(url)
        except ValueError:
            continue
        ours, theirs = urlsplit(url), parse_url(url)
        assert theirs.host is not None
        assert theirs.host.strip("[]").lower() == (ours.hostname or "").lower(), url
        assert theirs.port == ours.port, url
        checked += 1
    assert checked > 50  # the near-misses did not all fail: the comparison really ran
    for url in ACCEPTED:
        destination_url(url)


@pytest.mark.slow
def test_validate_names_the_option_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "armor-notify.yaml"
    config.write_text(
        "version: 1\n"
        "destinations:\n"
        "  pd:\n"
        "    type: pagerduty\n"
        f"    integration_key: {KEY}\n"
        f"    url: 'http://10.99.0.1\\@127.0.0.1/{TOKEN}'\n"
        "  chat:\n"
        "    type: slack\n"
        f"    webhook_url: 'http://user:{TOKEN}@127.0.0.1/services/T0/B0/X'\n"
        "rules:\n"
        "  - name: all\n"
        "    destinations: [pd, chat]\n"
    )
    result = run_cli("validate", "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{config}:6: destinations.pd.url: contains a backslash" in result.stderr
    assert f"{config}:9: destinations.chat.webhook_url: must not hold a user name or password" \
        in result.stderr
    assert TOKEN not in result.stderr + result.stdout
