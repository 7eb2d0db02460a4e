"""The ``slack`` destination with a bot token, against a loopback fake of Slack's Web API: one
message per incident, updated when it is acknowledged or resolved, with replies in its thread."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import run_cli
from fake_slack_api import TOKEN, FakeSlackApi, error_reply, missing_scope, rate_limited

from armor_notify.api import Notifier
from armor_notify.delivery import State
from armor_notify.errors import ConfigError

CHANNEL = "C0123ALERTS"


@pytest.fixture
def api() -> Iterator[FakeSlackApi]:
    with FakeSlackApi() as fake:
        yield fake


def bot(api: FakeSlackApi, **options: Any) -> dict[str, Any]:
    return {"type": "slack", "token": api.token, "channel": CHANNEL, "api_url": api.url,
            "retry_backoff": 0.01, "rate_limit": "none", **options}


def notifier(api: FakeSlackApi, outbox: Any = None, **options: Any) -> Notifier:
    return Notifier.from_dict({
        "version": 1, "destinations": {"team": bot(api, **options)},
        "rules": [{"name": "All", "event": "schema_change", "destinations": ["team"]}]},
        outbox=outbox)


def alert(status: str = "triggered", n: int = 1, **fields: Any) -> dict[str, Any]:
    return {"id": f"alert_{status}_{n}", "event_type": "schema_change", "status": status,
            "severity": "critical", "title": "Column customer_id removed from orders",
            "dedup_key": "orders-incident", "asset": {"id": "ast_1", "name": "db.public.orders"},
            **fields}


def send(nt: Notifier, *alerts: dict[str, Any]) -> list[Any]:
    return list(nt.send(nt.parse_alerts(list(alerts)), wait=5).deliveries)


def test_a_trigger_then_its_resolve_is_one_message_updated_with_one_reply(
        api: FakeSlackApi) -> None:
    with notifier(api) as nt:
        (posted,) = send(nt, alert())
        assert posted.state is State.delivered, posted.reason
        (message,) = api.messages(CHANNEL)
        assert posted.details["message"] == {"channel": CHANNEL, "ts": message.ts}
        assert message.text.startswith(":red_circle: CRITICAL · Schema change")
        (resolved,) = send(nt, alert("resolved"))
        assert resolved.state is State.delivered, resolved.reason
    (message,) = api.messages(CHANNEL)  # still one message: updated, not posted again
    assert message.edits == 1 and message.text.startswith(":white_check_mark: Resolved")
    assert message.history[0]["text"].startswith(":red_circle: CRITICAL")
    header = message.blocks[0]["text"]["text"]
    assert header.startswith(":white_check_mark: Resolved · Schema change")
    (reply,) = message.replies
    assert reply.thread_ts == message.ts
    assert reply.text.startswith(":white_check_mark: Resolved · Schema change · ")
    assert resolved.details["message"] == {"channel": CHANNEL, "ts": message.ts}
    calls = [r.path.rsplit("/", 1)[-1] for r in api.requests]
    assert calls == ["chat.postMessage", "chat.update", "chat.postMessage"]
    for request in api.requests:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.headers["content-type"] == "application/json; charset=utf-8"
        assert "link_names" not in request.json() and "parse" not in request.json()


def test_acknowledge_then_resolve_update_the_same_message_and_reply_each_time(
        api: FakeSlackApi) -> None:
    with notifier(api) as nt:
        send(nt, alert())
        (acked,) = send(nt, alert("acknowledged"))
        (message,) = api.messages(CHANNEL)
        assert acked.state is State.delivered and message.text.startswith(":eyes: Acknowledged")
        send(nt, alert("resolved"))
    (message,) = api.messages(CHANNEL)
    assert message.edits == 2 and message.text.startswith(":white_check_mark: Resolved")
    assert [r.text.split(" · ")[0] for r in message.replies] == [
        ":eyes: Acknowledged", ":white_check_mark: Resolved"]


def test_a_repeat_of_an_open_incident_goes_to_its_thread_and_a_new_one_starts_anew(
        api: FakeSlackApi) -> None:
    with notifier(api) as nt:
        send(nt, alert())
        (again,) = send(nt, alert(n=2, title="Column customer_id still missing"))
        (message,) = api.messages(CHANNEL)
        (reply,) = message.replies
        assert "still missing" in reply.text and again.details["message"]["ts"] == message.ts
        send(nt, alert("resolved"))
        (reopened,) = send(nt, alert(n=3))  # after the resolve: a new incident, a new message
    first, second = api.messages(CHANNEL)
    assert reopened.details["message"] == {"channel": CHANNEL, "ts": second.ts}
    assert second.ts != first.ts and not second.replies


def test_a_message_that_cannot_be_updated_is_posted_anew(api: FakeSlackApi) -> None:
    with notifier(api) as nt:
        send(nt, alert())
        api.script("chat.update", error_reply("message_not_found"))  # deleted in Slack
        (resolved,) = send(nt, alert("resolved"))
        assert resolved.state is State.delivered
        assert "could not be updated (message_not_found): posted anew" in resolved.reason
        original, anew = api.messages(CHANNEL)
        assert original.edits == 0 and anew.text.startswith(":white_check_mark: Resolved")
        assert resolved.details["message"]["ts"] == anew.ts


def test_an_update_of_a_message_the_bot_did_not_post_falls_back_too(api: FakeSlackApi) -> None:
    with notifier(api) as nt:
        (posted,) = send(nt, alert())
        api.foreign.add(posted.details["message"]["ts"])
        (resolved,) = send(nt, alert("resolved"))
    assert "(cant_update_message): posted anew" in resolved.reason
    assert len(api.messages(CHANNEL)) == 2


def test_a_channel_by_name_is_answered_and_kept_by_its_id(api: FakeSlackApi) -> None:
    with notifier(api, channel="#alerts") as nt:
        (posted,) = send(nt, alert())
        send(nt, alert("resolved"))
    assert posted.details["message"]["channel"] == CHANNEL
    (message,) = api.messages("#alerts")
    assert message.edits == 1 and len(message.replies) == 1
    update = api.requests[1].json()
    assert update["channel"] == CHANNEL  # chat.update needs the ID


@pytest.mark.parametrize(("setup", "code", "hint"), [
    (lambda api: api.member_of.discard(CHANNEL), "not_in_channel", "/invite @your-app-name"),
    (lambda api: api.archived.add(CHANNEL), "is_archived", "unarchive it"),
    (lambda api: setattr(api, "token_error", "token_revoked"), "token_revoked",
     "Bot User OAuth Token (xoxb-…)"),
    (lambda api: api.script("chat.postMessage", missing_scope()), "missing_scope",
     "needed: chat:write; the token has: channels:read"),
])
def test_refusals_fail_once_with_what_to_do(api: FakeSlackApi, setup: Any, code: str,
                                            hint: str) -> None:
    setup(api)
    with notifier(api) as nt:
        (failed,) = send(nt, alert())
    assert (failed.state, failed.reason, failed.attempt_count) == (State.failed, code, 1)
    assert hint in (failed.hint or "")
    assert TOKEN not in json.dumps(failed.as_dict())


def test_an_unknown_channel_and_a_wrong_token_say_so(api: FakeSlackApi) -> None:
    with notifier(api, channel="C0999GONE") as nt:
        (failed,) = send(nt, alert())
    assert failed.reason == "channel_not_found" and "C0999GONE" in (failed.hint or "")
    wrong = "xoxb-1111-2222-WRONGWRONGWRONGWRONG"
    with notifier(api, token=wrong) as nt:
        (refused,) = send(nt, alert(n=2))
    assert refused.reason == "invalid_auth" and "xoxb-" in (refused.hint or "")
    assert "WRONGWRONG" not in json.dumps(refused.as_dict())


def test_rate_limited_waits_as_slack_asks_then_posts(api: FakeSlackApi) -> None:
    api.script("chat.postMessage", rate_limited("1"))
    with notifier(api) as nt:
        (posted,) = send(nt, alert())
    assert posted.state is State.delivered and posted.attempt_count == 2
    first, second = posted.attempts
    assert first.reason == "ratelimited" and second.started_at - first.started_at >= 0.95
    assert len(api.messages(CHANNEL)) == 1


def test_a_failed_thread_reply_is_retried_and_the_update_made_again(api: FakeSlackApi) -> None:
    with notifier(api) as nt:
        send(nt, alert())
        api.script("chat.postMessage", error_reply("internal_error"))  # the reply fails once
        (resolved,) = send(nt, alert("resolved"))
    assert resolved.state is State.delivered and resolved.attempt_count == 2
    (message,) = api.messages(CHANNEL)
    assert message.edits == 2 and len(message.replies) == 1


def test_config_takes_a_webhook_or_a_bot_and_keeps_the_token_secret(api: FakeSlackApi) -> None:
    secret = "xoxb-1111-2222-SECRETSECRETSECRET"

    def refused(**options: Any) -> str:
        with pytest.raises(ConfigError) as caught:
            Notifier.from_dict({"version": 1, "destinations": {"team": {
                "type": "slack", **options}}, "rules": []})
        assert "SECRETSECRET" not in str(caught.value)
        return str(caught.value)

    assert "token and channel (a bot" in refused()
    assert "channel is missing" in refused(token=secret)
    assert "not both" in refused(token=secret, channel=CHANNEL,
                                 webhook_url="https://hooks.slack.com/services/T/B/SECRETSECRET")
    assert "channel ID (C0123ABCD" in refused(token=secret, channel="alerts")
    assert "not a Slack bot token" in refused(token="SECRETSECRETSECRET", channel=CHANNEL)
    assert "loopback" in refused(token=secret, channel=CHANNEL, api_url="http://example.com/api/")
    with notifier(api) as nt:
        shown = nt.config.destinations["team"].describe()
    assert shown.startswith(f"Slack {CHANNEL} as a bot (token xoxb") and TOKEN not in shown


@pytest.mark.slow
def test_the_test_command_and_preview_in_bot_mode(api: FakeSlackApi, tmp_path: Path) -> None:
    config = tmp_path / "armor-notify.yaml"
    config.write_text(yaml.safe_dump({
        "version": 1, "destinations": {"team": {"type": "slack", "token": "${SLACK_BOT_TOKEN}",
                                                "channel": CHANNEL, "api_url": api.url}},
        "rules": [{"name": "All", "event": "schema_change", "destinations": ["team"]}]}))
    env = {"SLACK_BOT_TOKEN": TOKEN}
    tested = run_cli("test", "team", "--config", str(config), env=env)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    (message,) = api.messages(CHANNEL)
    assert "[Test]" in message.text and TOKEN not in tested.stdout + tested.stderr
    path = tmp_path / "alert.json"
    path.write_text(json.dumps(alert()))
    shown = run_cli("preview", str(path), "--config", str(config), "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    (entry,) = json.loads(shown.stdout)["previews"]
    sent = run_cli("send", str(path), "--config", str(config), "--state-dir",
                   str(tmp_path / "state"), env=env)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert entry["payload"]["request"] == f"POST {api.url}chat.postMessage"
    assert entry["payload"]["payload"] == api.requests[-1].json()
    assert TOKEN not in shown.stdout


def test_a_digest_of_one_open_incident_goes_to_its_thread(api: FakeSlackApi,
                                                          tmp_path: Path) -> None:
    from armor_notify.outbox import SqliteOutbox

    with notifier(api, SqliteOutbox.open(tmp_path)) as nt:
        send(nt, alert())  # the incident's message
    with notifier(api, SqliteOutbox.open(tmp_path), digest={"window": "10m",
                                                            "max_items": 2}) as nt:
        send(nt, alert(n=2), alert(n=3))  # two more of it: a digest, in its thread
        nt.drain()
        send(nt, {**alert(n=4), "dedup_key": "other"}, {**alert(n=5), "dedup_key": "more"})
        nt.drain()  # a digest of two incidents: a message of its own
    first, digest = api.messages(CHANNEL)
    (reply,) = first.replies
    assert reply.text.startswith(":package: Digest: 2 schema changes")
    assert digest.text.startswith(":package: Digest: 2 schema changes") and not digest.replies
