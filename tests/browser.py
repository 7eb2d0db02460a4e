"""A real headless Chromium, driven with selenium, for the tests of pages people look at.

The browser is Debian's: the ``chromium`` and ``chromium-driver`` packages (``/usr/bin/chromium``,
``/usr/bin/chromedriver``; ``.ci/run`` installs them). The driver is always given by its path, so
selenium never runs Selenium Manager (which would try to download one: there is no internet here).

Without the browser, its driver or selenium, a test that asks for one is skipped, saying why, or
fails under ``CI=true`` (CI must never pass by skipping it): the rule of ``tests/postgres.py``.

Nothing here imports selenium at module level: collecting a test file that imports this module
works without it, and the test is skipped (or fails under CI) only when it asks for a browser::

    from browser import chrome

    def test_page(tmp_path: Path) -> None:
        with chrome(failures=tmp_path) as driver:  # a screenshot lands in tmp_path on failure
            driver.get(url)
            driver.find_element(By.CSS_SELECTOR, "h1")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest
from postgres import in_ci

if TYPE_CHECKING:
    from selenium.webdriver import Chrome

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

ARGUMENTS = (
    "--headless=new",
    "--no-sandbox",  # the tests run as root, and Chrome's sandbox refuses root
    "--disable-dev-shm-usage",  # /dev/shm is small in containers
    "--disable-gpu",
    # Nothing from the network but the pages a test opens:
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)

IMPLICIT_WAIT = 2.0
"""Seconds ``find_element`` waits for an element to appear before giving up."""
PAGE_LOAD_TIMEOUT = 30.0
"""Seconds ``get`` (and a click that loads a page) may take."""

started_in: list[float] = []
"""How long each browser took to start, in seconds (what ``chrome()`` costs a test)."""


def unavailable(reason: str) -> NoReturn:
    """No browser can be had: skip (visibly) on a developer's machine, fail under ``CI=true``."""
    if in_ci():
        pytest.fail(f"browser tests cannot run under CI=true: {reason}", pytrace=False)
    pytest.skip(f"no headless browser: {reason}")


def missing() -> str | None:
    """What is missing for ``chrome()`` to start a browser, or ``None``."""
    install = "apt-get install chromium chromium-driver"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (Debian's {package} package: {install})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


@contextlib.contextmanager
def chrome(failures: Path | None = None, *, implicit_wait: float = IMPLICIT_WAIT,
           page_load_timeout: float = PAGE_LOAD_TIMEOUT) -> Iterator[Chrome]:
    """A fresh headless Chromium with an empty profile, quit (its profile removed) afterwards.

    When the block raises (an assertion, ``pytest.fail``, an error), the page as it was is saved
    in ``failures`` (give the test's ``tmp_path``) as ``failure.png`` and ``failure.html``, and
    their paths are written to stderr, which pytest shows with the failure.
    """
    reason = missing()
    if reason:
        unavailable(reason)
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver import Chrome, ChromeOptions
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="armor-notify-chrome-")
    try:
        options = ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in ARGUMENTS:
            options.add_argument(argument)
        options.add_argument(f"--user-data-dir={profile}")
        log = os.path.join(profile, "chromedriver.log")
        began = time.monotonic()
        try:
            # The driver's path given: selenium never runs Selenium Manager (no downloads).
            driver = Chrome(options=options, service=Service(CHROMEDRIVER, log_output=log))
        except WebDriverException as exc:
            unavailable(f"Chromium did not start: {_first_line(exc.msg or str(exc))}{_tail(log)}")
        started_in.append(time.monotonic() - began)
        try:
            driver.implicitly_wait(implicit_wait)
            driver.set_page_load_timeout(page_load_timeout)
            driver.set_window_size(1280, 1024)  # screenshots show a desktop page
            yield driver
        except GeneratorExit:
            raise
        except BaseException as exc:
            if failures is not None and not isinstance(exc, pytest.skip.Exception):
                _save_failure(driver, failures)
            raise
        finally:
            driver.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: Chrome, path: Path | str) -> Path:
    """Save what the browser shows as a PNG at ``path`` (its directory made if need be)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(driver.get_screenshot_as_png())
    return target


def _save_failure(driver: Chrome, directory: Path) -> None:
    saved: list[str] = []
    try:
        saved.append(str(screenshot(driver, directory / "failure.png")))
        html = directory / "failure.html"
        html.write_text(driver.page_source, encoding="utf-8")
        saved.append(str(html))
    except Exception as exc:  # the browser may be what failed: keep the test's own error
        saved.append(f"(could not save the page: {_first_line(str(exc))})")
    sys.stderr.write(f"the page at {_current_url(driver)} when the test failed: {' '.join(saved)}\n")


def _current_url(driver: Chrome) -> str:
    try:
        return str(driver.current_url)
    except Exception:
        return "(unknown)"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "(no message)"


def _tail(log: str) -> str:
    try:
        with open(log, errors="replace") as f:
            text = f.read().strip()
    except OSError:
        return ""
    return f"; chromedriver's log ends: {text[-600:]}" if text else ""
