"""A Slack incoming-webhook receiver on loopback that answers the way Slack documents.

Success is ``200`` with the body ``ok``; errors are a plain-text body holding the error code, with
the statuses from Slack's changelog (2016-05-17) and the ones observed in public reports (see
``docs/reference/protocols.md`` §2). Like Slack, it checks what it receives: a body that is not a
JSON object is ``invalid_payload``, a message without ``text`` or blocks is
``missing_text_or_fallback_or_attachments``, and blocks that Slack's own Block Kit models
(slack_sdk) reject are ``invalid_blocks``.

Tests script the answers (``fake.script(error("channel_is_archived"))``), add latency, and read
every request back from ``fake.requests``.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import quote

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block

WEBHOOK_PATH = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"

ERROR_STATUS: dict[str, int] = {
    # Documented (Slack changelog 2016-05-17).
    "invalid_payload": 400,
    "user_not_found": 400,
    "action_prohibited": 403,
    "channel_not_found": 404,
    "channel_is_archived": 410,
    "rollup_error": 500,
    # Observed in public issue threads.
    "invalid_token": 403,
    "no_service": 404,
    "missing_text_or_fallback_or_attachments": 400,
    "invalid_blocks": 400,
    "invalid_blocks_format": 400,
    # Listed on the webhooks page without a status: the 4xx that fits each meaning.
    "no_active_hooks": 403,
    "no_service_id": 404,
    "no_team": 404,
    "team_disabled": 403,
    "no_text": 400,
    "too_many_attachments": 400,
    "posting_to_general_channel_denied": 403,
}
"""Every error code Slack documents for incoming webhooks, with the HTTP status it comes with."""


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering (on top of the server's ``latency``)."""


OK = Reply()


def error(code: str, status: int | None = None) -> Reply:
    """Slack's answer for ``code``: its documented status and the code as a plain-text body."""
    return Reply(status if status is not None else ERROR_STATUS[code], code)


def rate_limited(retry_after: str | None = "1", body: str = "") -> Reply:
    """``429`` with ``Retry-After`` (slack_sdk's own fake sends an empty body and ``1``)."""
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return Reply(429, body, headers)


@dataclass(frozen=True)
class Received:
    """One request as the fake saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int
    """The client's port: requests sharing it came over one kept-alive connection."""

    def json(self) -> Any:
        return json.loads(self.body)


def slack_check(body: bytes) -> Reply | None:
    """What Slack says about a request body before posting it, or ``None`` when it is acceptable."""
    try:
        payload = json.loads(body)
    except ValueError:
        return error("invalid_payload")
    if not isinstance(payload, dict):
        return error("invalid_payload")
    blocks = payload.get("blocks")
    if not payload.get("text") and not blocks and not payload.get("attachments"):
        return error("missing_text_or_fallback_or_attachments")
    if blocks is not None:
        if not isinstance(blocks, list) or len(blocks) > 50:
            return error("invalid_blocks")
        try:
            for raw in blocks:
                block = Block.parse(raw)
                if block is None:
                    return error("invalid_blocks")
                block.validate_json()
        except (SlackObjectFormationError, KeyError, TypeError, ValueError):
            return error("invalid_blocks")
    return None


class Serving:
    """Starts and stops a loopback server (``_server``) served on a thread (``_thread``); a
    context manager."""

    _server: ThreadingHTTPServer
    _thread: threading.Thread

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FakeSlack(Serving):
    """A threaded HTTP server on 127.0.0.1 speaking Slack's incoming-webhook protocol."""

    def __init__(
        self,
        path: str = WEBHOOK_PATH,
        *,
        latency: float = 0.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.path = path
        self.latency = latency
        self.default = OK
        self.echo_secret = False
        """Refuse every request with ``403 invalid_token`` quoting the webhook URL (as is,
        percent-encoded, JSON-escaped), its path and its token, in the body and the reason
        phrase: what a careless proxy or an error page does with the secret."""
        self.requests: list[Received] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._scheme = "http"
        if tls is not None:
            # Handshakes happen on accept; a client that refuses the certificate is just dropped.
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            self._scheme = "https"
        # A short poll keeps stop() fast: shutdown() waits for the serving loop's next poll.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        """The webhook URL (plain http unless ``tls``: loopback hosts may skip TLS)."""
        return f"{self._scheme}://127.0.0.1:{self._server.server_port}{self.path}"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies`` in order, then with ``default`` again."""
        with self._lock:
            self._script.extend(replies)

    def _next_reply(self, received: Received) -> Reply:
        with self._lock:
            self.requests.append(received)
            if received.method != "POST":
                return Reply(405, "invalid_payload")
            if received.path != self.path:
                return error("no_service")
            if self._script:
                return self._script.popleft()
        return slack_check(received.body) or self.default

    def _echo(self, path: str) -> tuple[Reply, str]:
        url = f"{self._scheme}://127.0.0.1:{self._server.server_port}{path}"
        token = path.rsplit("/", 1)[-1]
        body = (f"invalid_token: the webhook {url} ({quote(url, safe='')}) was revoked; "
                f"details: {json.dumps({'url': url, 'path': path}).replace('/', chr(92) + '/')} "
                f"token={token}")
        return Reply(403, body), f"Forbidden {path} {token}"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        def answer(received: Received) -> tuple[Reply, str | None]:
            reply = self._next_reply(received)
            return self._echo(received.path) if self.echo_secret else (reply, None)

        return handler_class(answer, lambda: self.latency, "text/html")


def handler_class(answer: Callable[[Received], tuple[Reply, str | None]],
                  latency: Callable[[], float], content_type: str) -> type[BaseHTTPRequestHandler]:
    """A request handler that answers each request as ``answer`` says (the reply, and a reason
    phrase or ``None``), after ``latency()`` and the reply's own delay: HTTP/1.1 keep-alive, as
    Slack does, so connection reuse is exercised too."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # TCP_NODELAY: no 40 ms Nagle wait per kept-alive answer

        def do_POST(self) -> None:
            self._answer()

        def do_GET(self) -> None:
            self._answer()

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            received = Received(self.command, self.path,
                                {k.lower(): v for k, v in self.headers.items()}, body,
                                self.client_address[1])
            reply, phrase = answer(received)
            wait = latency() + reply.delay
            if wait:
                time.sleep(wait)
            data = reply.body.encode()
            try:
                self.send_response(reply.status, phrase)
                for name, value in {"Content-Type": content_type, **reply.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up (a timeout test): nothing to answer
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
