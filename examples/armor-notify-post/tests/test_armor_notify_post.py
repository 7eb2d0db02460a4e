"""armor-notify-post passes armor-notify's destination conformance suite, over the wire."""

import contextlib
import threading
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import armor_notify_post

from armor_notify import DestinationType
from armor_notify.testing import DestinationConformance, Reply, build_notifier

URL_PATH = "/hooks/0a1b2c3d4e5f60718293"  # the receiver's secret path


@contextlib.contextmanager
def loopback_receiver(replies: Sequence[Reply]) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 answering successive POSTs as ``replies`` say, then 200."""
    script, stopping = deque(replies), threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            reply = script.popleft() if script else Reply("delivered")
            if reply.kind == "hang":
                stopping.wait(30)
                return
            # 410 Gone: refused for good; 429 asks for a delay; 503: try again later.
            status = {"delivered": 200, "permanent": 410}.get(reply.kind, 503)
            self.send_response(429 if reply.retry_after is not None else status)
            if reply.retry_after is not None:
                self.send_header("Retry-After", str(reply.retry_after))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}{URL_PATH}"
    finally:
        stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


class TestPostConformance(DestinationConformance):
    def destination_type(self) -> DestinationType:
        registered: list[DestinationType] = []  # what the plugin's hook registers
        armor_notify_post.register_destination_types(registered.append)
        return registered[0]

    def valid_config(self) -> dict[str, Any]:
        return {"url": "https://hooks.example.com" + URL_PATH}

    def invalid_configs(self) -> Sequence[tuple[dict[str, Any], str]]:
        return [({"url": "http://hooks.example.com" + URL_PATH}, "url"),  # https only
                ({}, "url")]

    def secrets(self, config: Mapping[str, Any]) -> list[str]:
        return [config["url"]] if config.get("url") else []

    @contextlib.contextmanager
    def receiver(self, replies: Sequence[Reply]) -> Iterator[dict[str, Any]]:
        with loopback_receiver(replies) as url:
            yield {"url": url}


def test_the_hook_registers_the_post_type() -> None:
    config = {"version": 1, "destinations": {"hook": {"type": "post", "url": "https://example.com/x"}},
              "rules": [{"name": "All", "event": "schema_change", "destinations": ["hook"]}]}
    with build_notifier(config, armor_notify_post) as notifier:
        assert notifier.config.destinations["hook"].config.describe() == "POST to https://example.com/…"
