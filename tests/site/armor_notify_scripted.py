"""A test destination plugin whose behaviour each destination scripts, attempt by attempt.

Installed for the tests as a real distribution (``armor-notify-scripted``, see the dist-info
folder beside this file), so it is discovered through the ``armor_notify`` entry-point group
exactly as a third-party plugin is.

``script`` lists what successive attempts do; the last entry repeats:
``ok`` | ``retry`` | ``retry-after:SECONDS`` | ``fail`` | ``hang`` | ``slow:SECONDS`` |
``raise`` | ``interrupt`` |
``oserror`` | ``nonsense`` | ``barrier:N`` | ``broken-setup``.
Every attempt is appended to ``record`` (JSON lines).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from pydantic import Field

from armor_notify import DestinationConfig, DestinationType, Notification, Outcome, Secret, hookimpl

__version__ = "1.0"

# `barrier:N`: the attempt waits until N attempts are inside send() at once. Deliveries that are
# not concurrent break the barrier (after 5 s) and fail, so concurrency is proven without timing.
BARRIERS: dict[int, threading.Barrier] = {}
_BARRIER_LOCK = threading.Lock()


class ScriptedConfig(DestinationConfig):
    script: list[str] = Field(default_factory=lambda: ["ok"])
    record: str | None = None
    token: Secret | None = None
    target: str | None = None
    bounded: bool = False
    """Promise bounded waits (``Sender.bounded_waits``): a lone delivery may run inline."""

    def target_key(self) -> str | None:
        return self.target

    def describe(self) -> str:
        return f"scripted {'/'.join(self.script)}" + (f" token {self.token}" if self.token else "")


class ScriptedSender:
    def __init__(self, config: ScriptedConfig) -> None:
        if "broken-setup" in config.script:
            raise RuntimeError("cannot set up")
        self.config = config
        self.lock = threading.Lock()
        self.calls = 0
        self.bounded_waits = config.bounded

    def close(self) -> None:
        if self.config.record:
            with open(self.config.record, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"closed": True}) + "\n")

    def send(self, notification: Notification) -> Any:
        with self.lock:
            step = self.config.script[min(self.calls, len(self.config.script) - 1)]
            self.calls += 1
        if self.config.record:
            with self.lock, open(self.config.record, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({
                    "destination": notification.destination, "rule": notification.rule,
                    "dedup_key": notification.dedup_key, "action": notification.action,
                    "attempt": notification.attempt, "step": step, "alert_id": notification.alert.id,
                    "test": notification.test, "time": time.time(),
                    "thread": threading.current_thread().name,
                }) + "\n")
        kind, _, arg = step.partition(":")
        if kind == "ok":
            return Outcome.delivered(dedup_key=notification.dedup_key)
        if kind == "retry":
            return Outcome.retry("503 Service Unavailable")
        if kind == "retry-after":
            return Outcome.retry("429 Too Many Requests", retry_after=float(arg))
        if kind == "fail":
            token = self.config.token.get_secret_value() if self.config.token else ""
            return Outcome.failed(f"400 invalid event (token {token})", hint="fix the token")
        if kind == "hang":
            threading.Event().wait()
        if kind == "slow":
            time.sleep(float(arg))
            return Outcome.delivered()
        if kind == "barrier":
            with _BARRIER_LOCK:
                barrier = BARRIERS.setdefault(int(arg), threading.Barrier(int(arg), timeout=5))
            barrier.wait()
            return Outcome.delivered()
        if kind == "raise":
            raise ValueError("scripted plugin bug")
        if kind == "interrupt":  # the user pressed Ctrl-C during the attempt
            raise KeyboardInterrupt
        if kind == "oserror":
            raise ConnectionRefusedError(111, "Connection refused")
        if kind == "nonsense":
            return 42
        raise AssertionError(f"unknown step {step}")


@hookimpl
def register_destination_types(register: Any) -> None:
    register(DestinationType("scripted", ScriptedConfig, ScriptedSender, display_name="Scripted"))


@hookimpl
def register_event_types(register: Any) -> None:
    register("dbt_test_failed")
