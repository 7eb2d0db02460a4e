"""A lean loopback receiver that answers as PagerDuty's Events API v2 and Slack webhooks do.

The test fakes in ``tests/`` check every body against PagerDuty's OpenAPI schema and Slack's Block
Kit models, which costs more CPU per request than the client being measured: a receiver that is
itself the bottleneck would flatten every ratio. This one runs in its own process (so it has the
other core, not the client's GIL) on asyncio, keeps connections alive, and answers:

* ``POST /v2/enqueue`` (and ``/v2/change/enqueue``): ``202 {"status":"success","message":"Event
  processed","dedup_key":...}`` echoing the event's dedup key (or a new one), after the same cheap
  checks PagerDuty makes first (JSON object, 32-character ``routing_key``, ``event_action``); a
  failed check is PagerDuty's ``400 {"status":"invalid event",...,"errors":[...]}``.
* ``POST /services/...``: Slack's ``200 ok`` (``text/html``), ``400 invalid_payload`` when the body
  is not a JSON object.
* ``GET /_stats``: requests, 2xx answers, refusals and connections seen so far, as JSON.

Every answer can be delayed by ``--latency`` seconds (timers on the event loop, so any number of
requests wait at once). Start it with :func:`start` from another script::

    with start(latency=0.05) as rx:
        rx.url            # http://127.0.0.1:PORT
        rx.stats()        # {"requests": ..., "ok": ..., "refused": ..., "connections": ...}

or by hand: ``python bench/loopback.py --port 8099 --latency 0.05``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found"}
_ACTIONS = ("trigger", "acknowledge", "resolve")


class Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.ok = 0
        self.refused = 0
        self.connections = 0

    def as_json(self) -> bytes:
        return json.dumps(vars(self)).encode()


def pagerduty_answer(body: bytes) -> tuple[int, bytes]:
    """PagerDuty's answer to an event body (only the checks it makes before accepting one)."""
    try:
        event = json.loads(body)
    except ValueError:
        return 400, json.dumps({"status": "Unrecognized object", "message": "Event object is "
                                "invalid", "errors": ["JSON parse error"]}).encode()
    errors = []
    if not isinstance(event, dict):
        event = {}
        errors.append("JSON parse error")
    key = event.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    if "event_action" in event and event["event_action"] not in _ACTIONS:
        errors.append("'event_action' is invalid (must be one of the following: 'trigger', "
                      "'acknowledge' or 'resolve')")
    if errors:
        return 400, json.dumps({"status": "invalid event", "message": "Event object is invalid",
                                "errors": errors}).encode()
    dedup = event.get("dedup_key") or uuid.uuid4().hex
    return 202, json.dumps({"status": "success", "message": "Event processed",
                            "dedup_key": dedup}).encode()


def slack_answer(body: bytes) -> tuple[int, bytes]:
    try:
        ok = isinstance(json.loads(body), dict)
    except ValueError:
        ok = False
    return (200, b"ok") if ok else (400, b"invalid_payload")


class _Http(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining; only what requests and urllib send."""

    def __init__(self, stats: Stats, latency: float) -> None:
        self.stats = stats
        self.latency = latency
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.stats.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            length = 0
            close = False
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            method, path = head[0].split(" ")[:2]
            self._answer(method, path, body, close)

    def _answer(self, method: str, path: str, body: bytes, close: bool) -> None:
        content_type = "application/json"
        if method == "GET" and path == "/_stats":
            self._write(200, self.stats.as_json(), content_type, close)
            return
        self.stats.requests += 1
        if method == "POST" and path.startswith("/v2/"):
            status, reply = pagerduty_answer(body)
        elif method == "POST" and path.startswith("/services/"):
            status, reply = slack_answer(body)
            content_type = "text/html"
        else:
            status, reply = 404, b'{"status":"not found"}'
        if 200 <= status < 300:
            self.stats.ok += 1
        else:
            self.stats.refused += 1
        if self.latency > 0:
            asyncio.get_running_loop().call_later(self.latency, self._write, status, reply,
                                                  content_type, close)
        else:
            self._write(status, reply, content_type, close)

    def _write(self, status: int, body: bytes, content_type: str, close: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n")
        self.transport.write(head.encode() + body)
        if close:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(port: int, latency: float) -> None:
    stats = Stats()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Http(stats, latency), "127.0.0.1", port,
                                      backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


@dataclass
class Receiver:
    """A receiver running in a child process."""

    process: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_stats", timeout=10) as response:
            data: dict[str, Any] = json.loads(response.read())
        return data


@contextlib.contextmanager
def start(latency: float = 0.0) -> Iterator[Receiver]:
    """Start a receiver process on a free loopback port; stop it on exit."""
    process = subprocess.Popen([sys.executable, __file__, "--latency", str(latency)],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.strip():
            raise RuntimeError("the loopback receiver did not start")
        yield Receiver(process, int(line))
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.latency))


if __name__ == "__main__":
    main()
