"""The ``slack`` destination's bot mode: Slack's Web API with a bot token.

An incoming webhook answers ``ok`` and nothing more, so a message it posted can never be found
again. The Web API's ``chat.postMessage`` answers with the message's ``channel`` and ``ts``; the
sender reports them (``Outcome.delivered(message=…)``), the outbox keeps them with the delivery,
and the next notification of the same incident carries them back (``Notification.thread``):

* an acknowledge or resolve updates the original message (``chat.update``: its emoji, state and
  time) and adds a reply in its thread saying what happened;
* a repeat or reminder of an open incident is a reply in its thread, not a new message;
* when the original cannot be updated (deleted: ``message_not_found``; not the bot's:
  ``cant_update_message``) the update is posted as a new message instead.

Slack answers ``200`` with ``{"ok": false, "error": "…"}`` for refusals, and ``429`` with
``Retry-After`` when rate limited. Every error is reported verbatim with what to do about it,
and the token is masked wherever an answer quotes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from armor_notify import Notification, Outcome, mask_url, parse_retry_after
from armor_notify.http import HttpClient, NetworkError, Redactor
from armor_notify.message import build_message
from armor_notify.templates import TemplateError, template_failed

from .slack import MAX_FALLBACK_TEXT
from .slack_sender import _STATE_EMOJI, ERROR_HINTS, _fit, _section, build_payload

if TYPE_CHECKING:
    from .slack import SlackConfig

__all__ = ["API_HINTS", "SlackApiSender"]

_TOKEN_HINT = (
    "Slack refused the bot token: copy the Bot User OAuth Token (xoxb-…) from the app's "
    "OAuth & Permissions page into token (SLACK_BOT_TOKEN); if the app was uninstalled or the "
    "token revoked, reinstall the app to get a new one"
)
_REPORT_IT = ERROR_HINTS["invalid_blocks"]

API_HINTS: Mapping[str, str] = {
    "not_in_channel": (
        "the app is not a member of {channel}: invite it there (in the channel, type "
        "/invite @your-app-name), then send again"
    ),
    "channel_not_found": (
        "this token sees no channel {channel}: check the channel ID (the channel's details, at "
        "the bottom of About) or its #name; a private channel needs the app invited first"
    ),
    "is_archived": "{channel} was archived: unarchive it, or set channel to an active one",
    "missing_scope": (
        "the app lacks the chat:write scope: add it under OAuth & Permissions and reinstall the "
        "app to the workspace"
    ),
    "restricted_action": (
        "a workspace setting keeps this app from posting in {channel}: ask a Slack admin"
    ),
    "invalid_auth": _TOKEN_HINT,
    "not_authed": _TOKEN_HINT,
    "token_revoked": _TOKEN_HINT,
    "token_expired": _TOKEN_HINT,
    "account_inactive": _TOKEN_HINT,
    "not_allowed_token_type": (
        "this is not a bot token: use the Bot User OAuth Token (xoxb-…) from the app's OAuth & "
        "Permissions page"
    ),
    "ratelimited": (
        "Slack accepts about one message per second per channel; armor-notify waits as Slack "
        "asks"
    ),
    "msg_too_long": _REPORT_IT,
    "no_text": _REPORT_IT,
    "invalid_blocks": _REPORT_IT,
    "invalid_blocks_format": _REPORT_IT,
    "invalid_arguments": _REPORT_IT,
    "invalid_json": _REPORT_IT,
    "json_not_object": _REPORT_IT,
    "too_many_attachments": _REPORT_IT,
}
"""What to do about each error code of ``chat.postMessage`` and ``chat.update``
(``{channel}`` is the configured channel)."""

RETRYABLE = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable",
                       "request_timeout", "team_added_to_org"})
"""Error codes that say "not now" rather than "never"."""

GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})
"""``chat.update`` codes that mean the original cannot be updated: post anew instead."""

_UNEXPECTED_HINT = (
    "that is not an answer of Slack's Web API: check api_url (https://slack.com/api/ unless a "
    "proxy stands in for Slack)"
)


class _Refused(Exception):
    """A Web API call that did not succeed, as the attempt's outcome."""

    def __init__(self, outcome: Outcome, code: str = "") -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome
        self.code = code


class SlackApiSender:
    """Posts, updates and threads messages in one channel through the Web API."""

    bounded_waits = True
    """Each call goes through HttpClient within what is left of the attempt's timeout."""
    threads = True
    """Notifications carry the incident's message (see :attr:`Notification.thread`)."""

    def __init__(self, config: SlackConfig) -> None:
        assert config.token is not None and config.channel is not None
        self._channel = config.channel
        self._base = config.api_url
        self._template = config.template
        token = config.token.get_secret_value()
        self._http = HttpClient(self._base, {
            "Content-Type": "application/json; charset=utf-8",
            "Authorization": f"Bearer {token}",
        })
        self._redactor = Redactor([token])

    def close(self) -> None:
        self._http.close()

    def preview(self, notification: Notification) -> dict[str, Any]:
        """The first call ``send`` would make (without the incident's message: a new one)."""
        body = {**build_payload(notification, self._template), "channel": self._channel}
        shown: dict[str, Any] = {"request": f"POST {self._base}chat.postMessage", "payload": body}
        if notification.action != "trigger":
            shown["then"] = ("when the incident's message is known: chat.update of it with this "
                             "payload, and a reply in its thread: " + _reply(notification)["text"])
        return shown

    def send(self, notification: Notification) -> Outcome:
        deadline = time.monotonic() + notification.timeout
        try:
            outcome = self._send(notification, deadline)
        except _Refused as refused:
            outcome = refused.outcome
        except TemplateError as exc:
            outcome = template_failed(exc, notification)
        return self._redactor.outcome(outcome)

    def _send(self, n: Notification, deadline: float) -> Outcome:
        payload = build_payload(n, self._template)
        thread = n.thread if n.thread and {"channel", "ts"} <= n.thread.keys() else None
        if thread is not None and n.action != "trigger":
            return self._update(n, payload, thread, deadline)
        if thread is not None:  # a repeat or a reminder of an open incident: in its thread
            self._call("chat.postMessage", {**payload, "channel": thread["channel"],
                                            "thread_ts": thread["ts"]}, deadline)
            return Outcome.delivered(message=dict(thread))
        posted = self._call("chat.postMessage", {**payload, "channel": self._channel}, deadline)
        return Outcome.delivered(message=_ref(posted))

    def _update(self, n: Notification, payload: dict[str, Any], thread: Mapping[str, Any],
                deadline: float) -> Outcome:
        """An acknowledge or resolve: the original message shows the new state, and a reply in
        its thread says so; a message that cannot be updated is posted anew."""
        try:
            self._call("chat.update", {**payload, "channel": thread["channel"],
                                       "ts": thread["ts"]}, deadline)
        except _Refused as refused:
            if refused.code not in GONE:
                raise
            posted = self._call("chat.postMessage", {**payload, "channel": self._channel},
                                deadline)
            return Outcome.delivered(f"the original message could not be updated "
                                     f"({refused.code}): posted anew", message=_ref(posted))
        self._call("chat.postMessage", {**_reply(n), "channel": thread["channel"],
                                        "thread_ts": thread["ts"]}, deadline)
        return Outcome.delivered(message=dict(thread))

    def _call(self, method: str, body: Mapping[str, Any], deadline: float) -> dict[str, Any]:
        """One Web API call; its answer's fields, or :class:`_Refused` with the outcome."""
        url = self._base + method
        where = f"Slack {method} ({mask_url(url)})"
        timeout = max(0.1, deadline - time.monotonic())
        try:
            answer = self._http.post(url, json.dumps(body, allow_nan=False).encode(),
                                     timeout=timeout)
        except NetworkError as exc:
            raise _Refused(exc.outcome(where, timeout, hint="check api_url and any proxy "
                                       "settings (HTTPS_PROXY, NO_PROXY)")) from None
        status = answer.status
        retry_after = parse_retry_after(answer.headers.get("Retry-After"))
        try:
            data = json.loads(answer.body)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
            text = self._redactor.text(answer.text.strip())[:300]
            reason = f"HTTP {status} {answer.reason}".strip() + (f": {text}" if text else "")
            if status == 429 or status >= 500:
                raise _Refused(Outcome.retry(reason, retry_after=retry_after, status=status))
            raise _Refused(Outcome.failed(reason, hint=_UNEXPECTED_HINT, status=status))
        if data["ok"] and 200 <= status < 300:
            return data
        code = str(data.get("error") or f"HTTP {status}")
        hint = API_HINTS.get(code, "").format(channel=self._channel) or None
        if code == "missing_scope" and data.get("needed"):
            hint = f"{hint} (needed: {data['needed']}; the token has: {data.get('provided')})"
        if status == 429 or status >= 500 or code in RETRYABLE:
            raise _Refused(Outcome.retry(code, retry_after=retry_after, hint=hint,
                                         status=status), code)
        raise _Refused(Outcome.failed(code, hint=hint, status=status), code)


def _ref(answer: Mapping[str, Any]) -> dict[str, str]:
    """Where a posted message is: its channel (always the ID) and ts."""
    return {"channel": str(answer.get("channel", "")), "ts": str(answer.get("ts", ""))}


def _reply(n: Notification) -> dict[str, Any]:
    """The thread reply to an acknowledge or resolve: one line, what happened and when."""
    message = build_message(n)
    emoji = _STATE_EMOJI.get(message.state, ":bell:")
    line = f"{emoji} {message.headline} · {message.time_text}"
    return {"text": _fit(line, MAX_FALLBACK_TEXT), "blocks": [_section(_fit(line, 3000))],
            "unfurl_links": False, "unfurl_media": False}
