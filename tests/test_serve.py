"""``armor-notify serve`` over real HTTP: started as a process on a free loopback port, fed by
many clients, stopped with SIGTERM mid-delivery, scraped (issue 17)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import EXAMPLES, SITE, wait_for
from fake_pagerduty import FakePagerDuty

pytestmark = pytest.mark.slow  # a server process

TOKEN = "tok-serve-0123456789abcdef"
PD_KEY = "0123456789abcdef0123456789abcdef"
SIGNING = "signing-secret-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def alert(i: int, **fields: Any) -> dict[str, Any]:
    return {"id": f"alert_{i:04d}", "event_type": "schema_change", "severity": "critical",
            "title": f"Column removed {i:04d}",
            "asset": {"id": f"asset_{i:04d}", "name": f"db.public.t{i:04d}"}, **fields}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc, self.url = proc, url

    def post(self, path: str, body: Any = None, *, data: bytes | None = None,
             headers: dict[str, str] | None = None, auth: bool = True) -> requests.Response:
        sent = {"Content-Type": "application/json", **(AUTH if auth else {}), **(headers or {})}
        return requests.post(self.url + path, data=data if data is not None else
                             json.dumps(body).encode(), headers=sent, timeout=30)

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, err


def write_config(tmp_path: Path, pd_url: str, rate_limit: str = "none", **serve: Any) -> Path:
    config = {"version": 1,
              "destinations": {"pd": {"type": "pagerduty", "integration_key": PD_KEY,
                                      "url": pd_url, "rate_limit": rate_limit, "timeout": 5,
                                      "retry_backoff": 0.2}},
              "rules": [{"name": "All", "event": ["schema_change", "freshness_violation",
                                                  "metric_anomaly"], "destinations": ["pd"]}],
              "serve": serve}
    path = tmp_path / "armor-notify.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def serving(config: Path, state: Path | str, *args: str,
            env: dict[str, str] | None = None) -> Iterator[Server]:
    """``serve`` on a free port with the outbox in ``state``: a SQLite directory, or a
    ``postgresql://`` URL."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("ARMOR_NOTIFY_")}
    full.update({"ARMOR_NOTIFY_API_TOKENS": TOKEN, "PYTHONPATH": str(SITE)}, **(env or {}))
    exe = Path(sys.executable).with_name("armor-notify")
    where = ["--state", state] if isinstance(state, str) else ["--state-dir", str(state)]
    proc = subprocess.Popen([str(exe), "serve", "-c", str(config), *where,
                             "--listen", f"127.0.0.1:{port}", "--poll", "0.2s", *args], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    server = Server(proc, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(server.url + "/healthz", timeout=1).ok:
                break
        except requests.ConnectionError:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited: {proc.communicate()[1][-2000:]}") from None
            time.sleep(0.05)
    try:
        yield server
    finally:
        if proc.poll() is None:
            server.stop()


@pytest.fixture
def pd() -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as fake:
        yield fake


# -- intake -----------------------------------------------------------------------------------------


def test_alerts_are_accepted_durably_then_delivered_and_repeats_are_marked(
        pd: FakePagerDuty, tmp_path: Path) -> None:
    with serving(write_config(tmp_path, pd.url), tmp_path / "state") as server:
        first = server.post("/v1/alerts", [alert(1), alert(2)])
        assert first.status_code == 202, first.text
        accepted = first.json()["accepted"]
        assert [a["alert_id"] for a in accepted] == ["alert_0001", "alert_0002"]
        assert all(not d["repeat"] for a in accepted for d in a["deliveries"])
        again = server.post("/v1/alerts", alert(1))
        assert again.status_code == 202
        assert again.json()["accepted"][0]["deliveries"][0]["repeat"] is True
        lines = server.post("/v1/alerts", data=(json.dumps(alert(3)) + "\n" +
                                                json.dumps(alert(4)) + "\n").encode(),
                            headers={"Content-Type": "application/x-ndjson"})
        assert lines.status_code == 202
        assert wait_for(lambda: len(pd.events) == 4)
    assert sorted(e["payload"]["summary"] for e in pd.events)[0].startswith("Column removed 0001")


def test_check_results_over_http_page_once_resolve_and_go_missing(pd: FakePagerDuty,
                                                                  tmp_path: Path) -> None:
    def result(status: str, run: int) -> dict[str, Any]:
        return {"event_type": "metric_anomaly", "title": "Row count dropped",
                "asset": {"id": "orders", "name": "db.public.orders"},
                "check": {"id": "row_count", "status": status, "run_id": f"run-{run}",
                          "expect_every": "1s"}}

    config = write_config(tmp_path, pd.url)
    rules = yaml.safe_load(config.read_text())
    rules["rules"][0]["event"].append("check_missing")
    config.write_text(yaml.safe_dump(rules))
    with serving(config, tmp_path / "state") as server:
        answers = []
        for run, status in enumerate(("fail", "fail", "pass")):
            answer = server.post("/v1/alerts", result(status, run))
            assert answer.status_code == 202, answer.text
            answers.append(answer.json()["accepted"][0])
        assert [a["check"] for a in answers] == [
            "check started failing: paged", answers[1]["check"],
            answers[2]["check"]]
        assert answers[1]["check"].endswith("no new page")
        assert answers[1]["deliveries"][0]["state"] == "suppressed"
        assert answers[2]["check"].startswith("check passed: resolves its incident")
        assert wait_for(lambda: [e["event_action"] for e in pd.events] == ["trigger", "resolve"])
        # No result for twice its interval: the service's worker raises check_missing.
        assert wait_for(lambda: len(pd.events) == 3, timeout=30)
    missing = pd.events[2]
    assert missing["event_action"] == "trigger" and "has not reported" in \
        missing["payload"]["summary"]
    assert pd.events[0]["dedup_key"] == pd.events[1]["dedup_key"] != missing["dedup_key"]


def test_every_refusal_has_its_status_and_says_why(pd: FakePagerDuty, tmp_path: Path) -> None:
    config = write_config(tmp_path, pd.url, max_body=4096)
    with serving(config, tmp_path / "state") as server:
        assert server.post("/v1/alerts", alert(1), auth=False).status_code == 401
        wrong = server.post("/v1/alerts", alert(1), headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and TOKEN not in wrong.text
        assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
        bad = server.post("/v1/alerts", [alert(1), {**alert(2), "severity": "loud"}])
        assert bad.status_code == 400
        problems = [p["text"] for p in bad.json()["problems"]]
        assert problems == ["request body: [1].severity: Input should be 'info', 'warning' or "
                            "'critical'"], problems
        assert server.post("/v1/alerts", data=b"x" * 5000).status_code == 413
        typed = server.post("/v1/alerts", alert(1), headers={"Content-Type": "text/html"})
        assert typed.status_code == 415 and "send JSON" in typed.json()["error"]
        unknown = server.post("/v1/sources/nagioss", {})
        assert unknown.status_code == 404 and "alertmanager" in unknown.json()["error"]
        assert server.post("/v1/alerts", data=b"\xff\xfe").status_code == 400
        assert pd.events == []  # nothing refused was sent


def test_an_alertmanager_webhook_posted_straight_to_its_source(pd: FakePagerDuty,
                                                                tmp_path: Path) -> None:
    payload = (EXAMPLES / "sources" / "alertmanager_webhook.json").read_bytes()
    config = write_config(tmp_path, pd.url, signatures={
        "alertmanager": {"secret": SIGNING, "header": "X-Signature"}})
    with serving(config, tmp_path / "state") as server:
        unsigned = server.post("/v1/sources/alertmanager", data=payload)
        assert unsigned.status_code == 401 and "signature" in unsigned.json()["error"]
        signature = hmac.new(SIGNING.encode(), payload, hashlib.sha256).hexdigest()
        signed = server.post("/v1/sources/alertmanager", data=payload,
                             headers={"X-Signature": f"sha256={signature}"})
        assert signed.status_code == 202, signed.text
        assert wait_for(lambda: len(pd.events) == 2)
    assert {e["dedup_key"] for e in pd.events} == {"alertmanager-8d6a1c0c2f1e9b3a",
                                                   "alertmanager-3f2b9c1d7a6e5b4c"}


def test_many_clients_at_once_lose_and_duplicate_nothing(pd: FakePagerDuty, tmp_path: Path) -> None:
    with serving(write_config(tmp_path, pd.url), tmp_path / "state") as server:
        answers: list[int] = []

        def client(k: int) -> None:
            for i in range(10):
                answers.append(server.post("/v1/alerts", alert(k * 100 + i)).status_code)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers == [202] * 160
        assert wait_for(lambda: len(pd.events) >= 160, 60)
        time.sleep(0.5)
    keys = [e["dedup_key"] for e in pd.events]
    assert len(keys) == 160 == len(set(keys))


def test_over_the_backlog_limit_intake_answers_429_and_logs_are_json(
        pd: FakePagerDuty, tmp_path: Path) -> None:
    config = write_config(tmp_path, pd.url, max_backlog=2)
    with serving(config, tmp_path / "state", "--no-worker", "--log-format", "json") as server:
        assert server.post("/v1/alerts", [alert(1), alert(2)]).status_code == 202
        full = server.post("/v1/alerts", alert(3))
        assert full.status_code == 429 and full.headers["Retry-After"] == "30"
        ready = requests.get(server.url + "/readyz", timeout=5).json()
        assert ready["workers"] == "off" and ready["ready"]
        code, err = server.stop()
    assert code == 0
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(entry) for entry in lines)
    assert any("accepted 2 alert(s) from native" in entry["message"] for entry in lines)
    assert TOKEN not in err


def test_the_deployment_examples_use_real_options() -> None:
    from armor_notify.cli import cli

    serve = cli.commands["serve"]  # type: ignore[attr-defined]
    known = {opt for param in serve.params for opt in getattr(param, "opts", [])}
    deploy = EXAMPLES / "deploy"
    unit = (deploy / "armor-notify.service").read_text()
    (command,) = re.findall(r"^ExecStart=\S+ serve (.*)$", unit, re.MULTILINE)
    entry = json.loads(re.search(r"^ENTRYPOINT (.*)$", (deploy / "Containerfile").read_text(),
                                 re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert entry[:2] == ["armor-notify", "serve"]
    for used in [*command.split(), *entry[2:]]:
        if used.startswith("-"):
            assert used in known, f"the deployment examples use {used}, which serve lacks"


def test_without_a_token_it_listens_on_loopback_only(tmp_path: Path) -> None:
    config = write_config(tmp_path, "https://events.pagerduty.com")
    exe = Path(sys.executable).with_name("armor-notify")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARMOR_NOTIFY_")}
    done = subprocess.run([str(exe), "serve", "-c", str(config), "--listen", "0.0.0.0:1"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "no API token: serving on 0.0.0.0 would take alerts from anyone" in done.stderr


# -- stopping ---------------------------------------------------------------------------------------


def test_sigterm_mid_delivery_finishes_it_and_loses_nothing(tmp_path: Path) -> None:
    with FakePagerDuty(latency=1.5) as slow:
        config = write_config(tmp_path, slow.url)
        with serving(config, tmp_path / "state") as server:
            assert server.post("/v1/alerts", [alert(1), alert(2)]).status_code == 202
            assert wait_for(lambda: len(slow.requests) >= 1, 10)  # an attempt is running
            began = time.monotonic()
            code, err = server.stop()
        assert code == 0, err
        assert time.monotonic() - began < 10
        assert "stopping: no new requests" in err
        delivered = {e["dedup_key"] for e in slow.events}
        # What was not delivered before the stop is still queued: a new serve delivers it.
        with serving(config, tmp_path / "state"):
            assert wait_for(lambda: len({e["dedup_key"] for e in slow.events}) == 2, 20)
        assert delivered <= {e["dedup_key"] for e in slow.events}


# -- metrics, health and the status page ------------------------------------------------------------


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = rf"^{re.escape(name)}(?:\{{{re.escape(wanted)}\}})? (\S+)$" if labels else \
        rf"^{re.escape(name)} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"no {name}{labels} in the metrics"
    return float(found.group(1))


def test_metrics_after_a_known_workload(pd: FakePagerDuty, tmp_path: Path) -> None:
    from fake_pagerduty import FakeResponse

    pd.script(FakeResponse(500, {"status": "error", "message": "try again"}))
    with serving(write_config(tmp_path, pd.url), tmp_path / "state") as server:
        assert server.post("/v1/alerts", [alert(1), alert(2), alert(3)]).status_code == 202
        assert server.post("/v1/alerts", alert(1)).status_code == 202  # a repeat
        assert wait_for(lambda: len([r for r in pd.requests if r.status == 202]) == 3, 20)
        time.sleep(0.3)
        text = requests.get(server.url + "/metrics", timeout=5).text
    assert metric(text, "armor_notify_alerts_accepted_total", source="native") == 4
    assert metric(text, "armor_notify_alerts_repeated_total", source="native") == 1
    assert metric(text, "armor_notify_deliveries_total", destination="pd", state="delivered",
                  type="pagerduty") == 3
    assert metric(text, "armor_notify_attempts_total", destination="pd", type="pagerduty") == 4
    assert metric(text, "armor_notify_retries_total", destination="pd", type="pagerduty") == 1
    assert metric(text, "armor_notify_delivery_latency_seconds_count", destination="pd") == 3
    assert metric(text, "armor_notify_queue_depth", state="delivered") == 3
    assert metric(text, "armor_notify_oldest_waiting_seconds") == 0
    assert PD_KEY not in text


def check_result(check: str, status: str, asset: str, *, tags: tuple[str, ...] = (),
                 expect_every: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"id": check, "status": status}
    if expect_every is not None:
        found["expect_every"] = expect_every
    return {"event_type": "metric_anomaly", "title": f"{check} on {asset}",
            "asset": {"id": f"id-{asset}", "name": asset, "tags": list(tags)}, "check": found}


def mute(config: Path, state: Path, *args: str, user: str = "ana") -> None:
    """``armor-notify mute ARGS`` on the state ``serve`` uses, as another process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARMOR_NOTIFY_")}
    exe = Path(sys.executable).with_name("armor-notify")
    done = subprocess.run([str(exe), "mute", *args, "-c", str(config), "--state-dir", str(state)],
                          env={**env, "USER": user}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_metrics_count_checks_by_state_the_missing_ones_and_mutes_with_what_they_hold(
        pd: FakePagerDuty, tmp_path: Path) -> None:
    config, state = write_config(tmp_path, pd.url), tmp_path / "state"
    with serving(config, state) as server:
        mute(config, state, "--tag", "backfill", "--for", "1h", "--reason", "backfill")
        for result in (check_result("row_count", "fail", "db.public.orders", tags=("backfill",)),
                       check_result("unique_id", "pass", "db.public.customers"),
                       check_result("volume", "pass", "db.public.events", expect_every="1s")):
            assert server.post("/v1/alerts", result).status_code == 202

        def scrape() -> str:
            return requests.get(server.url + "/metrics", timeout=5).text

        # No result of volume for twice its interval: the service's worker marks it missing.
        assert wait_for(lambda: metric(scrape(), "armor_notify_checks_missing") == 1, 30)
        text = scrape()
    assert metric(text, "armor_notify_checks", state="failing") == 1
    assert metric(text, "armor_notify_checks", state="passing") == 2
    assert metric(text, "armor_notify_mutes_active") == 1
    assert metric(text, "armor_notify_held_deliveries") == 1  # row_count's page, held
    assert metric(text, "armor_notify_queue_depth", state="queued") == 1
    assert pd.events == []


def test_rate_limit_waits_are_counted(pd: FakePagerDuty, tmp_path: Path) -> None:
    config = write_config(tmp_path, pd.url, rate_limit="1/minute")
    with serving(config, tmp_path / "state") as server:
        assert server.post("/v1/alerts", [alert(1), alert(2), alert(3)]).status_code == 202
        assert wait_for(lambda: len(pd.events) >= 1)

        def waits() -> float:
            text = requests.get(server.url + "/metrics", timeout=5).text
            found = re.search(r'^armor_notify_rate_limit_waits_total\{destination="pd"\} (\S+)$',
                              text, re.MULTILINE)
            return float(found.group(1)) if found else 0.0

        assert wait_for(lambda: waits() >= 1)
        assert len(pd.events) == 1  # the others wait for the key, not sent early
        depth = requests.get(server.url + "/metrics", timeout=5).text
        assert metric(depth, "armor_notify_queue_depth", state="queued") == 2
        assert metric(depth, "armor_notify_oldest_waiting_seconds") > 0


def test_the_status_page_shows_failures_escaped_and_retries_them(tmp_path: Path) -> None:
    with FakePagerDuty() as pd:
        pd.revoked_keys.add(PD_KEY)  # PagerDuty refuses: the delivery fails for good
        with serving(write_config(tmp_path, pd.url), tmp_path / "state") as server:
            evil = alert(1, title="<script>document.title='owned'</script> orders")
            assert server.post("/v1/alerts", evil).status_code == 202
            assert wait_for(lambda: len(pd.requests) == 1)
            time.sleep(0.3)
            page = requests.get(server.url + "/", timeout=5)
            assert "API token" in page.text and "Column" not in page.text  # sign in first
            browser = requests.Session()
            refused = browser.post(server.url + "/login", data={"token": "wrong"}, timeout=5)
            assert refused.status_code == 401
            signed = browser.post(server.url + "/login", data={"token": TOKEN}, timeout=5)
            assert signed.status_code == 200 and "Failed and dead deliveries" in signed.text
            html = signed.text
            assert "&lt;script&gt;document.title=" in html and "<script>" not in html
            assert PD_KEY not in html
            row = re.search(r"data-id='([0-9a-f]+)'.*?class=reason>([^<]*)", html, re.S)
            assert row and "failed" in html
            forged = browser.post(f"{server.url}/deliveries/{row.group(1)}/retry",
                                  data={"csrf": "0" * 64}, timeout=5)
            assert forged.status_code == 403
            csrf = re.search(r"name=csrf value='([0-9a-f]+)'", html)
            assert csrf
            pd.revoked_keys.clear()
            retried = browser.post(f"{server.url}/deliveries/{row.group(1)}/retry",
                                   data={"csrf": csrf.group(1)}, timeout=5)
            assert retried.status_code == 200 and "Queued again" in retried.text
            assert wait_for(lambda: any(r.status == 202 for r in pd.requests))


def test_the_status_page_shows_failing_checks_and_mutes_escaped(pd: FakePagerDuty,
                                                                  tmp_path: Path) -> None:
    config, state = write_config(tmp_path, pd.url), tmp_path / "state"
    hostile = "<script>document.title='owned'</script>.orders"
    with serving(config, state) as server:
        browser = requests.Session()
        empty = browser.post(server.url + "/login", data={"token": TOKEN}, timeout=5).text
        assert "No failing checks." in empty and "No mutes in force." in empty
        assert "0 in force, holding 0 deliveries" in empty
        mute(config, state, "--tag", "backfill", "--for", "2h", "--reason",
             "<b>backfill</b> & co", user="<i>ana</i>")
        assert server.post("/v1/alerts", check_result(
            "<img src=x onerror=alert(1)>", "fail", hostile, tags=("backfill",))).status_code == 202
        time.sleep(0.05)  # failing later: listed first
        assert server.post("/v1/alerts", check_result(
            "row_count", "fail", "db.public.customers")).status_code == 202
        assert server.post("/v1/alerts", check_result(
            "fresh", "pass", "db.public.events", expect_every="1s")).status_code == 202
        assert wait_for(lambda: len(pd.events) == 1)  # customers' page; the other one is held
        # fresh reports nothing for twice its interval: missing, though passing.
        assert wait_for(lambda: "missing since" in browser.get(server.url + "/", timeout=5).text,
                        30)
        html = browser.get(server.url + "/", timeout=5).text
    assert "<script>" not in html and "<img" not in html and "<b>" not in html \
        and "<i>" not in html
    checks = html[html.index("<h2>Failing checks"):html.index("<h2>Mutes in force")]
    assert "2 failing · 1 passing · 1 missing" in checks
    assert "&lt;script&gt;document.title=&#x27;owned&#x27;&lt;/script&gt;.orders" in checks
    assert "&lt;img src=x onerror=alert(1)&gt;" in checks
    rows = re.findall(r"<tr class=check><td>(.*?)</td>", checks)
    assert rows == ["fresh", "row_count", "&lt;img src=x onerror=alert(1)&gt;"]  # newest first
    mutes = html[html.index("<h2>Mutes in force"):]
    assert "1 in force, holding 1 delivery until they end" in mutes
    (row,) = re.findall(r"<tr class=mute>(.*?)</tr>", mutes)
    assert re.findall(r"<td>(.*?)</td>", row)[:4] == [
        "#1", "tag backfill", "&lt;b&gt;backfill&lt;/b&gt; &amp; co", "&lt;i&gt;ana&lt;/i&gt;"]
    assert row.endswith("<td>1</td>")


def test_the_status_page_lists_the_newest_failing_checks_and_says_how_many_more() -> None:
    from armor_notify import status_page
    from armor_notify.ledger import CheckState
    from armor_notify.outbox_core import Summary

    checks = [CheckState("dbt", f"check_{i}", f"asset_{i}", "failing", 1000.0 + i, "fail",
                         2000.0, None) for i in range(60)]
    checks[59].folded_into = "db.raw.<orders>"
    summary = Summary({}, None, {}, {"failing": 60, "passing": 0}, 0, 0, 0)
    html = status_page.status(summary, [], checks=checks, mutes=[], config="c.yaml", csrf="x",
                              now=3000.0)
    rows = re.findall(r"<tr class=check><td>(.*?)</td><td>(.*?)</td>.*?class=note>(.*?)</td>",
                      html)
    assert [r[0] for r in rows] == [f"check_{i}" for i in range(59, 9, -1)]
    assert rows[0] == ("check_59", "asset_59", "folded into db.raw.&lt;orders&gt;")
    assert "10 more: <code>armor-notify checks --failing</code> lists them all." in html


def test_a_person_sees_the_failure_in_a_browser_and_retries_it(tmp_path: Path) -> None:
    from browser import chrome, screenshot
    from selenium.webdriver.common.by import By

    with FakePagerDuty() as pd:
        pd.revoked_keys.add(PD_KEY)  # PagerDuty refuses the key: the delivery fails for good
        with serving(write_config(tmp_path, pd.url), tmp_path / "state") as server:
            title = "<img src=x onerror=\"document.title='owned'\"> orders lost a column"
            assert server.post("/v1/alerts", alert(7, title=title)).status_code == 202
            assert wait_for(lambda: len(pd.requests) == 1)
            time.sleep(0.3)
            with chrome(failures=tmp_path) as driver:
                driver.get(server.url + "/")
                driver.find_element(By.NAME, "token").send_keys(TOKEN)
                driver.find_element(By.CSS_SELECTOR, "form button").click()
                row = driver.find_element(By.CSS_SELECTOR, "#problems tr.delivery")
                assert title in row.text  # shown as text, not run as markup
                assert driver.title == "armor-notify status"
                reason = row.find_element(By.CSS_SELECTOR, ".reason").text
                assert "PagerDuty" in reason or "integration key" in reason.lower(), reason
                assert row.find_element(By.CSS_SELECTOR, ".failed").text == "failed"
                pd.revoked_keys.clear()  # the key is fixed: retry it
                row.find_element(By.CSS_SELECTOR, "button").click()
                flash = driver.find_element(By.CSS_SELECTOR, ".flash").text
                assert "Queued again" in flash
                assert wait_for(lambda: any(r.status == 202 for r in pd.requests))
                time.sleep(0.5)
                driver.get(server.url + "/")
                assert "No failed or dead deliveries." in driver.find_element(
                    By.ID, "problems").text
                delivered = driver.find_element(By.CSS_SELECTOR, ".counts td.delivered").text
                assert delivered == "1"
                assert "No failing checks." in driver.find_element(By.ID, "checks").text
                assert "No mutes in force." in driver.find_element(By.ID, "mutes").text
                screenshot(driver, tmp_path / "status.png")


def test_a_separate_worker_on_the_same_state_delivers_what_serve_accepts(
        pd: FakePagerDuty, tmp_path: Path) -> None:
    config = write_config(tmp_path, pd.url)
    state = tmp_path / "state"
    with serving(config, state, "--no-worker") as server:
        assert server.post("/v1/alerts", [alert(1), alert(2)]).status_code == 202
        time.sleep(0.3)
        assert pd.events == []  # serve only took them
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARMOR_NOTIFY_")}
        exe = Path(sys.executable).with_name("armor-notify")
        worker = subprocess.run([str(exe), "worker", "--once", "-c", str(config), "--state-dir",
                                 str(state)], env=env, capture_output=True, text=True, timeout=60)
        assert worker.returncode == 0, worker.stderr
    assert sorted(e["payload"]["summary"][:19] for e in pd.events) == [
        "Column removed 0001", "Column removed 0002"]


def test_while_the_database_is_away_intake_answers_503_then_resumes(
        pd: FakePagerDuty, tmp_path: Path) -> None:
    import postgres

    database = postgres.fresh_database()
    try:
        config = write_config(tmp_path, pd.url)
        with serving(config, database.url) as server:
            assert server.post("/v1/alerts", alert(1)).status_code == 202
            assert wait_for(lambda: len(pd.events) == 1)
            restart = threading.Thread(target=postgres.server().restart, args=(3.0,))
            restart.start()
            time.sleep(1.0)  # the database is down now
            away = server.post("/v1/alerts", alert(2))
            assert away.status_code == 503, away.text
            assert away.headers["Retry-After"] == "10"
            assert urlsplit_password(database.url) not in away.text
            restart.join()
            assert wait_for(lambda: server.post("/v1/alerts", alert(3)).status_code == 202, 20)
            assert wait_for(lambda: len(pd.events) == 2, 20)
            assert requests.get(server.url + "/readyz", timeout=5).json()["ready"]
            code, err = server.stop()
        assert code == 0
        assert "Traceback" not in err and urlsplit_password(database.url) not in err
    finally:
        database.drop()


def urlsplit_password(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).password or "?"
