"""A webhook receiver on 127.0.0.1 for the tests: it verifies every request's signature, as a
real receiver must, and answers as scripted."""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from armor_notify_webhook import SignatureError, verify_signature

PATH = "/hooks/armor/9f8e7d6c5b4a39281706f5e4"
"""The receiver's secret path: part of the URL, like a Slack webhook's."""


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: str = '{"ok": true}'
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    """Never answer (until the receiver stops)."""
    echo: bool = False
    """Quote the request's path and headers back (in the body and the reason phrase), as a
    careless receiver's error page does: the URL's secret path and the secret headers."""


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    """Names in lower case."""
    body: bytes
    signature_error: str | None
    """Why verification failed, or None when the signature was good."""


class Receiver:
    """Start with ``with Receiver(secret) as receiver:``; script answers with ``receiver.script``."""

    def __init__(self, secret: str, *, tolerance: float = 300) -> None:
        self.secret = secret
        self.tolerance = tolerance
        self.requests: list[Received] = []
        self._script: deque[Answer] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}{PATH}"

    def script(self, *answers: Answer) -> None:
        """Answer the next requests with these, in order; then ``200``."""
        with self._lock:
            self._script.extend(answers)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _answer_for(self, received: Received) -> Answer:
        with self._lock:
            self.requests.append(received)
            if received.path != PATH:
                return Answer(404, "no such hook")
            if received.signature_error is not None:
                return Answer(401, f"bad signature: {received.signature_error}")
            return self._script.popleft() if self._script else Answer()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # TCP_NODELAY: no 40 ms Nagle wait per kept-alive answer

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                try:
                    verify_signature(receiver.secret, body, headers, tolerance=receiver.tolerance)
                    problem = None
                except SignatureError as exc:
                    problem = str(exc)
                answer = receiver._answer_for(Received(self.path, headers, body, problem))
                if answer.hang and receiver._stopping.wait(30):
                    return
                data = answer.body.encode()
                phrase = None
                if answer.echo:
                    data = json.dumps({"error": "refused", "path": self.path,
                                       "headers": headers}).encode()
                    phrase = f"Refused {self.path} {headers.get('authorization', '')}"
                try:
                    self.send_response(answer.status, phrase)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (a timeout test)
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
