"""The real-browser infrastructure (tests/browser.py) works end to end: a headless Chromium loads a
page from a loopback server, shows hostile text as text, and follows a form's POST-redirect-GET.

The server here is test scaffolding (the standard library's ``http.server``), standing in for the
pages the browser tests of ``armor-notify serve`` open.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from browser import chrome, screenshot

TITLE = "Deliveries"
HOSTILE = "<script>document.title='executed'</script> disk full"


def page(title: str, body: str) -> bytes:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body>{body}</body></html>").encode()


class Pages(BaseHTTPRequestHandler):
    """``/``: a heading, a row with escaped alert text, a retry form; ``/raw``: the same text not
    escaped (the control: the check below does see a script that runs); ``POST /retry``: 303 to
    ``/result``."""

    requests: list[tuple[str, str, str]]  # (method, path, body), set per server

    def do_GET(self) -> None:
        if self.path == "/":
            self.answer(200, page(TITLE, (
                f"<h1>{TITLE}</h1>"
                f"<table><tr id='d1'><td class='reason'>{html.escape(HOSTILE)}</td></tr></table>"
                "<form method='post' action='/retry'><input type='hidden' name='id' value='d1'>"
                "<button type='submit' id='retry'>Retry</button></form>")))
        elif self.path == "/raw":
            self.answer(200, page(TITLE, f"<p>{HOSTILE}</p>"))
        elif self.path == "/result":
            retried = [parse_qs(body).get("id", ["?"])[0]
                       for method, path, body in self.requests if method == "POST"]
            self.answer(200, page("Retried", f"<p id='result'>retried {html.escape(' '.join(retried))}</p>"))
        else:
            self.answer(404, page("Not found", "<p>not found</p>"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.log_request_body(self.rfile.read(length).decode())
        self.send_response(303)
        self.send_header("Location", "/result")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_request_body(self, body: str) -> None:
        self.requests.append((self.command, self.path, body))

    def answer(self, status: int, body: bytes) -> None:
        self.requests.append((self.command, self.path, ""))
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def site() -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    """The loopback server's base URL and the requests it has answered."""
    requests: list[tuple[str, str, str]] = []
    handler = type("Handler", (Pages,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.slow
def test_a_headless_chromium_reads_a_page_and_follows_a_form(
        site: tuple[str, list[tuple[str, str, str]]], tmp_path: Path) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    base, requests = site
    with chrome(failures=tmp_path) as driver:
        # The control: where the text is not escaped, the script runs and the check sees it.
        driver.get(base + "/raw")
        assert driver.title == "executed"

        driver.get(base + "/")
        assert driver.find_element(By.CSS_SELECTOR, "h1").text == TITLE
        reason = driver.find_element(By.CSS_SELECTOR, "tr#d1 td.reason")
        assert reason.text == HOSTILE  # shown literally, as a person reads it
        # Not an element (asked in the page: find_elements would wait the implicit wait for none).
        assert driver.execute_script("return document.querySelectorAll('script').length") == 0
        assert driver.title == TITLE  # and not run
        assert driver.execute_script("return document.title") == TITLE
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text  # noqa: B018 (reading it is what raises)

        driver.find_element(By.ID, "retry").click()  # POST /retry → 303 → GET /result
        assert driver.find_element(By.ID, "result").text == "retried d1"
        assert driver.current_url == base + "/result"
        assert driver.title == "Retried"

        shot = screenshot(driver, tmp_path / "result.png")
        assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    asked = [(method, path) for method, path, _ in requests if path != "/favicon.ico"]
    assert asked == [("GET", "/raw"), ("GET", "/"), ("POST", "/retry"), ("GET", "/result")]
    assert ("POST", "/retry", "id=d1") in requests
