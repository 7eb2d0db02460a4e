"""PagerDuty destination: Events API v2 alerts (trigger, acknowledge, resolve) and change events.

Wire facts (endpoints, limits, answers) follow PagerDuty's Events API v2 documentation and its
OpenAPI description; see ``docs/pagerduty.md`` for the user-facing behaviour. This module holds
the config and the facts it checks; :mod:`.pagerduty_sender` builds the events and posts them, and
is imported when the first sender is made, so checking a config never loads it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from armor_notify import (
    DestinationConfig,
    DestinationType,
    HttpsUrl,
    Secret,
    StrictModel,
    __version__,
    hookimpl,
    mask_secret,
    mask_url,
)
from armor_notify.templates import Template, TemplateText

from .apprise_urls import read_apprise_url

if TYPE_CHECKING:
    from armor_notify import Sender

REGION_BASES: Mapping[str, str] = {
    "us": "https://events.pagerduty.com",
    "eu": "https://events.eu.pagerduty.com",
}
ALERT_PATH = "/v2/enqueue"
CHANGE_PATH = "/v2/change/enqueue"

INTEGRATION_KEY_LENGTH = 32
REST_API_KEY_LENGTH = 20
MAX_SUMMARY_CHARS = 1024
# PagerDuty documents "512 KB" without saying whether K is 1000 or 1024: stay under the smaller.
MAX_EVENT_BYTES = 512_000
# Optional payload strings have no documented limit; these caps keep one runaway value
# (a data source name, a rule name) from crowding out everything else.
MAX_FIELD_CHARS = 1024
# Keep at least this much of the title when the context (event type, asset) is appended.
MIN_TITLE_CHARS = 256
TEST_PREFIX = "Test event from armor-notify: "
USER_AGENT = f"armor-notify/{__version__} (+pagerduty)"

Severity = Literal["critical", "error", "warning", "info"]

MAX_DETAIL_CHARS = 10_000
"""A templated custom detail is cut here: the event's 512 KB are for the alert's own details."""


class PagerDutyTemplate(StrictModel):
    """``template:`` of a PagerDuty destination (see docs/templates.md)."""

    summary: Annotated[Template, TemplateText(single_line=True,
                                              max_length=MAX_SUMMARY_CHARS)] | None = None
    """``payload.summary`` (the incident's title): one line, at most 1,024 characters."""
    custom_details: dict[str, Annotated[Template, TemplateText(max_length=MAX_DETAIL_CHARS)]] = Field(
        default_factory=dict, max_length=50)
    """More ``payload.custom_details``, by name (a name of armor-notify's own replaces it)."""


class PagerDutyConfig(DestinationConfig):
    """A PagerDuty service reached through one Events API v2 integration."""

    # The key must never reach an error message, even as pydantic's echoed input.
    model_config = ConfigDict(hide_input_in_errors=True)

    integration_key: Secret
    """The 32-character Integration Key (routing key) of an Events API v2 integration."""
    region: Literal["us", "eu"] | None = None
    """PagerDuty's own endpoint for US (the default) or EU accounts; exclusive with ``url``."""
    url: HttpsUrl | None = None
    """The Events API base (``https://events.pagerduty.com``) or its ``…/v2/enqueue`` endpoint."""
    source: Annotated[str, Field(min_length=1)] | None = None
    """``payload.source``; ``defaults.source`` when absent."""
    severity: Severity = "critical"
    """``payload.severity`` of every trigger: PagerDuty is for pages."""
    event_kind: Literal["alert", "change"] = "alert"
    """``alert`` events open and close incidents; ``change`` events only annotate the service."""
    template: PagerDutyTemplate | None = None
    """The summary and more custom details, from templates of the alert's fields."""

    @field_validator("integration_key", mode="before")
    @classmethod
    def _strip_pasted_whitespace(cls, value: Any) -> Any:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        return value.strip() if isinstance(value, str) else value

    @field_validator("integration_key")
    @classmethod
    def _looks_like_integration_key(cls, value: Secret) -> Secret:
        length = len(value.get_secret_value())
        where = (
            "In PagerDuty open the service, go to Integrations, add (or open) the Events API v2 "
            "integration and copy its Integration Key."
        )
        if length == REST_API_KEY_LENGTH:
            raise ValueError(
                "is 20 characters long, which looks like a PagerDuty REST API key, not an Events "
                "API v2 Integration Key (REST API keys cannot send events). " + where
            )
        if length != INTEGRATION_KEY_LENGTH:
            found = "is empty" if length == 0 else f"is {length} characters long"
            raise ValueError(
                f"{found}, but an Events API v2 Integration Key has exactly 32 characters. "
                + where
                + " Events API v1 integrations are not supported."
            )
        if not value.get_secret_value().isalnum() or not value.get_secret_value().isascii():
            raise ValueError(
                "contains characters other than letters and digits; an Events API v2 Integration "
                "Key has only letters and digits (check for quotes or spaces copied with it)"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _change_events_have_no_lifecycle(cls, data: Any) -> Any:
        # Change events cannot be acknowledged or resolved, so by default the core suppresses
        # those notifications instead of sending something PagerDuty cannot apply.
        if (
            isinstance(data, dict)
            and data.get("event_kind") == "change"
            and data.get("send_resolved") is None
        ):
            data = {**data, "send_resolved": False}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> PagerDutyConfig:
        if self.region is not None and self.url is not None:
            raise ValueError(
                "set either region (PagerDuty's own us or eu endpoint) or url (a proxy or a "
                "local receiver), not both"
            )
        if self.event_kind == "change" and self.send_resolved:
            raise ValueError(
                "send_resolved cannot be true with event_kind: change, because change events "
                "cannot be acknowledged or resolved; remove send_resolved"
            )
        return self

    @property
    def base_url(self) -> str:
        return self.url if self.url is not None else REGION_BASES[self.region or "us"]

    @property
    def alert_endpoint(self) -> str:
        return _endpoints(self.base_url)[0]

    @property
    def change_endpoint(self) -> str:
        return _endpoints(self.base_url)[1]

    @property
    def endpoint(self) -> str:
        """Where this destination's events go, for its ``event_kind``."""
        return self.change_endpoint if self.event_kind == "change" else self.alert_endpoint

    def describe(self) -> str:
        where = mask_url(self.url) if self.url is not None else (self.region or "us")
        kind = " change events" if self.event_kind == "change" else ""
        key = mask_secret(self.integration_key.get_secret_value())
        return f"PagerDuty {where}{kind}, key {key}"

    def target_key(self) -> str | None:
        # PagerDuty deduplicates per integration key: two destinations with one key are one target.
        return f"{self.event_kind}:{self.integration_key.get_secret_value()}"

    def rate_limit_key(self) -> str | None:
        # PagerDuty counts its limit per integration key, whichever destination uses it.
        return self.integration_key.get_secret_value()


def _endpoints(base: str) -> tuple[str, str]:
    """The alert and change endpoints for an Events API base or an endpoint URL."""
    parts = urlsplit(base)
    path = parts.path.rstrip("/")
    for known_tail in (CHANGE_PATH, ALERT_PATH, "/v2"):
        if path.endswith(known_tail):
            path = path[: -len(known_tail)]
            break
    return (
        urlunsplit(parts._replace(path=path + ALERT_PATH)),
        urlunsplit(parts._replace(path=path + CHANGE_PATH)),
    )


_APPRISE_PARAMS = frozenset({
    "integrationkey", "region", "severity", "source",
    "apikey", "component", "group", "class", "click", "image", "action", "dedup",
})


def _from_pagerduty_url(url: str) -> dict[str, Any]:
    """Apprise's ``pagerduty://{integration_key}@{api_key}[/{source}[/{component}]]`` → native.

    The REST API key (Apprise requires one) is not needed for the Events API and is ignored;
    ``?region=us|eu``, ``?severity=`` and ``?source=`` map to the native options.
    """
    # "+name=value" (a custom detail), "-name" and ":name" are Apprise's free-form parameters.
    parts, params = read_apprise_url(
        url, takes=_APPRISE_PARAMS, free_prefixes=("+", "-", ":"),
        unknown=lambda name: f"unknown parameter '{name}'; Apprise's pagerduty:// URL takes "
        "region, severity and source here (use type: apprise to send through Apprise instead)",
    )
    key = params.get("integrationkey") or unquote(parts.username or "")
    if not key:
        raise ValueError(
            "no integration key: write pagerduty://INTEGRATION_KEY@API_KEY (Apprise's form; "
            "armor-notify needs only the Events API v2 Integration Key) or use type: pagerduty"
        )
    config: dict[str, Any] = {"integration_key": key}
    path = [unquote(p) for p in parts.path.split("/") if p]
    source = params.get("source") or (path[0] if path else None)
    if source:
        config["source"] = source
    if params.get("region"):
        config["region"] = params["region"].lower()
    if params.get("severity"):
        config["severity"] = params["severity"].lower()
    return config


def _sender(config: PagerDutyConfig) -> Sender:
    from .pagerduty_sender import PagerDutySender

    return PagerDutySender(config)


PAGERDUTY = DestinationType(
    name="pagerduty",
    config_model=PagerDutyConfig,
    sender=_sender,
    display_name="PagerDuty",
    send_resolved_default=True,
    default_rate_limit="120/minute",
    url_schemes=("pagerduty",),
    from_url=_from_pagerduty_url,
    test_reminder=(
        "Remember to resolve the test incident in PagerDuty to avoid confusion, or run the test "
        "again with --resolve."
    ),
)


@hookimpl
def register_destination_types(register: Callable[[DestinationType], None]) -> None:
    register(PAGERDUTY)
