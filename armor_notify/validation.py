"""What every validator in armor-notify shares: the strict pydantic base of config models, where
a problem is (``rules[0].destinations[1]``) and the "did you mean" suggestion.

A leaf module: it imports nothing from armor-notify, so the config, the alert model and the
alert reader all use it without importing each other.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

Loc = tuple[str | int, ...]
"""A path inside a file: mapping keys and list indexes."""


class StrictModel(BaseModel):
    """A config model: unknown keys are errors, values are frozen, numbers are finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)


def format_loc(loc: Loc) -> str:
    """``("rules", 0, "destinations", 1)`` → ``rules[0].destinations[1]``."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a close match exists, else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
