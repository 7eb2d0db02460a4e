"""Slack on the wire: the Block Kit payload built from a notification, and the incoming
webhook's sender with what Slack's answers mean.

Imported when the first Slack sender is made (or a preview asks for a payload), so commands that
only check a config (``validate``, ``route``) never load it; :mod:`.slack` holds the config, its
template blocks and Slack's escaping. The bot's sender (:mod:`.slack_api`) posts the same
payloads through the Web API.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from armor_notify import Notification, Outcome, mask_url, parse_retry_after
from armor_notify.http import Answer, HttpClient, NetworkError, Redactor
from armor_notify.message import Message, and_more, build_digest, build_message
from armor_notify.templates import TemplateError, render_named, template_context, template_failed

from .slack import (
    _URL_SAFE,
    MAX_BLOCKS,
    MAX_FALLBACK_TEXT,
    MAX_FIELD_TEXT,
    MAX_FIELDS,
    MAX_HEADER_TEXT,
    MAX_LISTED_CHANGES,
    MAX_SECTION_TEXT,
    SlackConfig,
    SlackTemplate,
    _cut_escaped,
    escape,
)

_STATE_EMOJI = {"resolved": ":white_check_mark:", "acknowledged": ":eyes:"}
_SEVERITY_EMOJI = {
    "critical": ":red_circle:",
    "warning": ":large_orange_circle:",
    "info": ":large_blue_circle:",
}

_REPORT_IT = (
    "armor-notify sent a message Slack rejected: please report it, with the alert that caused it"
)
_REVOKED = (
    "the webhook was revoked or removed: create a new incoming webhook and update "
    "webhook_url (SLACK_WEBHOOK_URL)"
)

ERROR_HINTS: Mapping[str, str] = {
    "invalid_payload": _REPORT_IT,
    "invalid_blocks": _REPORT_IT,
    "invalid_blocks_format": _REPORT_IT,
    "no_text": _REPORT_IT,
    "missing_text_or_fallback_or_attachments": _REPORT_IT,
    "too_many_attachments": _REPORT_IT,
    "invalid_token": _REVOKED,
    "no_service": _REVOKED,
    "no_service_id": _REVOKED,
    "no_team": _REVOKED,
    "no_active_hooks": (
        "the Slack app's incoming webhooks are turned off: turn on Incoming Webhooks in the "
        "app's settings, or create a new webhook and update webhook_url (SLACK_WEBHOOK_URL)"
    ),
    "team_disabled": "the Slack workspace was disabled: use a webhook from an active workspace",
    "action_prohibited": (
        "a Slack admin restriction blocks this app or channel: ask a workspace admin to allow "
        "the app to post there, or use a webhook for another channel"
    ),
    "posting_to_general_channel_denied": (
        "only admins may post in #general in this workspace: create the webhook for another "
        "channel, or ask an admin to allow it"
    ),
    "channel_not_found": (
        "the webhook's channel no longer exists: create a new webhook for an existing channel "
        "and update webhook_url (SLACK_WEBHOOK_URL)"
    ),
    "channel_is_archived": (
        "the channel was archived: unarchive it, or create a new webhook for an active channel "
        "and update webhook_url (SLACK_WEBHOOK_URL)"
    ),
    "user_not_found": (
        "the webhook posts to a user who no longer exists: create a new webhook for a channel "
        "and update webhook_url (SLACK_WEBHOOK_URL)"
    ),
    "rollup_error": "Slack had an internal error; the message will be sent again",
}

_RATE_LIMIT_HINT = (
    "Slack accepts about one message per second per webhook; armor-notify waits as Slack asks"
)
_UNEXPECTED_HINT = (
    "that is not Slack's answer to an incoming webhook: check that webhook_url is the URL Slack "
    "gave you (https://hooks.slack.com/services/…) and that no proxy is in between"
)
_TLS_HINT = (
    "the server's certificate did not verify: if a proxy inspects TLS, point REQUESTS_CA_BUNDLE "
    "at its CA bundle; otherwise something is intercepting the connection"
)
# An upstream body may be a proxy's HTML page: show enough to recognise it, not the whole page.
_MAX_REASON = 300


def _fit(text: str, limit: int) -> str:
    """``text`` escaped and cut to ``limit`` characters with an ellipsis, never inside an entity."""
    return _cut_escaped(escape(text), limit)


def _code(text: str, limit: int) -> str:
    """``text`` as an inline code span (no mrkdwn styling inside), escaped and within ``limit``."""
    if "`" in text:  # a backtick would end the span early: show it as ordinary text instead
        return _fit(text, limit)
    return f"`{_fit(text, limit - 2)}`"


def _mrkdwn(text: str) -> dict[str, Any]:
    # verbatim: Slack does not auto-link bare URLs and #channel names in it.
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text)}


def _link_url(link: str) -> str:
    # Percent-encode what would end or split a <url|label> link ('>', '|', spaces, '<').
    return quote(link, safe=_URL_SAFE).replace("|", "%7C")


def _lines_within(head: str, lines: list[str], more: int, limit: int) -> str:
    """``head`` and as many ``lines`` as fit in ``limit``; the rest join ``and N more``."""
    kept = list(lines)
    while True:
        tail = [and_more(more)] if more else []
        text = "\n".join([head, *kept, *tail])
        if len(text) <= limit or not kept:
            return text if len(text) <= limit else text[:limit]
        kept.pop()
        more += 1


def _change_line(message: Message, index: int) -> str:
    change = message.changes[index]
    line = f"• {escape(change.kind)}"
    if change.column:
        line += f": {_code(change.column, 500)}"
    if change.detail:
        line += f" ({_fit(change.detail, 500)})"
    if change.breaking:
        line += " — *breaking*"
    return line


def build_digest_payload(notification: Notification) -> dict[str, Any]:
    """A digest: the headline, one section per asset listing its alerts (each linking to it),
    and the count of alerts not listed. Escaped and within Slack's limits like any message."""
    digest = build_digest(notification)
    blocks: list[dict[str, Any]] = [{
        "type": "header",
        "text": {"type": "plain_text", "text": _fit(f":package: Digest · {digest.headline}",
                                                    MAX_HEADER_TEXT), "emoji": True},
    }]
    room = MAX_BLOCKS - 3  # header, the "not listed" note, the context line
    unlisted = digest.left_out
    for index, group in enumerate(digest.groups):
        if index >= room:
            unlisted += sum(len(g.items) for g in digest.groups[index:])
            break
        lines = []
        for item in group.items:
            line = f"• {_fit(item.text, 600)}"
            if item.link:
                line += f" · <{escape(_link_url(item.link))}|{_fit(digest.link_text, 100)}>"
            lines.append(line)
        blocks.append(_section(_lines_within(f"*{_code(group.asset, 500)}*", lines, 0,
                                             MAX_SECTION_TEXT)))
    if unlisted:
        blocks.append(_section(f"_{escape(and_more(unlisted))} not listed here_"))
    context = f"{escape(digest.time_text)} · {digest.total} alerts"
    context += f" · from {_fit(notification.source, 100)} via armor-notify"
    blocks.append({"type": "context", "elements": [_mrkdwn(context)]})
    return {
        "text": _fit(f":package: Digest: {digest.headline}", MAX_FALLBACK_TEXT),
        "blocks": blocks[:MAX_BLOCKS],
        "unfurl_links": False,
        "unfurl_media": False,
    }


def _templated(payload: dict[str, Any], template: SlackTemplate,
               notification: Notification) -> dict[str, Any]:
    """The built-in payload with the template's text and blocks in place of its own."""
    context = template_context(notification)
    if template.text is not None:
        text = render_named({"text": template.text}, context)["text"]
        if text.strip():
            payload["text"] = text
    if template.blocks is not None:
        blocks = []
        for index, block in enumerate(template.blocks):
            try:
                shown = block.render(context)
            except TemplateError as exc:
                raise exc.within(f"template.blocks[{index}]") from None
            if shown is not None:
                blocks.append(shown)
        payload["blocks"] = blocks
        if not blocks:  # none given, or every one rendered empty: the text alone
            del payload["blocks"]
    return payload


def build_payload(notification: Notification,
                  template: SlackTemplate | None = None) -> dict[str, Any]:
    """The JSON body for Slack: a Block Kit message within Slack's limits, plus a ``text`` fallback.

    Every alert-derived string is escaped; the payload never includes ``link_names`` or ``parse``.
    With a ``template``, its text and blocks replace the built-in ones (not for digests); a
    template that fails for this alert raises :class:`TemplateError`.
    """
    if notification.digest:
        return build_digest_payload(notification)
    if template is not None:
        return _templated(build_payload(notification), template, notification)
    message = build_message(notification, max_changes=MAX_LISTED_CHANGES)
    emoji = _STATE_EMOJI.get(message.state) or _SEVERITY_EMOJI.get(message.severity, ":bell:")

    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _fit(f"{emoji} {message.headline}", MAX_HEADER_TEXT),
                "emoji": True,
            },
        }
    ]
    if message.test_notice:
        blocks.append(_section(":test_tube: " + _fit(message.test_notice, MAX_SECTION_TEXT - 20)))

    title = f"*{_fit(message.title, MAX_SECTION_TEXT - 40)}*"
    if message.state == "resolved":
        title = f"Resolved: {title}"
    elif message.state == "acknowledged":
        title = f"Acknowledged: {title}"
    blocks.append(_section(title))

    fields = []
    for field in message.fields[:MAX_FIELDS]:
        if not field.value:
            continue
        label = f"*{escape(field.label)}*\n"
        room = MAX_FIELD_TEXT - len(label)
        value = _code(field.value, room) if field.label == "Asset" else _fit(field.value, room)
        fields.append(_mrkdwn(label + value))
    if fields:
        blocks.append({"type": "section", "fields": fields})

    # The resolved and acknowledged forms are short: the details were in the triggered message.
    if message.state == "triggered":
        if message.description:
            blocks.append(_section(_fit(message.description, MAX_SECTION_TEXT)))
        if message.changes or message.more_changes:
            head = "*Changes*"
            if message.changes_summary:
                head += f" · {escape(message.changes_summary)}"
            lines = [_change_line(message, i) for i in range(len(message.changes))]
            blocks.append(
                _section(_lines_within(head, lines, message.more_changes, MAX_SECTION_TEXT))
            )
        if message.freshness:
            blocks.append(_section(":hourglass: " + _fit(message.freshness, MAX_SECTION_TEXT - 20)))

    if message.link:
        url = _link_url(message.link)
        label = _fit(message.link_text or "View alert", 200)
        # A plain link, not a button: link buttons need an interactivity endpoint, or Slack
        # shows a warning after every click.
        link = f":link: <{escape(url)}|{label}>"
        if len(link) <= MAX_SECTION_TEXT:
            blocks.append(_section(link))

    context = f"{escape(message.time_text)} · alert {_code(message.alert_id, 600)}"
    context += f" · from {_fit(notification.source, 100)} via armor-notify"
    blocks.append({"type": "context", "elements": [_mrkdwn(context)]})

    fallback = f"{emoji} {message.summary}"
    if message.state == "triggered":
        fallback += f" ({notification.alert.asset.name})"
    return {
        "text": _fit(fallback, MAX_FALLBACK_TEXT),
        "blocks": blocks[:MAX_BLOCKS],
        "unfurl_links": False,
        "unfurl_media": False,
    }


class SlackSender:
    """Posts one message per attempt to the configured webhook and classifies Slack's answer."""

    bounded_waits = True
    """One post through HttpClient, whose timeout bounds the whole attempt."""

    def __init__(self, config: SlackConfig) -> None:
        assert config.webhook_url is not None
        self._config = config
        self._url = config.webhook_url.get_secret_value()
        self._http = HttpClient(self._url, {"Content-Type": "application/json"})
        # A refusal may quote the webhook URL, its path or its token: all masked.
        self._redactor = Redactor([self._url])

    def close(self) -> None:
        """Close the kept-alive connections (a later ``send`` opens new ones)."""
        self._http.close()

    def preview(self, notification: Notification) -> dict[str, Any]:
        """The payload ``send`` would post, to the webhook (masked)."""
        return {"request": f"POST {mask_url(self._url)}",
                "payload": build_payload(notification, self._config.template)}

    def send(self, notification: Notification) -> Outcome:
        try:
            payload = build_payload(notification, self._config.template)
        except TemplateError as exc:
            return template_failed(exc, notification)
        body = json.dumps(payload, allow_nan=False).encode()
        where = mask_url(self._url)
        try:
            answer = self._http.post(self._url, body, timeout=notification.timeout)
        except NetworkError as exc:
            outcome = exc.outcome(where, notification.timeout, certificate_hint=_TLS_HINT,
                                  hint="check webhook_url and any proxy settings (HTTPS_PROXY, "
                                  "NO_PROXY)")
        else:
            outcome = self._classify(answer)
        return self._redactor.outcome(outcome)

    def _classify(self, answer: Answer) -> Outcome:
        status = answer.status
        body = self._scrub(answer.text.strip())
        if 200 <= status < 300 and body == "ok":
            return Outcome.delivered(status=status)
        code = body[:_MAX_REASON] if body else f"HTTP {status} {answer.reason}".strip()
        retry_after = parse_retry_after(answer.headers.get("Retry-After"))
        if status == 429:
            return Outcome.retry(
                code, retry_after=retry_after, hint=_RATE_LIMIT_HINT, status=status
            )
        if status >= 500:
            return Outcome.retry(
                code, retry_after=retry_after, hint=ERROR_HINTS.get(body), status=status
            )
        if 300 <= status < 400:
            return Outcome.failed(
                f"HTTP {status} redirect", hint=_UNEXPECTED_HINT, status=status
            )
        # 4xx, and a 2xx whose body is not "ok" (the message may have been posted, so a retry
        # could duplicate it): permanent either way.
        return Outcome.failed(code, hint=ERROR_HINTS.get(body, _UNEXPECTED_HINT), status=status)

    def _scrub(self, text: str) -> str:
        """Mask the webhook URL, its path and its tokens wherever upstream text quotes them."""
        return self._redactor.text(text)

