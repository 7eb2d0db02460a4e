"""The alert: what a monitor says happened (SPEC §1). Validated strictly, so nothing rides along."""

from __future__ import annotations

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

BUILTIN_EVENT_TYPES: tuple[str, ...] = (
    "schema_change",
    "freshness_violation",
    "metric_anomaly",
    "validity_failure",
    "discovery_failed",
    "asset_removed",
    "asset_discovered",
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


def one_line(text: str) -> str:
    """Collapse line breaks (all of them, not only ``\\n``) and runs of spaces to one space."""
    return re.sub(r"[ \t]{2,}", " ", _LINE_BREAKS.sub(" ", text)).strip()


def _no_credentials(value: Any) -> Any:
    if isinstance(value, str) and _CREDENTIAL_URL.search(value):
        raise ValueError(
            "looks like a connection string with credentials (scheme://user:password@host); "
            "alerts must never carry credentials: send the data source's name instead"
        )
    return value


def _https_link(value: str) -> str:
    if not value.lower().startswith("https://"):
        raise ValueError("must be an https:// URL")
    return value


Text = Annotated[str, AfterValidator(_no_credentials)]
OneLine = Annotated[str, AfterValidator(_no_credentials), AfterValidator(one_line)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Asset(_Strict):
    """The table, view or source the alert is about."""

    id: Annotated[Text, Field(min_length=1, max_length=512)]
    name: Annotated[OneLine, Field(min_length=1, max_length=1024)]
    data_source: OneLine | None = None
    schema_: Annotated[OneLine | None, Field(alias="schema")] = None
    kind: OneLine | None = None
    environment: OneLine | None = None
    tags: tuple[OneLine, ...] = ()

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
    """A time without a zone is UTC."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


class Freshness(_Strict):
    """How late the data is."""

    delay_hours: Annotated[float, Field(ge=0)]
    threshold_hours: Annotated[float | None, Field(ge=0)] = None
    last_updated_at: Annotated[datetime, AfterValidator(_utc)] | None = None


class Alert(_Strict):
    """One alert (SPEC §1). Unknown fields are rejected."""

    id: Annotated[Text, Field(min_length=1, max_length=512)] = Field(
        default_factory=lambda: f"alert_{uuid.uuid4().hex}"
    )
    event_type: str
    status: Status = "triggered"
    severity: Severity = Severity.warning
    title: Annotated[OneLine, Field(min_length=1)]
    description: Text | None = None
    asset: Asset
    changes: tuple[Change, ...] = ()
    freshness: Freshness | None = None
    link: Annotated[Text, AfterValidator(_https_link)] | None = None
    dedup_key: Annotated[Text, Field(min_length=1, max_length=255)] | None = None
    occurred_at: Annotated[datetime, AfterValidator(_utc)] = Field(
        default_factory=lambda: datetime.now(timezone.utc)
    )

    @field_validator("event_type")
    @classmethod
    def _known_event_type(cls, value: str, info: ValidationInfo) -> str:
        known = (info.context or {}).get("event_types", BUILTIN_EVENT_TYPES)
        if known is None:  # re-reading a stored alert: it was checked when it was accepted
            return value
        if value not in known:
            import difflib

            close = difflib.get_close_matches(value, list(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"unknown event type '{value}'{hint}; known: {', '.join(known)}")
        return value

    @property
    def breaking_changes(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.breaking)
