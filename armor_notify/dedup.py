"""Dedup keys (SPEC §4): stable per rule, event type and asset, so repeats group and resolves close."""

from __future__ import annotations

import functools
import hashlib
import re

PREFIX = "anomalyarmor-"
MAX_LENGTH = 255  # PagerDuty's limit
_HASH_LENGTH = 16


@functools.lru_cache(maxsize=4096)
def rule_slug(name: str) -> str:
    """The rule's part of a dedup key: lower-case letters, digits and dashes.

    A name with characters outside ASCII keeps what it can and gains a short hash of the exact
    name, so rules named in other scripts (``本番の破壊的変更``, ``テスト環境``) stay distinct.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if name.isascii() and slug:
        return slug
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{slug}-{digest}" if slug else f"rule-{digest}"


def dedup_key(rule: str, event_type: str, asset_id: str, override: str | None = None,
              check: str | None = None) -> str:
    """``anomalyarmor-<rule slug>-<event type>-<asset id>``, and ``-<check id>`` for a check
    result (two checks on one asset are two incidents); the alert's own key wins.

    The asset id is kept verbatim (PagerDuty keys are case-sensitive). A key longer than 255
    characters keeps its readable head and ends with a hash of the whole key, so it stays unique.
    """
    key = override or f"{PREFIX}{rule_slug(rule)}-{event_type}-{asset_id}" + (
        f"-{check}" if check else "")
    if len(key) <= MAX_LENGTH:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:_HASH_LENGTH]
    return f"{key[: MAX_LENGTH - _HASH_LENGTH - 1]}-{digest}"
