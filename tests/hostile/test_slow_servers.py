"""A server that drips its answer (a byte at a time) costs a post no more than its timeout.

urllib3 bounds each socket read; a receiver that sends one byte before every read times out never
trips that bound. HttpClient's timeout bounds the whole post instead: connect, TLS handshake, send,
status line, headers and body. Each server here is raw sockets on 127.0.0.1 and drips for at most a
few seconds, so a test also ends by itself when the bound is missing (it then fails on the time).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trustme
from conftest import run_cli, tls_server_context
from test_http import Server

from armor_notify.http import HttpClient, NetworkError

TIMEOUT = 1.0
MARGIN = 2.0
"""Generous: the contract is "about the timeout", not a benchmark."""
DRIP_INTERVAL = 0.1
DRIP_FOR = 6.0
"""How long a server drips at most: well past TIMEOUT + MARGIN, so the old per-read bound fails."""

STATUS = b"HTTP/1.1 200 OK\r\n"
HEADERS = STATUS + b"Content-Length: 2\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"


def _drip(connection: socket.socket, head: bytes, slow: bytes, stop: threading.Event,
          drip_for: float, speaks_first: bool) -> None:
    """Read the request (unless the server ``speaks_first``, as SMTP does), send ``head`` at
    once, then ``slow`` a byte every DRIP_INTERVAL."""
    connection.settimeout(drip_for)
    try:
        if not speaks_first:
            connection.recv(65536)
        connection.sendall(head)
        started = time.monotonic()
        for byte in slow:
            if stop.wait(DRIP_INTERVAL) or time.monotonic() - started > drip_for:
                return
            connection.sendall(bytes([byte]))
    except OSError:
        return  # the client gave up: what the tests want
    finally:
        connection.close()


@contextmanager
def dripping_server(head: bytes, slow: bytes, *, tls: bool = False,
                    drip_for: float = DRIP_FOR, speaks_first: bool = False) -> Iterator[str]:
    """A one-connection-at-a-time server on 127.0.0.1; yields its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_drip, args=(connection, head, slow, stop, drip_for,
                                                 speaks_first), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{listener.getsockname()[1]}/hook"
    finally:
        stop.set()
        listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        listener.close()
        thread.join(timeout=5)


def _post_and_time(url: str) -> tuple[NetworkError, float]:
    http = HttpClient(url)
    started = time.monotonic()
    with pytest.raises(NetworkError) as caught:
        http.post(url, b"{}", timeout=TIMEOUT)
    elapsed = time.monotonic() - started
    http.close()
    return caught.value, elapsed


@pytest.mark.parametrize(("head", "slow"), [
    pytest.param(b"", STATUS, id="status line"),
    pytest.param(STATUS, HEADERS[len(STATUS):], id="headers"),
    pytest.param(STATUS + b"Content-Length: 100\r\n\r\n", b"x" * 100, id="body"),
])
def test_a_dripped_answer_times_out_within_the_timeout(head: bytes, slow: bytes) -> None:
    with dripping_server(head, slow) as url:
        error, elapsed = _post_and_time(url)
    assert error.kind == "timeout"
    assert "within 1 s" in str(error)
    assert error.outcome("the receiver", TIMEOUT).reason == "no answer from the receiver within 1 s"
    assert elapsed < TIMEOUT + MARGIN


def test_a_dripped_tls_handshake_times_out_within_the_timeout() -> None:
    # A TLS record header announcing 16 KB of handshake, whose bytes then come one at a time.
    record = bytes([0x16, 0x03, 0x03, 0x40, 0x00])
    with dripping_server(record, b"\x00" * 100, tls=True) as url:
        error, elapsed = _post_and_time(url)
    assert error.kind == "timeout"
    assert elapsed < TIMEOUT + MARGIN


def test_an_answer_that_drips_but_ends_in_time_is_read_whole() -> None:
    with dripping_server(STATUS + b"Content-Length: 2\r\n\r\n", b"ok") as url:
        http = HttpClient(url)
        answer = http.post(url, b"{}", timeout=10)
        http.close()
    assert (answer.status, answer.body) == (200, b"ok")


def test_a_kept_alive_connection_outlives_the_deadline_of_the_post_that_opened_it() -> None:
    with Server(body=b"ok") as server:
        http = HttpClient(server.url)
        assert http.post(server.url, b"{}", timeout=0.2).status == 200
        time.sleep(0.5)  # past the first post's deadline, while its connection waits in the pool
        assert http.post(server.url, b"{}", timeout=5).status == 200
        http.close()
    [first, second] = server.seen
    assert first[3] == second[3]  # the same client port: the connection was reused, not cut


def test_a_tls_post_still_verifies_and_reuses_its_connection(
        certificate_authority: trustme.CA, monkeypatch: pytest.MonkeyPatch,
        tmp_path: object) -> None:
    from pathlib import Path

    bundle = Path(str(tmp_path)) / "ca.pem"
    certificate_authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    with Server(body=b"ok", tls=tls_server_context(certificate_authority)) as server:
        http = HttpClient(server.url)
        for _ in range(3):
            assert http.post(server.url, b"{}", timeout=5).body == b"ok"
        http.close()
    assert len({port for *_, port in server.seen}) == 1


def test_a_missing_ca_bundle_is_a_certificate_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")
    with pytest.raises(NetworkError) as caught:
        HttpClient("https://127.0.0.1:9").post("https://127.0.0.1:9/x", b"{}", timeout=5)
    assert caught.value.kind == "certificate"
    assert "/nonexistent/ca.pem" in str(caught.value)


def test_finished_posts_do_not_pile_up_under_long_timeouts() -> None:
    from armor_notify.http import _WATCHDOG

    for _ in range(20_000):  # 10-minute timeouts at a high rate: each waits 600 s in the heap
        _WATCHDOG.finish(_WATCHDOG.start(600))
    assert len(_WATCHDOG._heap) <= 4097


@pytest.mark.slow
def test_send_of_one_alert_to_a_dripping_receiver_ends_with_its_wait(tmp_path: Path) -> None:
    # The case: one alert, timeout 2, --wait 5, a receiver dripping its status line.
    # A lone delivery runs on the calling thread, where only HttpClient's own bound applies.
    with dripping_server(b"", b"H" * 1000, drip_for=40) as url:
        config = tmp_path / "armor-notify.yaml"
        config.write_text(
            "version: 1\n"
            "destinations:\n"
            "  pd: {type: pagerduty, integration_key: a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6,\n"
            f"       url: '{url.removesuffix('/hook')}', timeout: 2, rate_limit: none}}\n"
            "rules:\n"
            "  - {name: all, event: schema_change, destinations: [pd]}\n"
        )
        alert = tmp_path / "alert.json"
        alert.write_text(json.dumps({
            "id": "alert_drip", "event_type": "schema_change", "severity": "critical",
            "title": "t", "asset": {"id": "a", "name": "db.s.t"}}))
        # run_cli's own timeout (30 s) ends the test if the post is not bounded.
        result = run_cli("send", str(alert), "--config", str(config), "--wait", "5", "--json",
                         timeout=30)
    assert result.returncode == 3, result.stdout + result.stderr  # still queued for a retry
    assert "within 2 s" in result.stdout


def test_an_smtp_server_dripping_its_greeting_times_out_within_the_timeout() -> None:
    from armor_notify_plugins.email import EmailConfig, EmailSender
    from test_email import notification

    with dripping_server(b"", b"220 " + b"x" * 200 + b"\r\n", speaks_first=True) as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        sender = EmailSender(EmailConfig.model_validate({
            "host": "127.0.0.1", "port": port, "security": "none", "timeout": TIMEOUT,
            "from": "alerts@example.com", "to": ["a@example.com"]}))
        started = time.monotonic()
        outcome = sender.send(notification(timeout=TIMEOUT))
        elapsed = time.monotonic() - started
    assert outcome.status == "retry"
    assert outcome.reason == f"no answer from 127.0.0.1:{port} within 1 s"
    assert elapsed < TIMEOUT + MARGIN
