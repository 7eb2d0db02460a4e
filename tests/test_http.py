"""armor_notify.http: posts over kept-alive connections, proxies and CA bundles from the
environment as requests reads them, and network failures in plain words (over loopback)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import certifi
import pytest
import trustme
from conftest import tls_server_context

from armor_notify import Outcome
from armor_notify.http import CERTIFICATE_HINT, HttpClient, NetworkError, ca_bundle, proxy_for

PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy",
              "NO_PROXY", "no_proxy")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*PROXY_VARS, "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


class Server:
    """An HTTP/1.1 server on 127.0.0.1 recording each request's line, headers, body and client
    port; answers ``status`` (a redirect adds ``location``) with ``headers``, or closes without
    answering."""

    def __init__(self, *, status: int = 200, body: bytes = b"ok", delay: float = 0.0,
                 hang_up: bool = False, tls: ssl.SSLContext | None = None,
                 location: str = "http://127.0.0.1:1/elsewhere",
                 headers: dict[str, str] | None = None) -> None:
        self.seen: list[tuple[str, dict[str, str], bytes, int]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # TCP_NODELAY: no 40 ms Nagle wait per kept-alive answer

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.seen.append((self.requestline, {k.lower(): v for k, v in
                                                       self.headers.items()},
                                    data, self.client_address[1]))
                if hang_up:
                    self.close_connection = True
                    return
                if delay:
                    threading.Event().wait(delay)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", location)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Retry-After", "7")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    with Server(body=b'{"status":"success"}') as s:
        yield s


def test_a_post_sends_the_body_and_headers_and_reads_the_whole_answer(server: Server) -> None:
    client = HttpClient(server.url, {"User-Agent": "armor-notify/test"})
    answer = client.post(f"{server.url}/v2/enqueue", b'{"a":1}', timeout=5,
                         headers={"X-Extra": "1"})
    client.close()
    assert (answer.status, answer.reason, answer.body) == (200, "OK", b'{"status":"success"}')
    assert answer.headers["retry-after"] == "7"  # case-insensitive
    assert answer.json_object() == {"status": "success"}
    [(line, headers, body, _)] = server.seen
    assert line == "POST /v2/enqueue HTTP/1.1"
    assert (headers["user-agent"], headers["x-extra"], body) == ("armor-notify/test", "1",
                                                                b'{"a":1}')


def test_connections_are_kept_alive_and_shared_by_threads(server: Server) -> None:
    client = HttpClient(server.url)

    def post_three() -> None:
        for _ in range(3):
            assert client.post(server.url, b"{}", timeout=5).status == 200

    threads = [threading.Thread(target=post_three) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    post_three()  # the calling thread reuses a connection the others opened
    client.close()
    assert len(server.seen) == 15
    assert len({port for *_, port in server.seen}) <= 4


def test_redirects_are_answers_not_followed() -> None:
    with Server(status=302, body=b"") as s:
        client = HttpClient(s.url)
        answer = client.post(s.url, b"{}", timeout=5)
        client.close()
    assert answer.status == 302 and len(s.seen) == 1


def test_a_redirect_with_a_location_that_is_no_url_is_still_an_answer() -> None:
    with Server(status=302, body=b"", location="http://[not-a-url") as s:
        client = HttpClient(s.url)
        answer = client.post(s.url, b"{}", timeout=5)
        client.close()
    assert (answer.status, answer.headers["location"]) == (302, "http://[not-a-url")


def test_only_the_clients_headers_go_out_and_no_cookie_is_kept() -> None:
    # requests' session defaults (its User-Agent, Accept, gzip) and cookie jar stay out: a
    # service sees what it saw from the urllib3 client before, and no state rides from post to
    # post.
    with Server(headers={"Set-Cookie": "session=s3cr3t; Path=/"}) as s:
        client = HttpClient(s.url, {"User-Agent": "armor-notify/test"})
        for _ in range(2):
            client.post(f"{s.url}/hook", b"{}", timeout=5, headers={"Content-Type": "x/y"})
        client.close()
    first, second = (headers for _, headers, _, _ in s.seen)
    assert first == second
    assert set(second) == {"host", "accept-encoding", "content-length", "user-agent",
                           "content-type"}
    assert (second["user-agent"], second["accept-encoding"]) == ("armor-notify/test", "identity")


def test_the_environment_is_read_when_the_client_is_made_not_at_each_post(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    client = HttpClient(server.url)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # would refuse every post
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")
    assert client.post(server.url, b"{}", timeout=5).status == 200
    client.close()
    assert len(server.seen) == 1


def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(NetworkError) as caught:
        HttpClient(f"http://127.0.0.1:{port}").post(f"http://127.0.0.1:{port}/secret-path",
                                                    b"{}", timeout=5)
    assert caught.value.kind == "connect"
    assert str(caught.value).endswith("Connection refused")
    assert "secret-path" not in str(caught.value) and "object at 0x" not in str(caught.value)


def test_no_answer_in_time_is_a_timeout() -> None:
    with Server(delay=1.0) as s, pytest.raises(NetworkError) as caught:
        HttpClient(s.url).post(s.url, b"{}", timeout=0.2)
    assert caught.value.kind == "timeout"
    assert "timed out" in str(caught.value)


def test_a_hang_up_without_an_answer_is_a_connect_error_and_not_retried() -> None:
    with Server(hang_up=True) as s, pytest.raises(NetworkError) as caught:
        HttpClient(s.url).post(s.url, b"{}", timeout=5)
    assert caught.value.kind == "connect"
    assert len(s.seen) == 1  # posted once: retries are the dispatcher's


def test_a_malformed_url_is_another_error() -> None:
    with pytest.raises(NetworkError) as caught:
        HttpClient("http://127.0.0.1").post("http://127.0.0.1:notaport/x", b"{}", timeout=5)
    assert caught.value.kind == "other"


@pytest.mark.parametrize(("url", "words"), [
    ("http:///secret-path", "No host supplied"),
    ("ftp://127.0.0.1/secret-path", "Not supported URL scheme ftp"),
])
def test_a_url_that_cannot_be_posted_to_is_named_without_its_path(url: str, words: str) -> None:
    with pytest.raises(NetworkError) as caught:
        HttpClient("http://127.0.0.1").post(url, b"{}", timeout=5)
    assert caught.value.kind == "other"
    assert words in str(caught.value) and "secret-path" not in str(caught.value)


@pytest.fixture
def tls_server(certificate_authority: trustme.CA) -> Iterator[Server]:
    with Server(tls=tls_server_context(certificate_authority)) as s:
        yield s


def test_an_untrusted_certificate_is_a_certificate_error(tls_server: Server) -> None:
    with pytest.raises(NetworkError) as caught:
        HttpClient(tls_server.url).post(tls_server.url, b"{}", timeout=5)
    assert caught.value.kind == "certificate"
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert tls_server.seen == []


def test_a_ca_bundle_from_the_environment_is_trusted(
        tls_server: Server, certificate_authority: trustme.CA, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    certificate_authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    client = HttpClient(tls_server.url)
    assert client.ca_bundle == str(bundle)
    assert client.post(tls_server.url, b"{}", timeout=5).status == 200
    client.close()


def test_tls_to_a_plain_http_server_is_a_tls_error(server: Server) -> None:
    https = server.url.replace("http://", "https://")
    with pytest.raises(NetworkError) as caught:
        HttpClient(https).post(https, b"{}", timeout=5)
    assert caught.value.kind == "tls"


def test_the_ca_bundle_is_certifi_unless_the_environment_names_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert ca_bundle() == certifi.where()
    monkeypatch.setenv("CURL_CA_BUNDLE", "/curl.pem")
    assert ca_bundle() == "/curl.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/requests.pem")
    assert ca_bundle() == "/requests.pem"


def test_proxies_come_from_the_environment_as_requests_reads_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert proxy_for("https://events.pagerduty.com/v2/enqueue") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("http_proxy", "proxy.internal:8080")
    assert proxy_for("https://events.pagerduty.com/v2/enqueue") == "http://127.0.0.1:3128"
    assert proxy_for("http://127.0.0.1:9/x") == "http://proxy.internal:8080"
    monkeypatch.setenv("NO_PROXY", "hooks.slack.com,.example.com")
    assert proxy_for("https://hooks.slack.com/services/T/B/X") is None
    assert proxy_for("https://api.example.com/hook") is None
    assert proxy_for("https://events.pagerduty.com/v2/enqueue") == "http://127.0.0.1:3128"
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.setenv("ALL_PROXY", "http://all.internal:3128")
    assert proxy_for("https://events.pagerduty.com/v2/enqueue") == "http://all.internal:3128"


def test_posts_go_through_the_proxy_with_its_credentials(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    # The "proxy" is a plain server: a forward proxy gets the absolute URL in the request line.
    with Server(body=b"via proxy") as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://user:p%40ss@"))
        client = HttpClient(server.url)
        answer = client.post(f"{server.url}/hook", b"{}", timeout=5)
        client.close()
    assert answer.body == b"via proxy" and server.seen == []
    [(line, headers, _, _)] = proxy.seen
    assert line == f"POST {server.url}/hook HTTP/1.1"
    assert headers["proxy-authorization"] == "Basic dXNlcjpwQHNz"  # user:p@ss


class TunnelProxy:
    """A forward proxy on 127.0.0.1 that only tunnels (``CONNECT``), recording each request head."""

    def __init__(self) -> None:
        self.heads: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += client.recv(4096)
        self.heads.append(head.decode("latin-1"))
        host, port = head.split()[1].decode().rsplit(":", 1)
        with client, socket.create_connection((host, int(port))) as upstream:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
            back.start()
            _pipe(client, upstream)
            back.join(timeout=10)

    def close(self) -> None:
        self._listener.close()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def test_https_goes_through_the_proxys_tunnel_and_still_verifies(
        certificate_authority: trustme.CA, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    certificate_authority.cert_pem.write_to_path(str(bundle))
    proxy = TunnelProxy()
    monkeypatch.setenv("HTTPS_PROXY", proxy.url.replace("http://", "http://user:p%40ss@"))
    try:
        with Server(tls=tls_server_context(certificate_authority)) as s:
            untrusted = HttpClient(s.url)
            with pytest.raises(NetworkError) as caught:
                untrusted.post(s.url, b"{}", timeout=5)
            untrusted.close()
            assert caught.value.kind == "certificate"
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
            client = HttpClient(s.url)
            assert client.proxy == proxy.url.replace("http://", "http://user:p%40ss@")
            for _ in range(2):
                assert client.post(f"{s.url}/hook", b"{}", timeout=5).status == 200
            client.close()
    finally:
        proxy.close()
    assert [line for line, *_ in s.seen] == ["POST /hook HTTP/1.1"] * 2
    assert len({port for *_, port in s.seen}) == 1  # one tunnel, kept alive
    port = s.url.rsplit(":", 1)[1]
    assert all(head.startswith(f"CONNECT 127.0.0.1:{port} HTTP/1.") for head in proxy.heads)
    assert all("proxy-authorization: basic dxnlcjpwqhnz" in head.lower()  # user:p@ss
               for head in proxy.heads)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_proxy_that_refuses_is_a_connect_error_in_plain_words(
        scheme: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv(f"{scheme.upper()}_PROXY", f"http://user:pw@127.0.0.1:{port}")
    with pytest.raises(NetworkError) as caught:
        HttpClient(f"{scheme}://127.0.0.1:9").post(f"{scheme}://127.0.0.1:9/secret-path", b"{}",
                                                   timeout=5)
    assert caught.value.kind == "connect"
    assert str(caught.value) == ("Unable to connect to proxy: Failed to establish a new "
                                 "connection: [Errno 111] Connection refused")


def test_no_proxy_posts_directly(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    with Server() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        client = HttpClient(server.url)
        assert client.proxy is None
        assert client.post(server.url, b"{}", timeout=5).status == 200
        client.close()
    assert proxy.seen == [] and len(server.seen) == 1


@pytest.mark.parametrize(("kind", "expected"), [
    ("timeout", Outcome.retry("no answer from PagerDuty (https://x/…) within 2.5 s")),
    ("certificate", Outcome.failed("TLS certificate of PagerDuty (https://x/…) could not be "
                                   "verified: words", hint=CERTIFICATE_HINT)),
    ("tls", Outcome.retry("TLS error talking to PagerDuty (https://x/…): words")),
    ("connect", Outcome.retry("could not reach PagerDuty (https://x/…): words", hint="h")),
    ("other", Outcome.failed("could not send to PagerDuty (https://x/…): words", hint="h")),
])
def test_a_network_error_becomes_the_outcome_every_destination_gives(
        kind: str, expected: Outcome) -> None:
    error = NetworkError(kind, "words")  # type: ignore[arg-type]
    assert error.outcome("PagerDuty (https://x/…)", 2.5, hint="h") == expected


def test_loopback_test_servers_answer_without_waiting_on_nagle() -> None:
    # Without TCP_NODELAY a kept-alive answer written in two pieces waits ~40 ms for an ACK.
    from fake_pagerduty import FakePagerDuty
    from fake_slack import FakeSlack

    with Server() as plain, FakePagerDuty() as pagerduty, FakeSlack() as slack:
        for server in (plain.httpd, pagerduty._server, slack._server):
            assert server.RequestHandlerClass.disable_nagle_algorithm is True
