"""Reading Apprise's URL forms of the native destinations (``pagerduty://``, ``mailto://``…).

A bare URL in the config whose scheme a native destination claims becomes that destination's own
config (its ``from_url``), so ``pagerduty://KEY@APIKEY`` works as it does in Apprise. Each
destination maps its service's parameters itself; what they share is reading the query the way
Apprise does and refusing a parameter that would be silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from urllib.parse import SplitResult, parse_qsl, urlsplit

__all__ = ["APPRISE_COMMON_OPTIONS", "apprise_bool", "read_apprise_url"]

APPRISE_COMMON_OPTIONS = frozenset({
    "format", "overflow", "emojis", "tz", "store", "retry", "wait", "optional", "cto", "rto",
    "verify", "redirect",
})
"""Apprise's options for every service: mostly meaningless here (armor-notify times, retries and
formats itself), so they are accepted and ignored unless a destination maps one (email: verify)."""


def read_apprise_url(
    url: str,
    *,
    takes: Collection[str],
    unknown: Callable[[str], str],
    free_prefixes: tuple[str, ...] = (),
) -> tuple[SplitResult, dict[str, str]]:
    """``url`` split, and its query as Apprise reads it: keys in lower case, ``+`` kept as a plus.

    ``takes`` are the parameters the destination maps or deliberately ignores (with
    :data:`APPRISE_COMMON_OPTIONS`, always accepted); a key that starts with one of
    ``free_prefixes`` is accepted too (PagerDuty's ``+name=value`` custom details). Any other
    parameter raises ``ValueError(unknown(name))`` for the first one in alphabetical order.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query.replace("+", "%2B"), keep_blank_values=True)
    params = {key.lower(): value for key, value in query}
    refused = sorted(key for key in params
                     if key not in takes and key not in APPRISE_COMMON_OPTIONS
                     and not (free_prefixes and key.startswith(free_prefixes)))
    if refused:
        raise ValueError(unknown(refused[0]))
    return parts, params


def apprise_bool(text: str) -> bool:
    """Apprise's ``parse_bool``: no/false/off/0/never/deny/disable(d) are false, the rest true."""
    return not text.lower().startswith(("de", "di", "ne", "f", "n", "of", "0"))
