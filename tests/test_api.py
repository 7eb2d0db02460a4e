"""The Python API carries everything the command line needs, so the CLI is a thin shell over
what a user can script: ``Notifier.plan``, ``Notifier.explain``, ``Notifier.drain`` (a worker),
``Notifier.inspect`` and ``open_outbox``."""

from __future__ import annotations

import ast
import contextlib
import threading
from pathlib import Path
from typing import Any

from fake_slack import FakeSlack

from armor_notify.api import Notifier, open_outbox
from armor_notify.delivery import State
from armor_notify.outbox import FILE_NAME

CLI = Path(__file__).parent.parent / "armor_notify" / "cli.py"
ALERT = {"id": "alert_1", "event_type": "schema_change", "title": "Column removed",
         "asset": {"id": "tbl_1", "name": "analytics.public.orders"}}


def config(url: str, **slack: Any) -> dict[str, Any]:
    return {"version": 1,
            "destinations": {"chat": {"type": "slack", "webhook_url": url, "rate_limit": "none",
                                      **slack},
                             "chat-again": {"type": "slack", "webhook_url": url}},
            "rules": [{"name": "All changes", "event": "schema_change",
                       "destinations": ["chat", "chat-again"]}]}


def test_the_command_line_uses_only_the_public_api() -> None:
    """cli.py never reaches into the notifier's dispatcher, gate or outbox, and never names the
    SQLite backend: a second outbox backend or a new front end changes nothing in it."""
    tree = ast.parse(CLI.read_text(encoding="utf-8"))
    reached = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert not reached & {"dispatcher", "gate", "outbox"}
    named = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    assert "SqliteOutbox" not in named | imported


def test_plan_writes_and_sends_nothing() -> None:
    with FakeSlack() as slack, Notifier.from_dict(config(slack.url)) as notifier:
        planned = notifier.plan(notifier.parse_alerts(ALERT))
        assert [(d.destination, d.state) for d in planned] == [
            ("chat", State.queued), ("chat-again", State.suppressed)]  # the same webhook
        assert notifier.inspect() == [] and slack.requests == []


def test_explain_says_what_route_shows_at_a_given_time() -> None:
    with FakeSlack() as slack, Notifier.from_dict(config(slack.url)) as notifier:
        alert = notifier.parse_alerts(ALERT)[0]
        explained = notifier.explain(alert, at=1_800_000_000.0)
    assert explained["alert_id"] == "alert_1"
    assert explained["matching_rules"] == ["All changes"]
    routes = {r["destination"]: r for r in explained["routes"]}
    assert routes["chat"]["sent"] is True and routes["chat"]["outcome"] == "send"
    assert routes["chat-again"]["outcome"] == "suppressed"
    assert "already delivers this alert" in routes["chat-again"]["not_sent_because"]
    assert routes["chat"]["dedup_key"] == routes["chat-again"]["dedup_key"]
    assert slack.requests == []


def test_open_outbox_creates_nothing_when_asked_only_to_read(tmp_path: Path) -> None:
    assert open_outbox(tmp_path / "state", create=False) is None
    assert not (tmp_path / "state").exists()
    box = open_outbox(tmp_path / "state")
    assert box is not None
    box.close()
    assert (tmp_path / "state" / FILE_NAME).exists()
    again = open_outbox(tmp_path / "state", create=False)
    assert again is not None
    again.close()


def test_drain_as_a_worker_delivers_what_was_queued_until_interrupted(tmp_path: Path) -> None:
    with FakeSlack() as slack:
        box = open_outbox(tmp_path)
        with Notifier.from_dict(config(slack.url), outbox=box) as notifier:
            report = notifier.send(notifier.parse_alerts(ALERT), wait=0)  # accept, queue only
            assert report.count(State.queued) == 1 and slack.requests == []
            delivered = threading.Event()

            def final(delivery: Any) -> None:
                assert delivery.state is State.delivered
                delivered.set()
                raise KeyboardInterrupt  # how a worker is stopped (Ctrl-C, SIGTERM)

            with contextlib.suppress(KeyboardInterrupt):
                notifier.drain(stop_when_idle=False, poll=0.05, on_final=final)
            assert delivered.is_set()
            assert notifier.inspect([State.queued, State.in_flight]) == []
        assert len(slack.requests) == 1
