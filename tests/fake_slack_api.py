"""A Slack Web API server (bot token mode) on loopback that answers the way Slack documents.

It speaks the three methods armor-notify needs: ``chat.postMessage``, ``chat.update`` and
``auth.test`` (``POST {url}<method>``; ``url`` ends in ``/api/`` as ``https://slack.com/api/``
does, so ``slack_sdk.WebClient(token=TOKEN, base_url=fake.url)`` talks to it unchanged).

What it answers, as Slack does (``docs/reference`` and the stored Slack method pages):

* Every answer is JSON. Errors are HTTP 200 ``{"ok": false, "error": "<code>"}``; rate limits are
  HTTP 429 with ``Retry-After`` (seconds) and ``error: ratelimited`` (``rate_limited()``, scripted).
* Authentication: ``Authorization: Bearer <token>`` (or a ``token`` form field, which Slack also
  takes). None is ``not_authed``, another token ``invalid_auth``; set ``token_error`` to
  ``"token_revoked"`` / ``"account_inactive"`` to make the right token answer that from then on.
* Bodies: JSON (``application/json``) or form-encoded; query-string arguments are merged in. A JSON
  body that does not parse is ``invalid_json``, one that is not an object ``json_not_object`` (both
  from Slack's list of errors common to every method); any other content type with a body is
  ``invalid_post_type`` (the fake does not parse ``multipart/form-data``). ``auth.test`` with an
  empty body (what slack_sdk sends) is fine.
* ``channel`` is an id (``C0123ALERTS``) or a name (``#alerts`` or ``alerts``) for
  ``chat.postMessage``, the id only for ``chat.update``; the answer's ``channel`` is always the id.
  Unknown: ``channel_not_found``; in ``archived``: ``is_archived``; for ``chat.postMessage`` a
  channel outside ``member_of`` is ``not_in_channel`` (``chat.update`` does not check membership).
* Content: neither ``text`` nor ``blocks`` (nor ``attachments``/``markdown_text``) is ``no_text``;
  ``text`` over 40,000 characters ``msg_too_long``; blocks that Slack's own Block Kit models
  (slack_sdk, through ``fake_slack.slack_check``) reject, or more than 50 of them,
  ``invalid_blocks``. ``blocks`` may also be a JSON-encoded string, as Slack accepts.
* ``ts`` values are ``"<seconds>.<6 digits>"``, unique and strictly increasing (taken from the
  clock in microseconds, bumped by one when two would collide).
* ``thread_ts`` naming a reply puts the new reply in that reply's parent thread (Slack's docs: use
  the parent's ``ts``; a reply's ``thread_ts`` is always its parent's). ``thread_ts`` naming no
  message in the channel answers ``message_not_found``. That is a choice: Slack's docs say nothing,
  and public reports (slackapi/node-slack-sdk#780, slackapi/python-slack-sdk#840) say real Slack
  answers ``ok: true`` and the reply is then seen nowhere, which a sender could not detect anyway.
* ``chat.update``: unknown ``ts`` (in that channel) is ``message_not_found``; a ``ts`` in
  ``foreign`` (messages someone else posted; ``post_foreign`` makes one) is
  ``cant_update_message``. Fields left out keep their value (Slack keeps the previous blocks when
  ``blocks`` is absent); each successful call adds one to ``edits`` and the previous
  ``{text, blocks}`` to ``history``, even when nothing changed (Slack answers ``ok`` to those too).
* An unknown method is HTTP 404 ``{"ok": false, "error": "unknown_method"}`` (the status is from
  memory of slack.com, not from a stored document).

Tests script the answers per method (``fake.script("chat.postMessage", rate_limited("3"))``); a
scripted answer replaces the normal one entirely (nothing is posted), except ``normal(delay)``,
which answers normally after ``delay`` seconds (the post happens, then the client may time out).
Every request is kept in ``fake.requests``; what was posted is in ``fake.messages(channel)``.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fake_slack import Received, Reply, Serving, handler_class, slack_check

__all__ = [
    "BOT_ID",
    "BOT_USER_ID",
    "TEAM_ID",
    "TOKEN",
    "FakeSlackApi",
    "Message",
    "Received",
    "Reply",
    "error_reply",
    "missing_scope",
    "normal",
    "rate_limited",
]

TOKEN = "xoxb-0000000000-0000000000000-FAKEFAKEFAKEFAKEFAKEFAKE"
TEAM_ID = "T000"
BOT_USER_ID = "U000"
BOT_ID = "B000"
APP_ID = "A000"
FOREIGN_USER_ID = "U999OTHER"
"""Who ``post_foreign`` messages are from."""

MAX_TEXT = 40_000
MAX_BLOCKS = 50
DEFAULT_CHANNELS = {"C0123ALERTS": "alerts", "C0456OTHER": "other"}
METHODS = ("chat.postMessage", "chat.update", "auth.test")

_NORMAL_STATUS = 0  # a scripted Reply with this status means "answer normally, after its delay"


def _json_reply(payload: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(payload), dict(headers or {}))


def error_reply(code: str, **extra: Any) -> Reply:
    """Slack's answer to a failed call: HTTP 200 ``{"ok": false, "error": code, **extra}``."""
    return _json_reply({"ok": False, "error": code, **extra})


def rate_limited(retry_after: str = "1") -> Reply:
    """HTTP 429 with ``Retry-After: <seconds>`` and ``{"ok": false, "error": "ratelimited"}``."""
    return _json_reply({"ok": False, "error": "ratelimited"}, 429, {"Retry-After": retry_after})


def missing_scope(provided: str = "channels:read", needed: str = "chat:write") -> Reply:
    """A token without ``chat:write``: ``missing_scope`` with ``needed`` and ``provided``."""
    return error_reply("missing_scope", needed=needed, provided=provided)


def normal(delay: float = 0.0) -> Reply:
    """A scripted answer that is the normal one (the call takes effect), sent ``delay`` seconds late."""
    return Reply(_NORMAL_STATUS, "", {}, delay)


@dataclass
class Message:
    """One message in a channel, as the fake keeps it."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None
    replies: list[Message] = field(default_factory=list)
    """Thread replies (messages posted with ``thread_ts`` == this ``ts``), oldest first."""
    edits: int = 0
    """How many successful ``chat.update`` calls it took."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """Previous ``{"text", "blocks"}`` versions, oldest first (one per edit)."""
    user: str = BOT_USER_ID
    """Who posted it: the bot, or ``FOREIGN_USER_ID`` for ``post_foreign``."""


class _Refused(Exception):
    """A call Slack refuses: carries the answer."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.body)
        self.reply = reply


def _refuse(code: str, **extra: Any) -> _Refused:
    return _Refused(error_reply(code, **extra))


class FakeSlackApi(Serving):
    """A threaded HTTP server on 127.0.0.1 speaking Slack's Web API for a bot token."""

    def __init__(
        self,
        *,
        token: str = TOKEN,
        channels: dict[str, str] | None = None,
        member_of: set[str] | None = None,
        latency: float = 0.0,
    ) -> None:
        self.token = token
        self.channels: dict[str, str] = dict(DEFAULT_CHANNELS if channels is None else channels)
        """Channel id -> name."""
        self.member_of: set[str] = set(self.channels) if member_of is None else set(member_of)
        """Channel ids the bot is in; ``chat.postMessage`` elsewhere answers ``not_in_channel``."""
        self.archived: set[str] = set()
        """Channel ids that answer ``is_archived``."""
        self.foreign: set[str] = set()
        """``ts`` of messages the bot did not post: ``chat.update`` answers ``cant_update_message``."""
        self.token_error: str | None = None
        """When set (``token_revoked``, ``account_inactive``...), the right token answers it."""
        self.latency = latency
        """Seconds to wait before every answer."""
        self.requests: list[Received] = []
        self._scripts: dict[str, deque[Reply]] = {}
        self._top: dict[str, list[Message]] = {}
        self._by_ts: dict[tuple[str, str], Message] = {}
        self._last_ts_us = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        # A short poll keeps stop() fast: shutdown() waits for the serving loop's next poll.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        """The API base URL, ending in ``/api/`` (slack_sdk's ``base_url``)."""
        return f"http://127.0.0.1:{self._server.server_port}/api/"

    def script(self, method: str, *replies: Reply) -> None:
        """Answer the next calls of ``method`` (``"chat.postMessage"``...) with ``replies`` in
        order, then normally again. Calls of other methods do not use them up."""
        with self._lock:
            self._scripts.setdefault(method, deque()).extend(replies)

    def messages(self, channel: str) -> list[Message]:
        """Top-level messages in ``channel`` (id, ``#name`` or name), oldest first, each with its
        thread in ``replies``: a snapshot (copies). ``KeyError`` for a channel the fake lacks."""
        with self._lock:
            channel_id = self._resolve(channel, names=True)
            if channel_id is None:
                raise KeyError(f"no channel {channel!r}")
            return copy.deepcopy(self._top.get(channel_id, []))

    def post_foreign(self, channel: str, text: str) -> str:
        """Put a message from someone else (not the bot) in ``channel``; its ``ts``."""
        with self._lock:
            channel_id = self._resolve(channel, names=True)
            if channel_id is None:
                raise KeyError(f"no channel {channel!r}")
            message = self._store(channel_id, text, [], None, FOREIGN_USER_ID)
            self.foreign.add(message.ts)
            return message.ts

    # State (called with the lock held).

    def _resolve(self, channel: Any, *, names: bool) -> str | None:
        if not isinstance(channel, str) or not channel:
            return None
        if channel in self.channels:
            return channel
        if names:
            name = channel.removeprefix("#")
            for channel_id, known in self.channels.items():
                if known == name:
                    return channel_id
        return None

    def _next_ts(self) -> str:
        now_us = max(time.time_ns() // 1000, self._last_ts_us + 1)
        self._last_ts_us = now_us
        return f"{now_us // 1_000_000}.{now_us % 1_000_000:06d}"

    def _store(
        self, channel: str, text: str, blocks: list[dict[str, Any]], parent: Message | None, user: str
    ) -> Message:
        ts = self._next_ts()
        message = Message(channel, ts, text, blocks, parent.ts if parent else None, user=user)
        if parent is None:
            self._top.setdefault(channel, []).append(message)
        else:
            parent.replies.append(message)
        self._by_ts[(channel, ts)] = message
        return message

    # Answers.

    def _answer(self, received: Received) -> Reply:
        with self._lock:
            self.requests.append(received)
            url = urlsplit(received.path)
            if not url.path.startswith("/api/"):
                return _json_reply({"ok": False, "error": "unknown_method"}, 404)
            method = url.path[len("/api/"):]
            scripted = self._scripts.get(method)
            delay = 0.0
            if scripted:
                reply = scripted.popleft()
                if reply.status != _NORMAL_STATUS:
                    return reply
                delay = reply.delay
            try:
                answer = self._call(method, received, url.query)
            except _Refused as refused:
                answer = refused.reply
            return replace(answer, delay=answer.delay + delay)

    def _call(self, method: str, received: Received, query: str) -> Reply:
        if method not in METHODS:
            raise _Refused(_json_reply({"ok": False, "error": "unknown_method", "req_method": method}, 404))
        form: dict[str, Any] = dict(parse_qsl(query))
        content_type = received.headers.get("content-type", "").split(";")[0].strip().lower()
        body_error: str | None = None
        if content_type == "application/json":
            try:
                payload = json.loads(received.body or b"{}")
            except ValueError:
                body_error = "invalid_json"
            else:
                if isinstance(payload, dict):
                    form.update(payload)
                else:
                    body_error = "json_not_object"
        elif content_type == "application/x-www-form-urlencoded":
            try:
                form.update(parse_qsl(received.body.decode(), keep_blank_values=True))
            except UnicodeDecodeError:
                body_error = "invalid_form_data"
        elif received.body:
            body_error = "invalid_post_type" if content_type else "missing_post_type"

        authorization = received.headers.get("authorization", "")
        token = authorization[len("Bearer "):] if authorization.startswith("Bearer ") else None
        if token is None and content_type != "application/json":
            token = form.get("token") or None
        if not token:
            raise _refuse("not_authed")
        if token != self.token:
            raise _refuse("invalid_auth")
        if self.token_error:
            raise _refuse(self.token_error)
        if body_error:
            raise _refuse(body_error)

        if method == "auth.test":
            return _json_reply({
                "ok": True, "url": "https://fake.slack.com/", "team": "Fake", "user": "armor-bot",
                "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": BOT_ID,
            })
        if method == "chat.postMessage":
            return self._post(form)
        return self._update(form)

    def _content(self, args: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]] | None]:
        """The text and blocks of a message call, as Slack checks them."""
        text = args.get("text")
        if text is None and isinstance(args.get("markdown_text"), str):
            text = args["markdown_text"]
        if text is not None and not isinstance(text, str):
            raise _refuse("invalid_arguments")
        blocks = args.get("blocks")
        if isinstance(blocks, str):  # form bodies (and some JSON clients) send it JSON-encoded
            try:
                blocks = json.loads(blocks) if blocks else None
            except ValueError as e:
                raise _refuse("invalid_blocks") from e
        if not text and not blocks and not args.get("attachments"):
            raise _refuse("no_text")
        if text is not None and len(text) > MAX_TEXT:
            raise _refuse("msg_too_long")
        if blocks is not None:
            if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
                raise _refuse("invalid_blocks")
            refused = slack_check(json.dumps({"text": text or "-", "blocks": blocks}).encode())
            if refused is not None:
                # slack_check speaks webhook codes; the only one left to meet here is invalid_blocks.
                raise _refuse("invalid_blocks")
        return text, blocks

    def _channel(self, args: dict[str, Any], *, names: bool) -> str:
        channel_id = self._resolve(args.get("channel"), names=names)
        if channel_id is None:
            raise _refuse("channel_not_found")
        if channel_id in self.archived:
            raise _refuse("is_archived")
        return channel_id

    def _post(self, args: dict[str, Any]) -> Reply:
        channel = self._channel(args, names=True)
        if channel not in self.member_of:
            raise _refuse("not_in_channel")
        text, blocks = self._content(args)
        parent: Message | None = None
        thread_ts = args.get("thread_ts")
        if thread_ts not in (None, ""):
            parent = self._by_ts.get((channel, str(thread_ts)))
            if parent is None:
                raise _refuse("message_not_found")
            if parent.thread_ts is not None:  # a reply's ts: the reply goes to its parent's thread
                parent = self._by_ts[(channel, parent.thread_ts)]
        message = self._store(channel, text or "", copy.deepcopy(blocks or []), parent, BOT_USER_ID)
        return _json_reply({"ok": True, "channel": channel, "ts": message.ts,
                            "message": self._message_json(message)})

    def _update(self, args: dict[str, Any]) -> Reply:
        channel = self._channel(args, names=False)
        ts = args.get("ts")
        message = self._by_ts.get((channel, ts)) if isinstance(ts, str) else None
        if message is None:
            raise _refuse("message_not_found")
        if message.ts in self.foreign or message.user != BOT_USER_ID:
            raise _refuse("cant_update_message")
        text, blocks = self._content(args)
        message.history.append({"text": message.text, "blocks": copy.deepcopy(message.blocks)})
        if text is not None:
            message.text = text
        if blocks is not None:
            message.blocks = copy.deepcopy(blocks)
        message.edits += 1
        return _json_reply({"ok": True, "channel": channel, "ts": message.ts, "text": message.text,
                            "message": self._message_json(message)})

    def _message_json(self, message: Message) -> dict[str, Any]:
        """The ``message`` object Slack returns for a message the bot posted or edited."""
        data: dict[str, Any] = {
            "type": "message",
            "text": message.text,
            "user": message.user,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "team": TEAM_ID,
            "ts": message.ts,
            "blocks": copy.deepcopy(message.blocks),
        }
        if message.thread_ts is not None:
            data["thread_ts"] = message.thread_ts
            data["parent_user_id"] = self._by_ts[(message.channel, message.thread_ts)].user
        return data

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return handler_class(lambda received: (self._answer(received), None),
                             lambda: self.latency, "application/json; charset=utf-8")

