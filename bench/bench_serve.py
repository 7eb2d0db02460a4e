"""Figure 9: alerts accepted over HTTP by ``armor-notify serve`` (issue 17).

``serve --no-worker`` on a fresh SQLite state directory (so only intake is measured: each
answer comes once the alert is durably in the outbox), fed by 8 concurrent clients, each
posting one alert a request on a kept-alive connection. The baseline, in the same run:
``armor-notify send --wait 0`` of the same number of alerts from one file (accept and queue,
start-up included). A third row posts them in batches of 50 a request.

    .venv/bin/python bench/bench_serve.py [--alerts 2000] [--clients 8]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from common import Row, alert_data, emit, pagerduty_config

TOKEN = "bench-token-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARMOR_NOTIFY_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["ARMOR_NOTIFY_API_TOKENS"] = TOKEN
    return env


def over_http(config: Path, state: Path, alerts: list[dict[str, object]], clients: int,
              batch: int) -> float:
    """Seconds for ``clients`` threads to post every alert (``batch`` a request)."""
    port = _free_port()
    exe = Path(sys.executable).with_name("armor-notify")
    proc = subprocess.Popen([str(exe), "serve", "-c", str(config), "--state-dir", str(state),
                             "--listen", f"127.0.0.1:{port}", "--no-worker", "-q"], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if requests.get(url + "/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.05)
        bodies = [json.dumps(alerts[i:i + batch]).encode() for i in range(0, len(alerts), batch)]
        shares = [bodies[k::clients] for k in range(clients)]
        failed: list[int] = []

        def client(share: list[bytes]) -> None:
            with requests.Session() as session:
                for body in share:
                    answer = session.post(url + "/v1/alerts", data=body, timeout=60, headers={
                        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
                    if answer.status_code != 202:
                        failed.append(answer.status_code)

        threads = [threading.Thread(target=client, args=(share,)) for share in shares]
        began = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.perf_counter() - began
        if failed:
            raise RuntimeError(f"{len(failed)} requests were not accepted: {failed[:5]}")
        return took
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def from_file(config: Path, state: Path, alerts: list[dict[str, object]]) -> float:
    path = state.parent / f"{state.name}.json"
    path.write_text(json.dumps(alerts))
    exe = Path(sys.executable).with_name("armor-notify")
    began = time.perf_counter()
    done = subprocess.run([str(exe), "send", str(path), "-c", str(config), "--state-dir",
                           str(state), "--wait", "0"], env=_env(), capture_output=True,
                          text=True, check=False)
    took = time.perf_counter() - began
    if done.returncode != 3:
        raise RuntimeError(f"send --wait 0 exited {done.returncode}: {done.stderr[-500:]}")
    return took


def run(count: int, clients: int, rounds: int) -> list[Row]:
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "config.yaml")
        config.write_text(json.dumps(pagerduty_config("http://127.0.0.1:9")))
        offset = 0
        for r in range(rounds):
            for name in ("file", "http", "http batched"):
                offset += count
                alerts = [alert_data(offset + i) for i in range(count)]
                state = Path(tmp, f"state-{r}-{name.replace(' ', '-')}")
                took = (from_file(config, state, alerts) if name == "file" else
                        over_http(config, state, alerts, clients,
                                  50 if name == "http batched" else 1))
                best[name] = min(best.get(name, took), took)
    rate = {name: count / took for name, took in best.items()}
    note = f"{count} alerts, best of {rounds} rounds"
    return [
        Row("9 serve", "send --wait 0 from a file (one process)", rate["file"], "alerts/s", 1.0,
            "itself", note=f"{note}; start-up included"),
        Row("9 serve", f"serve, {clients} clients, one alert a request", rate["http"],
            "alerts/s", rate["http"] / rate["file"], "send from a file",
            note=f"{note}; each answered once durable"),
        Row("9 serve", f"serve, {clients} clients, 50 alerts a request", rate["http batched"],
            "alerts/s", rate["http batched"] / rate["file"], "send from a file", note=note),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="rows as JSON lines (for run_all)")
    args = parser.parse_args()
    emit(run(args.alerts, args.clients, args.rounds), args.json)


if __name__ == "__main__":
    main()
