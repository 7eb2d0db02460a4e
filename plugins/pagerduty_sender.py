"""PagerDuty on the wire: the Events API v2 events built from a notification, and the sender
that posts them and reads PagerDuty's answers.

Imported when the first PagerDuty sender is made (or a preview asks for an event), so commands
that only check a config (``validate``, ``route``) never load it; :mod:`.pagerduty` holds the
config and the wire facts it needs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from armor_notify import Notification, Outcome, mask_secret, mask_url, parse_retry_after
from armor_notify.http import HttpClient, NetworkError, Redactor
from armor_notify.secrets import ELLIPSIS
from armor_notify.templates import TemplateError, render_named, template_context, template_failed

from .pagerduty import (
    MAX_EVENT_BYTES,
    MAX_FIELD_CHARS,
    MAX_SUMMARY_CHARS,
    MIN_TITLE_CHARS,
    TEST_PREFIX,
    USER_AGENT,
    PagerDutyConfig,
)

ROUTING_KEY_HINT = (
    "Check that the Events API v2 integration still exists on the PagerDuty service "
    "(Services → your service → Integrations), copy a fresh Integration Key, and update "
    "integration_key of destination '{destination}'. Events API v1 integrations are not supported."
)
RULESET_CHANGE_HINT = (
    " Keys of global rulesets (they start with R) cannot receive change events: use the key of "
    "an Events API v2 integration on a service."
)
NETWORK_HINT = (
    "Check network access to the Events API (HTTPS, port 443) and any proxy settings."
)
RATE_LIMIT_HINT = (
    "PagerDuty accepts about 120 events a minute per integration key. Review your rules' "
    "thresholds, route lower-priority alerts to Slack or email, or lower this destination's "
    "rate_limit."
)
REJECTED_CONTENT_HINT = (
    "PagerDuty refused the event's content. armor-notify validates events against PagerDuty's "
    "schema, so a proxy may have changed the request, or this is a bug in armor-notify: please "
    "report it with the errors above."
)


# -- building events ---------------------------------------------------------------------------


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, at a word boundary when one is near."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space >= (limit - 1) * 4 // 5:
        cut = cut[:space]
    return cut.rstrip() + ELLIPSIS


def event_summary(notification: Notification) -> str:
    """The alert title with its context: ``<title> — <event type> on <asset>``, ≤ 1024 chars."""
    alert = notification.alert
    title = alert.title
    if notification.test and not title.lower().startswith("test"):
        title = TEST_PREFIX + title
    event = alert.event_type.replace("_", " ")
    context = f" — {event}" if alert.asset.name in title else f" — {event} on {alert.asset.name}"
    if len(title) + len(context) <= MAX_SUMMARY_CHARS:
        return title + context
    if len(context) <= MAX_SUMMARY_CHARS - MIN_TITLE_CHARS:
        return shorten(title, MAX_SUMMARY_CHARS - len(context)) + context
    return shorten(title + context, MAX_SUMMARY_CHARS)


@dataclass(frozen=True)
class _Trim:
    """How much of the optional detail fits: ``None`` keeps everything."""

    changes: int | None = None
    description: int | None = None
    minimal: bool = False


def _finite(value: float | None) -> float | str | None:
    # JSON has no Infinity or NaN: PagerDuty would answer "JSON parse error".
    return value if value is None or math.isfinite(value) else str(value)


def _custom_details(notification: Notification, trim: _Trim) -> dict[str, Any]:
    alert = notification.alert
    asset = alert.asset
    details: dict[str, Any] = {
        "rule": shorten(notification.rule, MAX_FIELD_CHARS),
        "event_type": alert.event_type,
        "asset_id": asset.id,
        "asset_name": asset.name,
    }
    if trim.minimal:
        details["trimmed"] = (
            "Only the essentials are shown: the full details would exceed PagerDuty's 512 KB "
            f"event limit. See the alert in {notification.source} for the rest."
        )
        return details
    if notification.test:
        details["test"] = True
    if alert.description:
        details["description"] = (
            alert.description
            if trim.description is None
            else shorten(alert.description, max(trim.description, 1))
        )
    details["alert_id"] = alert.id
    details["monitor_severity"] = alert.severity.value
    for key, value in (
        ("data_source", asset.data_source),
        ("schema", asset.schema_),
        ("asset_kind", asset.kind),
        ("environment", asset.environment),
    ):
        if value:
            details[key] = shorten(value, MAX_FIELD_CHARS)
    if asset.tags:
        details["tags"] = list(asset.tags)
    if alert.link:
        details["link"] = alert.link
    if alert.changes:
        kept = alert.changes if trim.changes is None else alert.changes[: trim.changes]
        if kept:
            details["changes"] = [
                {
                    key: value
                    for key, value in (
                        ("type", change.type),
                        ("column", change.column),
                        ("from", change.from_),
                        ("to", change.to),
                        ("breaking", change.breaking),
                    )
                    if value is not None
                }
                for change in kept
            ]
        details["breaking_changes"] = len(alert.breaking_changes)
    if alert.freshness is not None:
        freshness = alert.freshness
        details["freshness_delay_hours"] = _finite(freshness.delay_hours)
        if freshness.threshold_hours is not None:
            details["freshness_threshold_hours"] = _finite(freshness.threshold_hours)
        if freshness.last_updated_at is not None:
            details["last_updated_at"] = freshness.last_updated_at.isoformat()
    notes = []
    if trim.changes == 0 and alert.changes:
        notes.append(f"all {len(alert.changes)} schema changes left out")
    elif trim.changes is not None and trim.changes < len(alert.changes):
        notes.append(f"showing {trim.changes} of {len(alert.changes)} schema changes")
    if trim.description is not None and alert.description:
        notes.append(
            f"description cut to {len(details['description'])} of {len(alert.description)} "
            "characters"
        )
    if notes:
        details["trimmed"] = (
            "Shortened to stay under PagerDuty's 512 KB event limit: " + "; ".join(notes)
        )
    return details


def encode_event(event: Mapping[str, Any]) -> bytes:
    """The exact bytes sent, so size checks measure what PagerDuty receives."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _largest_fitting(low: int, high: int, fits: Callable[[int], bool]) -> int:
    """The largest n in [low, high] with fits(n), given fits(low) and monotonic ``fits``."""
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def _within_size_limit(make: Callable[[_Trim], dict[str, Any]], alert_changes: int,
                       description_chars: int) -> dict[str, Any]:
    """The fullest event from ``make`` under 512 KB: changes go first, then the description."""

    def fits(trim: _Trim) -> bool:
        return len(encode_event(make(trim))) <= MAX_EVENT_BYTES

    full = make(_Trim())
    if len(encode_event(full)) <= MAX_EVENT_BYTES:  # nearly always
        return full
    if fits(_Trim(changes=0)):
        kept = _largest_fitting(0, alert_changes, lambda n: fits(_Trim(changes=n)))
        return make(_Trim(changes=kept))
    if description_chars and fits(_Trim(changes=0, description=1)):
        kept = _largest_fitting(
            1, description_chars, lambda n: fits(_Trim(changes=0, description=n))
        )
        return make(_Trim(changes=0, description=kept))
    return make(_Trim(minimal=True))


def _links(notification: Notification, trim: _Trim) -> list[dict[str, str]]:
    link = notification.alert.link
    if not link or trim.minimal:
        return []
    entry = {"href": link}
    if notification.link_text:
        entry["text"] = notification.link_text
    return [entry]


def _source(config: PagerDutyConfig, notification: Notification) -> str:
    return config.source or notification.source or "armor-notify"


def _timestamp(notification: Notification) -> str:
    return notification.alert.occurred_at.isoformat(timespec="milliseconds")


def _templated(config: PagerDutyConfig,
               notification: Notification) -> tuple[str, dict[str, str]]:
    """The summary and the extra custom details, from the destination's templates (the
    built-in summary when there is none); :class:`TemplateError` when one fails."""
    template = config.template
    if template is None or notification.digest:
        return event_summary(notification), {}
    given = {f"custom_details.{k}": t for k, t in template.custom_details.items()}
    if template.summary is not None:
        given["summary"] = template.summary
    shown = render_named(given, template_context(notification))
    summary = shown.pop("summary", "")
    return (summary or event_summary(notification),
            {name.removeprefix("custom_details."): text for name, text in shown.items()})


def trigger_event(config: PagerDutyConfig, notification: Notification) -> dict[str, Any]:
    """The ``trigger`` event for an alert, under 512 KB."""
    alert = notification.alert
    summary, extra = _templated(config, notification)

    def make(trim: _Trim) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "summary": summary,
            "source": _source(config, notification),
            "severity": config.severity,
            "timestamp": _timestamp(notification),
            "component": alert.asset.name,
        }
        if alert.asset.data_source:
            payload["group"] = shorten(alert.asset.data_source, MAX_FIELD_CHARS)
        payload["class"] = alert.event_type
        payload["custom_details"] = {**_custom_details(notification, trim), **extra}
        event: dict[str, Any] = {
            "routing_key": config.integration_key.get_secret_value(),
            "event_action": "trigger",
            "dedup_key": notification.dedup_key,
            "payload": payload,
            "client": notification.source or "armor-notify",
        }
        links = _links(notification, trim)
        if links:
            event["links"] = links
            event["client_url"] = links[0]["href"]
        return event

    return _within_size_limit(make, len(alert.changes), len(alert.description or ""))


def lifecycle_event(config: PagerDutyConfig, notification: Notification) -> dict[str, Any]:
    """The ``acknowledge`` or ``resolve`` event: PagerDuty applies it by dedup key alone."""
    return {
        "routing_key": config.integration_key.get_secret_value(),
        "dedup_key": notification.dedup_key,
        "event_action": notification.action,
    }


def change_event(config: PagerDutyConfig, notification: Notification) -> dict[str, Any]:
    """A change event: shown on the service's timeline, never pages anyone."""
    alert = notification.alert
    summary, extra = _templated(config, notification)

    def make(trim: _Trim) -> dict[str, Any]:
        event: dict[str, Any] = {
            "routing_key": config.integration_key.get_secret_value(),
            "payload": {
                "summary": summary,
                "source": _source(config, notification),
                "timestamp": _timestamp(notification),
                "custom_details": {**_custom_details(notification, trim), **extra},
            },
        }
        links = _links(notification, trim)
        if links:
            event["links"] = links
        return event

    return _within_size_limit(make, len(alert.changes), len(alert.description or ""))


# -- sending -----------------------------------------------------------------------------------


class PagerDutySender:
    """Posts events for one destination, from any number of threads over kept-alive connections."""

    bounded_waits = True
    """One post through HttpClient, whose timeout bounds the whole attempt."""

    def __init__(self, config: PagerDutyConfig) -> None:
        self.config = config
        self._http = HttpClient(config.alert_endpoint,
                                {"User-Agent": USER_AGENT, "Accept": "application/json",
                                 "Content-Type": "application/json"})
        # What PagerDuty (or whatever answers at url) sends back may quote the key.
        self._redactor = Redactor([config.integration_key.get_secret_value()])

    def __repr__(self) -> str:
        return f"PagerDutySender({self.config.describe()})"

    def send(self, notification: Notification) -> Outcome:
        try:
            event = self._event(notification)
        except TemplateError as exc:
            return template_failed(exc, notification)
        if event is None:
            return Outcome.delivered(
                f"nothing sent: PagerDuty change events cannot be {notification.action}d",
                skipped=True,
            )
        return self._post(self.config.endpoint, event, notification)

    def preview(self, notification: Notification) -> dict[str, Any]:
        """The event ``send`` would post, its integration key masked."""
        event = self._event(notification)
        if event is None:
            return {"nothing_sent": f"PagerDuty change events cannot be "
                                    f"{notification.action}d"}
        return {"request": f"POST {self.config.endpoint}",
                "event": {**event, "routing_key": mask_secret(event["routing_key"])}}

    def _event(self, notification: Notification) -> dict[str, Any] | None:
        if self.config.event_kind == "change":
            return change_event(self.config, notification) if notification.action == "trigger" \
                else None
        if notification.action == "trigger":
            return trigger_event(self.config, notification)
        return lifecycle_event(self.config, notification)

    def close(self) -> None:
        """Close the kept-alive connections (a later ``send`` opens new ones)."""
        self._http.close()

    def _post(self, endpoint: str, event: Mapping[str, Any], notification: Notification) -> Outcome:
        where = mask_url(endpoint)
        try:
            answer = self._http.post(endpoint, encode_event(event), timeout=notification.timeout)
        except NetworkError as exc:
            outcome = exc.outcome(f"PagerDuty ({where})", notification.timeout, hint=NETWORK_HINT)
        else:
            outcome = self._classify(answer.status, answer.body,
                                     parse_retry_after(answer.headers.get("Retry-After")),
                                     notification)
        return self._redactor.outcome(outcome)

    def _classify(
        self, status: int, body: bytes, retry_after: float | None, notification: Notification
    ) -> Outcome:
        answer = _json_object(body)
        if 200 <= status < 300:
            returned_key = answer.get("dedup_key") if answer else None
            message = answer.get("message") if answer else None
            reason = message if isinstance(message, str) else f"HTTP {status} (answer not JSON)"
            if self.config.event_kind == "change":
                return Outcome.delivered(self._redact(reason))
            dedup_key = notification.dedup_key
            if isinstance(returned_key, str) and self._redact(returned_key) == returned_key:
                dedup_key = returned_key  # a key quoting the integration key is not kept
            return Outcome.delivered(self._redact(reason), dedup_key=dedup_key)
        # Masked before _describe_answer cuts the body, so no half of a key is left behind.
        said = _describe_answer(self._redactor.value(answer),
                                self._redact(body.decode("utf-8", "replace")).encode())
        if status == 400:
            return Outcome.failed(f"HTTP 400 {said}", hint=self._hint_for_400(answer, notification))
        if status == 429:
            return Outcome.retry(
                f"HTTP 429 Too Many Requests{': ' + said if said else ''}",
                retry_after=retry_after,
                hint=RATE_LIMIT_HINT,
            )
        if status >= 500:
            return Outcome.retry(f"HTTP {status}{': ' + said if said else ''}",
                                 retry_after=retry_after)
        hint = None
        if status in (404, 405) or 300 <= status < 400:
            hint = (
                f"{mask_url(self.config.base_url)} does not look like a PagerDuty Events API: set "
                "url to its base (e.g. https://events.pagerduty.com) or use region instead."
            )
        return Outcome.failed(f"HTTP {status}{': ' + said if said else ''}", hint=hint)

    def _hint_for_400(self, answer: Mapping[str, Any] | None, notification: Notification) -> str:
        errors = " ".join(_errors(answer)).lower()
        if "routing_key" in errors or "routing key" in errors:
            hint = ROUTING_KEY_HINT.format(destination=notification.destination)
            key = self.config.integration_key.get_secret_value()
            if self.config.event_kind == "change" and key.startswith("R"):
                hint += RULESET_CHANGE_HINT
            return hint
        return REJECTED_CONTENT_HINT

    def _redact(self, text: str) -> str:
        return self._redactor.text(text)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def _errors(answer: Mapping[str, Any] | None) -> list[str]:
    errors = answer.get("errors") if answer else None
    return [str(e) for e in errors] if isinstance(errors, list) else []


def _describe_answer(answer: Mapping[str, Any] | None, body: bytes) -> str:
    """PagerDuty's own words: ``<status> (<message>): <errors>``, or the raw body's start."""
    if answer is None:
        return shorten(body.decode("utf-8", "replace").strip(), 500)
    status, message = answer.get("status"), answer.get("message")
    head = str(status) if status else ""
    if message:
        head = f"{head} ({message})" if head else str(message)
    errors = _errors(answer)
    if errors:
        return f"{head}: {'; '.join(errors)}" if head else "; ".join(errors)
    return head or shorten(body.decode("utf-8", "replace").strip(), 500)


# Apprise's pagerduty:// parameters: those armor-notify maps, then those it decides itself or
# that have no meaning here (the event action and dedup key follow the alert, component, group
# and class come from it).
