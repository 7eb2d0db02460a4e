"""A loopback PagerDuty Events API v2 receiver that answers as PagerDuty does.

It speaks real HTTP (optionally HTTPS) on 127.0.0.1, records every request (path, headers, raw
bytes, parsed JSON) and checks every body against the request-body schema of PagerDuty's own
OpenAPI description, so tests can assert that each event sent is schema-valid.

Answers, as documented (reference/protocols.md §1):

* 202 ``{"status":"success","message":"Event processed","dedup_key":...}``
* 400 ``{"status":"invalid event","message":"Event object is invalid","errors":[...]}`` with
  PagerDuty's exact error strings, typo included (``maiximum``)
* 400 ``{"status":"Unrecognized object",...,"errors":["JSON parse error"]}`` for unparseable JSON
* scripted 429 / 5xx / anything else, optional latency, and a set of unknown or revoked keys that
  are refused like an invalid routing key.

Strings PagerDuty does not document (missing ``event_action``, unknown key, oversize event) are
this fake's own, written in PagerDuty's style and marked below.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import socket
import ssl
import threading
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from jsonschema import Draft4Validator, FormatChecker

ALERT_PATH = "/v2/enqueue"
CHANGE_PATH = "/v2/change/enqueue"
# "512 KB" is ambiguous (1000 or 1024): enforce the stricter reading.
MAX_EVENT_BYTES = 512_000
MAX_SUMMARY_CHARS = 1024
SEVERITIES = ("critical", "warning", "error", "info")

# Documented or observed PagerDuty error strings (protocols.md §1), verbatim.
ROUTING_KEY_LENGTH = "Length of 'routing_key' is incorrect (should be 32 characters)"
ROUTING_KEY_CHARACTERS = "'routing_key' cannot contain non-alphanumeric characters."
SOURCE_MISSING = "'payload.source' is missing or blank"
SEVERITY_MISSING = "'payload.severity' is missing or blank"
SEVERITY_INVALID = (
    "'payload.severity' is invalid (must be one of the following: "
    "'critical', 'warning', 'error' or 'info')"
)
SUMMARY_TOO_LONG = "'summary' is too long (maiximum is 1024 characters)"
JSON_PARSE_ERROR = "JSON parse error"
# Undocumented: this fake's wording, by analogy with the documented strings. "Invalid routing key"
# is the seed's name for a deleted integration's key.
INVALID_ROUTING_KEY = "Invalid routing key"
ROUTING_KEY_MISSING = "'routing_key' is missing or blank"
EVENT_ACTION_MISSING = "'event_action' is missing or blank"
EVENT_ACTION_INVALID = (
    "'event_action' is invalid (must be one of the following: 'trigger', 'acknowledge' or 'resolve')"
)
DEDUP_KEY_MISSING = "'dedup_key' is missing or blank"
DEDUP_KEY_TOO_LONG = "'dedup_key' is too long (maiximum is 255 characters)"
SUMMARY_MISSING = "'payload.summary' is missing or blank"
PAYLOAD_MISSING = "'payload' is missing or blank"
EVENT_TOO_LARGE = "Event object is too large (maximum is 512 KB)"

_SCHEMA_CANDIDATES = (
    Path(__file__).parent / "data" / "pagerduty-events-v2.openapi.json",
    Path("/work/shared/reference/pagerduty-events-v2.openapi.json"),
)

# RFC 3339 date-time, the meaning of OpenAPI's "format: date-time" (jsonschema checks it only
# when an optional package is installed, so the check is spelled out here).
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)


def openapi_document() -> dict[str, Any]:
    """PagerDuty's OpenAPI description of Events API v2."""
    override = os.environ.get("ARMOR_NOTIFY_PAGERDUTY_OPENAPI")
    for path in ((Path(override),) if override else ()) + _SCHEMA_CANDIDATES:
        if path.is_file():
            document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return document
    raise FileNotFoundError(
        "PagerDuty's OpenAPI description (pagerduty-events-v2.openapi.json) was not found in "
        + ", ".join(str(p) for p in _SCHEMA_CANDIDATES)
        + "; set ARMOR_NOTIFY_PAGERDUTY_OPENAPI to its path"
    )


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str) or not _RFC3339.match(value):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:  # e.g. month 13
        return False
    return True


def _is_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _format_checker() -> FormatChecker:
    checker = FormatChecker()
    checker.checks("date-time")(_is_date_time)
    checker.checks("url")(_is_url)
    return checker


def _forbid_undocumented_properties(schema: Any) -> Any:
    """A copy in which every object with listed properties accepts only those properties."""
    if isinstance(schema, dict):
        strict = {key: _forbid_undocumented_properties(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            strict["additionalProperties"] = False
        return strict
    if isinstance(schema, list):
        return [_forbid_undocumented_properties(item) for item in schema]
    return schema


@cache
def request_validator(path: str, *, strict: bool = False) -> Draft4Validator:
    """A validator for the request body PagerDuty's OpenAPI gives for ``/v2/enqueue`` or
    ``/v2/change/enqueue``. ``strict`` also refuses properties the schema does not list."""
    document = openapi_document()
    operation = path.removeprefix("/v2")
    body = document["paths"][operation]["post"]["requestBody"]["content"]["application/json"]
    schema = {**body["schema"], "components": copy.deepcopy(document["components"])}
    if strict:
        schema = _forbid_undocumented_properties(schema)
    return Draft4Validator(schema, format_checker=_format_checker())


def schema_errors(path: str, body: Any, *, strict: bool = True) -> list[str]:
    """Every way ``body`` breaks the OpenAPI request schema of ``path`` (empty when valid)."""
    validator = request_validator(path, strict=strict)
    return sorted(
        f"{'/'.join(str(p) for p in error.absolute_path) or '(body)'}: {error.message}"
        for error in validator.iter_errors(body)
    )


def pagerduty_errors(path: str, event: Mapping[str, Any]) -> list[str]:
    """The ``errors`` PagerDuty answers for an event object (empty when it would accept it)."""
    errors: list[str] = []
    routing_key = event.get("routing_key")
    if not isinstance(routing_key, str) or not routing_key:
        errors.append(ROUTING_KEY_MISSING)
    else:
        if len(routing_key) != 32:
            errors.append(ROUTING_KEY_LENGTH)
        if not (routing_key.isascii() and routing_key.isalnum()):
            errors.append(ROUTING_KEY_CHARACTERS)
    payload = event.get("payload")
    if path == CHANGE_PATH:
        if not isinstance(payload, dict):
            errors.append(PAYLOAD_MISSING)
        else:
            errors.extend(_summary_errors(payload))
        return errors
    action = event.get("event_action")
    dedup_key = event.get("dedup_key")
    if not isinstance(action, str) or not action:
        errors.append(EVENT_ACTION_MISSING)
    elif action not in ("trigger", "acknowledge", "resolve"):
        errors.append(EVENT_ACTION_INVALID)
    elif action != "trigger" and (not isinstance(dedup_key, str) or not dedup_key):
        errors.append(DEDUP_KEY_MISSING)
    if isinstance(dedup_key, str) and len(dedup_key) > 255:
        errors.append(DEDUP_KEY_TOO_LONG)
    if action == "trigger":
        if not isinstance(payload, dict):
            errors.append(PAYLOAD_MISSING)
        else:
            errors.extend(_summary_errors(payload))
            source = payload.get("source")
            if not isinstance(source, str) or not source.strip():
                errors.append(SOURCE_MISSING)
            severity = payload.get("severity")
            if severity is None or severity == "":
                errors.append(SEVERITY_MISSING)
            elif severity not in SEVERITIES:
                errors.append(SEVERITY_INVALID)
    return errors


def _summary_errors(payload: Mapping[str, Any]) -> list[str]:
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        return [SUMMARY_MISSING]
    if len(summary) > MAX_SUMMARY_CHARS:
        return [SUMMARY_TOO_LONG]
    return []


@dataclass(frozen=True)
class FakeResponse:
    """An answer the fake gives instead of judging the request itself."""

    status: int
    body: bytes | Mapping[str, Any] = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def too_many_requests(cls, retry_after: str | None = None) -> FakeResponse:
        # PagerDuty documents neither a 429 body nor Retry-After; send one only when asked.
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return cls(429, b"", headers)

    @classmethod
    def server_error(cls, status: int = 500, retry_after: str | None = None) -> FakeResponse:
        # The OpenAPI "Error" shape; the wording is this fake's.
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return cls(status, {"status": "error", "message": "Internal Server Error"}, headers)

    @classmethod
    def accepted(cls, dedup_key: str) -> FakeResponse:
        return cls(202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key})

    @classmethod
    def invalid_event(cls, *errors: str) -> FakeResponse:
        return cls(400, _invalid_event(list(errors)))


def _invalid_event(errors: list[str]) -> dict[str, Any]:
    return {"status": "invalid event", "message": "Event object is invalid", "errors": errors}


UNRECOGNIZED_OBJECT: Mapping[str, Any] = {
    "status": "Unrecognized object",
    "message": "Event object format is unrecognized",
    "errors": [JSON_PARSE_ERROR],
}


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    headers: Mapping[str, str]
    """Header names in lower case."""
    raw: bytes
    body: Any
    """The parsed JSON, or ``None`` when the body was not JSON."""
    schema_errors: list[str]
    """Breaks of PagerDuty's OpenAPI request schema, undocumented properties included."""
    status: int = 0
    """What the fake answered."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakePagerDuty

    def finish_request(self, request: Any, client_address: Any) -> None:
        # TLS handshakes happen here, in the connection's own thread, so one failing client
        # cannot stall the accept loop.
        if self.fake.ssl_context is not None:
            request = self.fake.ssl_context.wrap_socket(request, server_side=True)
        with self.fake._lock:
            self.fake._connections.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            with self.fake._lock:
                self.fake._connections.discard(request)
            # The TLS wrapper owns the connection now; the server only closes the original.
            if isinstance(request, ssl.SSLSocket):
                request.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that give up (timeouts, refused certificates) are part of the tests.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY: no 40 ms Nagle wait per kept-alive answer
    server: _Server
    timeout = 5

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        fake = self.server.fake
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = urlsplit(self.path).path
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        errors = schema_errors(path, body) if path in (ALERT_PATH, CHANGE_PATH) else []
        if fake.latency and fake._stopping.wait(fake.latency):
            return
        answer = fake._next_scripted() or fake._judge(path, raw, body)
        fake._record(
            ReceivedRequest(
                self.command,
                path,
                {name.lower(): value for name, value in self.headers.items()},
                raw,
                body,
                errors,
                answer.status,
            )
        )
        payload = answer.body
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(answer.status)
            if not isinstance(payload, bytes):
                self.send_header("Content-Type", "application/json")
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True


class FakePagerDuty:
    """PagerDuty's Events API v2 on 127.0.0.1. Use as a context manager.

    ``url`` is the Events API base (``<url>/v2/enqueue``, ``<url>/v2/change/enqueue``).
    """

    def __init__(self, *, latency: float = 0.0, ssl_context: ssl.SSLContext | None = None):
        self.latency = latency
        """Seconds to wait before answering each request."""
        self.ssl_context = ssl_context
        self.revoked_keys: set[str] = set()
        """Well-formed keys PagerDuty no longer knows (a deleted integration)."""
        self.echo_key: str | None = None
        """``"accepted"``: answer 202 with the integration key as ``dedup_key`` and in
        ``message``; ``"invalid"``: answer 400 whose message and ``errors`` quote the key (as is
        and percent-encoded) -- what a proxy or a careless receiver does with the secret."""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._script: deque[FakeResponse] = deque()
        self._received: list[ReceivedRequest] = []
        self._connections: set[socket.socket] = set()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> FakePagerDuty:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakePagerDuty:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what tests arrange ----------------------------------------------------------------------
    def script(self, *responses: FakeResponse) -> None:
        """Answer the next requests with these responses, in order, then judge again."""
        with self._lock:
            self._script.extend(responses)

    # -- what tests inspect ----------------------------------------------------------------------
    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._received)

    @property
    def events(self) -> list[Any]:
        """The JSON bodies received, in order."""
        return [r.body for r in self.requests]

    def __iter__(self) -> Iterator[ReceivedRequest]:
        return iter(self.requests)

    # -- answering -------------------------------------------------------------------------------
    def _record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self._received.append(request)

    def _next_scripted(self) -> FakeResponse | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    def _judge(self, path: str, raw: bytes, body: Any) -> FakeResponse:
        if path not in (ALERT_PATH, CHANGE_PATH):
            return FakeResponse(404, {"status": "Not Found", "message": "Not Found"})
        if not isinstance(body, dict):
            return FakeResponse(400, UNRECOGNIZED_OBJECT)
        if len(raw) > MAX_EVENT_BYTES:
            return FakeResponse.invalid_event(EVENT_TOO_LARGE)
        errors = pagerduty_errors(path, body)
        if not errors:
            # What the documented checks miss, the schema still refuses (in jsonschema's words).
            errors = schema_errors(path, body, strict=False)
        if errors:
            return FakeResponse.invalid_event(*errors)
        if body["routing_key"] in self.revoked_keys:
            return FakeResponse.invalid_event(INVALID_ROUTING_KEY)
        key = body["routing_key"]
        if self.echo_key == "accepted":
            return FakeResponse(202, {"status": "success", "dedup_key": key,
                                      "message": f"Event processed for routing key {key}"})
        if self.echo_key == "invalid":
            return FakeResponse(400, {"status": "invalid event",
                                      "message": f"Event object is invalid for {key}",
                                      "errors": [f"{INVALID_ROUTING_KEY}: {key}",
                                                 f"routing_key={quote(key)}"]})
        if path == CHANGE_PATH:
            return FakeResponse(202, {"status": "success", "message": "Event processed"})
        dedup_key = body.get("dedup_key") or uuid.uuid4().hex
        return FakeResponse.accepted(dedup_key)
