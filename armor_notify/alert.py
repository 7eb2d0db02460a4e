"""The alert: what a monitor says happened (SPEC §1). Validated strictly, so nothing rides along."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .durations import Duration, bounded_moment
from .validation import StrictModel, suggest

BUILTIN_EVENT_TYPES: tuple[str, ...] = (
    "schema_change",
    "freshness_violation",
    "metric_anomaly",
    "validity_failure",
    "discovery_failed",
    "asset_removed",
    "asset_discovered",
    "check_missing",
)


class Severity(str, Enum):
    """The monitor's own judgement, ordered: info < warning < critical."""

    info = "info"
    warning = "warning"
    critical = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.info: 0, Severity.warning: 1, Severity.critical: 2}

Status = Literal["triggered", "acknowledged", "resolved"]

# `scheme://user:password@host`: a connection string with credentials in it.
# The lookbehind keeps a match from starting inside a scheme, so long runs of letters stay linear.
_CREDENTIAL_URL = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://[^\s/@:]*:[^\s/@]*@")
# Every character str.splitlines() breaks on, so no header or Slack line can be smuggled in.
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]+")
# Control characters (C0, DEL, C1), line and paragraph separators, and bidirectional overrides.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SPACES = re.compile(r"[ \t]{2,}")


def one_line(text: str) -> str:
    """Collapse line breaks (all of them, not only ``\\n``) and runs of spaces to one space."""
    if "  " not in text and "\t" not in text and _LINE_BREAKS.search(text) is None:
        return text.strip()  # nothing to collapse (nearly always)
    return _SPACES.sub(" ", _LINE_BREAKS.sub(" ", text)).strip()


def _no_credentials(value: Any) -> Any:
    if isinstance(value, str) and "://" in value and _CREDENTIAL_URL.search(value):
        raise ValueError(
            "looks like a connection string with credentials (scheme://user:password@host); "
            "alerts must never carry credentials: send the data source's name instead"
        )
    return value


def _no_control_characters(value: str) -> str:
    found = _CONTROL.search(value)
    if found:
        raise ValueError(f"must not contain control characters (found U+{ord(found.group()):04X} "
                         f"at position {found.start() + 1}): ids are printed and sent as they are")
    return value


def _https_link(value: str) -> str:
    if not value.lower().startswith("https://"):
        raise ValueError("must be an https:// URL")
    return value


Text = Annotated[str, AfterValidator(_no_credentials)]
Identifier = Annotated[str, AfterValidator(_no_credentials), AfterValidator(_no_control_characters)]
"""An id: no credentials and no control characters (a newline could forge an output line)."""
OneLine = Annotated[str, AfterValidator(_no_credentials), AfterValidator(one_line)]


class _Strict(StrictModel):
    model_config = ConfigDict(str_strip_whitespace=True)


class Asset(_Strict):
    """The table, view or source the alert is about."""

    id: Annotated[Identifier, Field(min_length=1, max_length=512)]
    name: Annotated[OneLine, Field(min_length=1, max_length=1024)]
    data_source: OneLine | None = None
    schema_: Annotated[OneLine | None, Field(alias="schema")] = None
    kind: OneLine | None = None
    environment: OneLine | None = None
    tags: tuple[OneLine, ...] = ()
    owners: tuple[Annotated[OneLine, Field(min_length=1, max_length=255)], ...] = ()
    """Who owns it (people or teams): the config's ``owners:`` map may route by them."""
    upstream: tuple[Annotated[OneLine, Field(min_length=1, max_length=1024)], ...] = ()
    """Assets it is built from (qualified names), beside what the configured lineage knows."""

    model_config = ConfigDict(populate_by_name=True)

    @property
    def schema_name(self) -> str | None:
        """The schema, or the second-to-last part of a qualified name (``db.public.orders``)."""
        if self.schema_:
            return self.schema_
        parts = self.name.split(".")
        return parts[-2] if len(parts) >= 2 else None

    @property
    def table_name(self) -> str:
        """The last part of the qualified name."""
        return self.name.rsplit(".", 1)[-1]


_BREAKING_TYPES = {"type_changed"}


def _lower_identifier(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


class Change(_Strict):
    """One schema change: names and types only, never data values."""

    type: Annotated[
        str,
        BeforeValidator(_lower_identifier),
        Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64),
    ]
    column: OneLine | None = None
    from_: Annotated[OneLine | None, Field(alias="from")] = None
    to: OneLine | None = None
    breaking: bool = False

    model_config = ConfigDict(populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _default_breaking(cls, data: Any) -> Any:
        if isinstance(data, dict) and "breaking" not in data and isinstance(data.get("type"), str):
            kind = data["type"].strip().lower()
            breaking = kind in _BREAKING_TYPES or kind.endswith(("_removed", "_renamed"))
            data = {**data, "breaking": breaking}
        return data


def _utc(value: datetime) -> datetime:
    """A time without a zone is UTC; every time converts to UTC and to a Unix time."""
    return bounded_moment(value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value)


class Freshness(_Strict):
    """How late the data is."""

    delay_hours: Annotated[float, Field(ge=0)]
    threshold_hours: Annotated[float | None, Field(ge=0)] = None
    last_updated_at: Annotated[datetime, AfterValidator(_utc)] | None = None


CheckStatus = Literal["pass", "fail", "error"]


class Check(_Strict):
    """A check's result (a dbt test, an expectation suite, a freshness check): what the check-state
    ledger keeps, so that a failing check pages once and its first pass resolves the page."""

    id: Annotated[Identifier, Field(min_length=1, max_length=512)]
    """The check's name, stable across runs; with the source and the asset id, the ledger key."""
    status: CheckStatus
    run_id: Annotated[Identifier, Field(min_length=1, max_length=255)] | None = None
    """The run that produced this result: a result of the run already recorded is not counted
    again (a producer that posts twice)."""
    expect_every: Duration | None = None
    """How often the check runs (``1h``): no result for twice this long raises ``check_missing``."""
    source: Annotated[Identifier, Field(min_length=1, max_length=100)] | None = None
    """Where the result came from (set by ``--source``: ``dbt``, ``great_expectations``); checks
    of different sources never share a ledger entry."""

    @property
    def failing(self) -> bool:
        return self.status != "pass"


class Alert(_Strict):
    """One alert (SPEC §1). Unknown fields are rejected."""

    id: Annotated[Identifier, Field(min_length=1, max_length=512)] = Field(
        default_factory=lambda: f"alert_{uuid.uuid4().hex}"
    )
    """Given, or derived from the alert's content (:func:`content_id`), so that a producer that
    sends the same alert twice is recognised as repeating itself."""
    event_type: str
    status: Status = "triggered"
    severity: Severity = Severity.warning
    title: Annotated[OneLine, Field(min_length=1)]
    description: Text | None = None
    asset: Asset
    changes: tuple[Change, ...] = ()
    freshness: Freshness | None = None
    link: Annotated[Text, AfterValidator(_https_link)] | None = None
    dedup_key: Annotated[Identifier, Field(min_length=1, max_length=255)] | None = None
    occurred_at: Annotated[datetime, AfterValidator(_utc)] = Field(
        default_factory=lambda: datetime.now(timezone.utc)
    )
    check: Check | None = None
    """A check result: the ledger decides what is sent (a page when the check starts failing,
    a resolve when it passes again, nothing while it stays as it was)."""

    @model_validator(mode="before")
    @classmethod
    def _id_from_content(cls, data: Any) -> Any:
        if isinstance(data, dict) and "id" not in data:
            derived = content_id(data)
            if derived is not None:
                data = {**data, "id": derived}
        return data

    @model_validator(mode="after")
    def _status_agrees_with_check(self) -> Alert:
        if self.check is None:
            return self
        wanted = "resolved" if self.check.status == "pass" else "triggered"
        if "status" not in self.model_fields_set:
            object.__setattr__(self, "status", wanted)  # a pass is the check's resolve
        elif self.status != wanted:
            raise ValueError(f"status '{self.status}' contradicts check.status "
                             f"'{self.check.status}': a check result's status is '{wanted}' "
                             "(or leave status out)")
        return self

    @field_validator("event_type")
    @classmethod
    def _known_event_type(cls, value: str, info: ValidationInfo) -> str:
        known = (info.context or {}).get("event_types", BUILTIN_EVENT_TYPES)
        if known is None:  # re-reading a stored alert: it was checked when it was accepted
            return value
        if value not in known:
            raise ValueError(f"unknown event type '{value}'{suggest(value, known)}; known: "
                             f"{', '.join(known)}")
        return value

    @property
    def breaking_changes(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.breaking)


def content_id(data: dict[str, Any]) -> str | None:
    """``alert_`` and 32 hex digits of the SHA-256 of the alert as given, without its ``id``, as
    canonical JSON (keys sorted, no spaces): the same content gives the same id, whenever and
    however often it is sent. Computed from the input, not the validated alert, whose absent
    ``occurred_at`` would be the time of reading. ``None`` if the data cannot be written as
    JSON (it is then invalid anyway, or gets a random id)."""
    try:
        text = json.dumps({k: v for k, v in data.items() if k != "id"}, sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False, default=_plain)
    except (TypeError, ValueError, RecursionError):
        return None
    return "alert_" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _plain(value: Any) -> Any:
    """Python values a program may pass in place of JSON (models, enums, times), as JSON."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    raise TypeError(type(value).__name__)
