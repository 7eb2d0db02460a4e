"""The rule model (SPEC §2 ``rules:``): which alerts go where."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from .alert import Severity
from .durations import Duration
from .noise import Digest, Schedule
from .validation import StrictModel


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


StrList = Annotated[tuple[Annotated[str, Field(min_length=1)], ...], BeforeValidator(_as_list)]


class Patterns(StrictModel):
    """Glob patterns (``*``, ``?``, ``[abc]``), matched case-insensitively.

    A plain list is shorthand for ``include``. An absent ``include`` includes everything.
    """

    include: StrList | None = None
    exclude: StrList = ()

    @model_validator(mode="before")
    @classmethod
    def _list_is_include(cls, data: Any) -> Any:
        if isinstance(data, (list, str)):
            return {"include": _as_list(data)}
        return data


class TagFilter(StrictModel):
    """``any``: at least one of these tags; ``all``: every one; ``none``: none of them."""

    any: StrList = ()
    all: StrList = ()
    none: StrList = ()

    @model_validator(mode="before")
    @classmethod
    def _list_is_any(cls, data: Any) -> Any:
        if isinstance(data, (list, str)):
            return {"any": _as_list(data)}
        return data


class Scope(StrictModel):
    """Which assets a rule covers; every filter given must match."""

    environments: Patterns | None = None
    data_sources: Patterns | None = None
    schemas: Patterns | None = None
    assets: Patterns | None = None
    """Patterns with a dot match the qualified name (``analytics.public.orders``); others the
    table's own name (``orders*``, ``*_staging``)."""
    kinds: Patterns | None = None
    tags: TagFilter | None = None


ChangeSelector = Literal["any", "breaking", "non_breaking"]


def _change_condition(value: Any) -> Any:
    if isinstance(value, str):
        if value in ("any", "breaking", "non_breaking"):
            return value
        raise ValueError(
            f"'{value}' is not a change condition: use any, breaking, non_breaking or a list "
            "of change types such as [column_removed, type_changed]"
        )
    if isinstance(value, list):
        if not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise ValueError("a list of change types must name at least one type")
        return tuple(v.strip().lower() for v in value)
    raise ValueError("use any, breaking, non_breaking or a list of change types")


class Conditions(StrictModel):
    """Extra conditions on the alert itself."""

    changes: Annotated[ChangeSelector | tuple[str, ...], BeforeValidator(_change_condition)] | None = (
        None
    )
    """Schema changes only: ``any``, ``breaking`` (at least one breaking change),
    ``non_breaking`` (changes, none breaking) or a list of change types (any of them)."""
    min_delay_hours: Annotated[float, Field(ge=0)] | None = None
    """Freshness only: the data is at least this many hours late."""
    min_severity: Severity | None = None
    """The alert's severity is at least this (info < warning < critical)."""


class RuleModel(StrictModel):
    """One rule as written in the config file."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    event: Annotated[tuple[Annotated[str, Field(min_length=1)], ...], BeforeValidator(_as_list),
                     Field(min_length=1)]
    scope: Scope = Scope()
    conditions: Conditions = Conditions()
    destinations: Annotated[tuple[str, ...], BeforeValidator(_as_list), Field(min_length=1)]
    enabled: bool = True
    schedule: Schedule | None = None
    """Operating hours: outside them this rule's alerts are suppressed (or held)."""
    hold: bool = False
    """Outside the schedule or in a blackout, hold alerts until the window opens instead."""
    cooldown: Duration | None = None
    """After notifying about an asset, stay quiet about it for this long."""
    daily_limit: Annotated[int, Field(ge=1)] | None = None
    """At most this many notifications a day from this rule (per ``defaults.timezone`` day)."""
    digest: Digest | None = None
    """Collect this rule's alerts to digest-capable destinations (Slack, email) into summaries."""
    remind_every: Duration | None = None
    """Check results: while a check stays failing, send its page again this often (a reminder);
    unset, a failing check is notified once."""
    resolve_after: Annotated[int, Field(ge=1, le=100)] | None = None
    """Check results: consecutive passes before the incident resolves (flap damping); unset,
    the config's ``checks.resolve_after`` (1)."""
    fold: Literal["suppress", "dedup", "off"] = "suppress"
    """Lineage: a check that starts failing below a failing root is folded into the root's
    incident: ``suppress`` sends it nowhere (the root's page lists it), ``dedup`` sends it with
    the root's dedup key (PagerDuty adds it to the root's incident), ``off`` pages it on its
    own."""
    expect_every: Duration | None = None
    """Check results: how often the checks this rule matches run, when the result does not
    say (``check.expect_every``); no result for twice this long raises ``check_missing``."""
