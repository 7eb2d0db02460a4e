"""The fake Slack Web API against Slack's official client: slack_sdk's WebClient parses every answer
(``SlackApiError`` on ``ok: false``, ``response["ts"]``, 429 handling), so the fake answers what
the real client expects."""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fake_slack_api import (
    BOT_ID,
    BOT_USER_ID,
    TOKEN,
    FakeSlackApi,
    Reply,
    error_reply,
    missing_scope,
    normal,
    rate_limited,
)
from pytest_mock import MockerFixture
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

ALERTS = "C0123ALERTS"
TS = re.compile(r"^\d{10}\.\d{6}$")
SECTION = {"type": "section", "text": {"type": "mrkdwn", "text": "*3 columns removed* from orders"}}
HEADER = {"type": "header", "text": {"type": "plain_text", "text": "Schema change"}}


@pytest.fixture
def fake() -> Iterator[FakeSlackApi]:
    with FakeSlackApi() as server:
        yield server


@pytest.fixture
def client(fake: FakeSlackApi) -> WebClient:
    return WebClient(token=TOKEN, base_url=fake.url, timeout=5)


def api_error(call: Any, *args: Any, **kwargs: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as caught:
        call(*args, **kwargs)
    return caught.value


def raw_post(fake: FakeSlackApi, method: str, body: bytes, content_type: str) -> tuple[int, Any]:
    """A request slack_sdk would never send."""
    connection = http.client.HTTPConnection("127.0.0.1", int(fake.url.split(":")[2].split("/")[0]), timeout=5)
    try:
        connection.request("POST", f"/api/{method}", body, {
            "Content-Type": content_type, "Authorization": f"Bearer {TOKEN}"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


# chat.postMessage


def test_post_by_id_answers_channel_ts_and_message(fake: FakeSlackApi, client: WebClient) -> None:
    response = client.chat_postMessage(channel=ALERTS, text="3 columns removed", blocks=[HEADER, SECTION],
                                       unfurl_links=False, unfurl_media=False)

    assert response.status_code == 200
    assert response["ok"] is True
    assert response["channel"] == ALERTS
    assert TS.match(response["ts"])
    message = response["message"]
    assert message["type"] == "message"
    assert message["text"] == "3 columns removed"
    assert message["ts"] == response["ts"]
    assert message["bot_id"] == BOT_ID and message["user"] == BOT_USER_ID
    assert message["blocks"] == [HEADER, SECTION]
    assert "thread_ts" not in message

    [stored] = fake.messages(ALERTS)
    assert (stored.channel, stored.ts, stored.text) == (ALERTS, response["ts"], "3 columns removed")
    assert stored.blocks == [HEADER, SECTION]
    assert (stored.thread_ts, stored.replies, stored.edits, stored.history) == (None, [], 0, [])

    [received] = fake.requests
    assert (received.method, received.path) == ("POST", "/api/chat.postMessage")
    assert received.headers["authorization"] == f"Bearer {TOKEN}"
    assert received.headers["content-type"].startswith("application/json")
    assert received.json()["unfurl_links"] is False


def test_post_by_name_answers_the_channel_id(fake: FakeSlackApi, client: WebClient) -> None:
    by_hash = client.chat_postMessage(channel="#alerts", text="one")
    bare = client.chat_postMessage(channel="alerts", text="two")

    assert by_hash["channel"] == ALERTS
    assert bare["channel"] == ALERTS
    assert [m.text for m in fake.messages("#alerts")] == ["one", "two"]
    assert [m.ts for m in fake.messages(ALERTS)] == [by_hash["ts"], bare["ts"]]
    assert fake.messages("other") == []


def test_ts_values_are_unique_and_strictly_increasing(client: WebClient) -> None:
    stamps = [client.chat_postMessage(channel=ALERTS, text=f"n{i}")["ts"] for i in range(20)]

    assert all(TS.match(ts) for ts in stamps)
    as_numbers = [(int(s), int(us)) for s, us in (ts.split(".") for ts in stamps)]
    assert as_numbers == sorted(set(as_numbers))
    assert len(set(stamps)) == 20


def test_thread_replies_land_in_the_parents_replies(fake: FakeSlackApi, client: WebClient) -> None:
    parent = client.chat_postMessage(channel=ALERTS, text="alert fired")
    first = client.chat_postMessage(channel=ALERTS, text="still failing", thread_ts=parent["ts"])
    # Replying to a reply's ts threads under the parent, as Slack threads are one level deep.
    second = client.chat_postMessage(channel="#alerts", text="resolved", thread_ts=first["ts"])

    assert first["message"]["thread_ts"] == parent["ts"]
    assert second["message"]["thread_ts"] == parent["ts"]
    assert first["ts"] != parent["ts"] and second["ts"] != first["ts"]
    [top] = fake.messages(ALERTS)
    assert top.ts == parent["ts"]
    assert [(r.ts, r.text, r.thread_ts) for r in top.replies] == [
        (first["ts"], "still failing", parent["ts"]),
        (second["ts"], "resolved", parent["ts"]),
    ]


def test_reply_to_an_unknown_thread_is_message_not_found(fake: FakeSlackApi, client: WebClient) -> None:
    elsewhere = client.chat_postMessage(channel="C0456OTHER", text="in the other channel")

    for thread_ts in ("1700000000.000100", elsewhere["ts"]):
        error = api_error(client.chat_postMessage, channel=ALERTS, text="reply", thread_ts=thread_ts)
        assert error.response["error"] == "message_not_found"
    assert fake.messages(ALERTS) == []


def test_not_in_channel() -> None:
    with FakeSlackApi(member_of={ALERTS}) as fake:
        client = WebClient(token=TOKEN, base_url=fake.url, timeout=5)
        error = api_error(client.chat_postMessage, channel="#other", text="hello")

        assert error.response.status_code == 200
        assert error.response["ok"] is False
        assert error.response["error"] == "not_in_channel"
        assert fake.messages("other") == []
        assert client.chat_postMessage(channel="#alerts", text="hello")["ok"] is True


@pytest.mark.parametrize("channel", ["C9999NOPE", "#nope", "nope", ""])
def test_channel_not_found(fake: FakeSlackApi, client: WebClient, channel: str) -> None:
    error = api_error(client.chat_postMessage, channel=channel, text="hello")

    assert error.response["error"] == "channel_not_found"
    assert all(fake.messages(c) == [] for c in fake.channels)


def test_archived_channel(fake: FakeSlackApi, client: WebClient) -> None:
    fake.archived.add(ALERTS)

    error = api_error(client.chat_postMessage, channel="#alerts", text="hello")

    assert error.response["error"] == "is_archived"
    assert fake.messages(ALERTS) == []


@pytest.mark.parametrize(
    "blocks",
    [
        [{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}],  # header max 150
        [{"type": "no_such_block"}],
        [{"type": "section"}],  # neither text nor fields
        [SECTION] * 51,  # over 50 blocks
        "[not json",
    ],
    ids=["header-too-long", "unknown-type", "empty-section", "51-blocks", "not-json"],
)
def test_invalid_blocks(fake: FakeSlackApi, client: WebClient, blocks: Any) -> None:
    error = api_error(client.chat_postMessage, channel=ALERTS, text="fallback", blocks=blocks)

    assert error.response["error"] == "invalid_blocks"
    assert fake.messages(ALERTS) == []


def test_no_text(fake: FakeSlackApi, client: WebClient) -> None:
    # chat_postMessage() warns about a message without top-level text (an error under this
    # project's filterwarnings) but sends it: blocks alone are a message, text is only recommended.
    with pytest.warns(UserWarning, match="top-level `text` argument is missing"):
        assert client.chat_postMessage(channel=ALERTS, blocks=[SECTION])["ok"] is True
    # Neither text nor blocks: call the method directly, as a client without that check would.
    error = api_error(client.api_call, "chat.postMessage", json={"channel": ALERTS, "text": ""})

    assert error.response["error"] == "no_text"
    assert [(m.text, m.blocks) for m in fake.messages(ALERTS)] == [("", [SECTION])]


def test_msg_too_long(fake: FakeSlackApi, client: WebClient) -> None:
    error = api_error(client.chat_postMessage, channel=ALERTS, text="x" * 40_001)

    assert error.response["error"] == "msg_too_long"
    assert client.chat_postMessage(channel=ALERTS, text="x" * 40_000)["ok"] is True
    assert [len(m.text) for m in fake.messages(ALERTS)] == [40_000]


def test_form_encoded_post_with_token_field(fake: FakeSlackApi) -> None:
    # No Authorization header: the token travels as a form field, as Slack also accepts.
    tokenless = WebClient(base_url=fake.url, timeout=5)
    response = tokenless.api_call("chat.postMessage", params={
        "token": TOKEN, "channel": "#alerts", "text": "form", "blocks": json.dumps([SECTION])})

    assert response["channel"] == ALERTS
    assert fake.requests[-1].headers["content-type"] == "application/x-www-form-urlencoded"
    [stored] = fake.messages(ALERTS)
    assert (stored.text, stored.blocks) == ("form", [SECTION])


@pytest.mark.parametrize(("body", "code"), [(b"{not json", "invalid_json"), (b"[1, 2]", "json_not_object")])
def test_body_that_is_not_a_json_object(fake: FakeSlackApi, body: bytes, code: str) -> None:
    status, answer = raw_post(fake, "chat.postMessage", body, "application/json; charset=utf-8")

    assert status == 200
    assert answer == {"ok": False, "error": code}
    assert fake.messages(ALERTS) == []


def test_unknown_method(client: WebClient) -> None:
    error = api_error(client.api_call, "chat.postMesage", json={"channel": ALERTS, "text": "typo"})

    assert error.response.status_code == 404
    assert error.response["error"] == "unknown_method"


# chat.update


def test_update_changes_text_and_blocks_and_counts_edits(fake: FakeSlackApi, client: WebClient) -> None:
    posted = client.chat_postMessage(channel="#alerts", text="firing", blocks=[HEADER])
    resolved = {"type": "section", "text": {"type": "mrkdwn", "text": ":white_check_mark: resolved"}}

    response = client.chat_update(channel=ALERTS, ts=posted["ts"], text="resolved", blocks=[resolved])

    assert (response["channel"], response["ts"], response["text"]) == (ALERTS, posted["ts"], "resolved")
    assert response["message"]["blocks"] == [resolved]
    [message] = fake.messages(ALERTS)
    assert (message.ts, message.text, message.edits) == (posted["ts"], "resolved", 1)
    assert message.blocks == [resolved]
    assert message.history == [{"text": "firing", "blocks": [HEADER]}]

    # Text alone keeps the blocks, as Slack keeps them when `blocks` is left out.
    client.chat_update(channel=ALERTS, ts=posted["ts"], text="resolved again")
    [message] = fake.messages(ALERTS)
    assert (message.text, message.blocks, message.edits) == ("resolved again", [resolved], 2)
    assert [h["text"] for h in message.history] == ["firing", "resolved"]


def test_update_a_thread_reply(fake: FakeSlackApi, client: WebClient) -> None:
    parent = client.chat_postMessage(channel=ALERTS, text="alert")
    reply = client.chat_postMessage(channel=ALERTS, text="ack", thread_ts=parent["ts"])

    client.chat_update(channel=ALERTS, ts=reply["ts"], text="acknowledged by oncall")

    [top] = fake.messages(ALERTS)
    assert (top.text, top.edits) == ("alert", 0)
    assert [(r.text, r.edits) for r in top.replies] == [("acknowledged by oncall", 1)]


def test_update_unknown_ts_is_message_not_found(fake: FakeSlackApi, client: WebClient) -> None:
    other = client.chat_postMessage(channel="C0456OTHER", text="not in alerts")

    for ts in ("1700000000.000100", other["ts"]):
        error = api_error(client.chat_update, channel=ALERTS, ts=ts, text="edit")
        assert error.response["error"] == "message_not_found"
    assert fake.messages("C0456OTHER")[0].edits == 0


def test_update_needs_the_channel_id(fake: FakeSlackApi, client: WebClient) -> None:
    posted = client.chat_postMessage(channel="#alerts", text="firing")

    error = api_error(client.chat_update, channel="#alerts", ts=posted["ts"], text="resolved")

    assert error.response["error"] == "channel_not_found"
    assert fake.messages(ALERTS)[0].text == "firing"


def test_cant_update_someone_elses_message(fake: FakeSlackApi, client: WebClient) -> None:
    theirs = fake.post_foreign("#alerts", "a human wrote this")
    ours = client.chat_postMessage(channel=ALERTS, text="the bot wrote this")["ts"]
    fake.foreign.add(ours)  # mark one of the bot's own as not editable too

    for ts in (theirs, ours):
        error = api_error(client.chat_update, channel=ALERTS, ts=ts, text="edit")
        assert error.response["error"] == "cant_update_message"
    assert [(m.ts, m.text, m.edits) for m in fake.messages(ALERTS)] == [
        (theirs, "a human wrote this", 0), (ours, "the bot wrote this", 0)]


def test_update_checks_content_like_post(fake: FakeSlackApi, client: WebClient) -> None:
    posted = client.chat_postMessage(channel=ALERTS, text="firing")

    bad_blocks = api_error(client.chat_update, channel=ALERTS, ts=posted["ts"], text="x",
                           blocks=[{"type": "no_such_block"}])
    too_long = api_error(client.chat_update, channel=ALERTS, ts=posted["ts"], text="x" * 40_001)
    empty = api_error(client.api_call, "chat.update", json={"channel": ALERTS, "ts": posted["ts"]})

    assert bad_blocks.response["error"] == "invalid_blocks"
    assert too_long.response["error"] == "msg_too_long"
    assert empty.response["error"] == "no_text"
    assert fake.messages(ALERTS)[0].edits == 0


# Authentication


def test_auth_test(fake: FakeSlackApi, client: WebClient) -> None:
    response = client.auth_test()

    assert response.data == {
        "ok": True, "url": "https://fake.slack.com/", "team": "Fake", "user": "armor-bot",
        "team_id": "T000", "user_id": "U000", "bot_id": "B000",
    }
    [received] = fake.requests
    assert (received.path, received.body) == ("/api/auth.test", b"")


def test_invalid_auth_with_a_wrong_token(fake: FakeSlackApi) -> None:
    wrong = WebClient(token="xoxb-1111111111-1111111111111-WRONGWRONGWRONGWRONGWRONG", base_url=fake.url)

    assert api_error(wrong.chat_postMessage, channel=ALERTS, text="hi").response["error"] == "invalid_auth"
    assert api_error(wrong.auth_test).response["error"] == "invalid_auth"
    assert fake.messages(ALERTS) == []


def test_not_authed_without_a_token(fake: FakeSlackApi) -> None:
    anonymous = WebClient(base_url=fake.url, timeout=5)

    error = api_error(anonymous.chat_postMessage, channel=ALERTS, text="hi")

    assert error.response["error"] == "not_authed"
    assert "authorization" not in fake.requests[-1].headers
    assert fake.messages(ALERTS) == []


@pytest.mark.parametrize("code", ["token_revoked", "account_inactive"])
def test_token_error_sticks(fake: FakeSlackApi, client: WebClient, code: str) -> None:
    fake.token_error = code

    assert api_error(client.auth_test).response["error"] == code
    assert api_error(client.chat_postMessage, channel=ALERTS, text="hi").response["error"] == code
    assert fake.messages(ALERTS) == []


# Scripted answers


def test_scripted_rate_limit(fake: FakeSlackApi, client: WebClient) -> None:
    fake.script("chat.postMessage", rate_limited("7"))

    error = api_error(client.chat_postMessage, channel=ALERTS, text="first")

    assert error.response.status_code == 429
    assert error.response.headers["Retry-After"] == "7"
    assert error.response["ok"] is False
    assert error.response["error"] == "ratelimited"
    assert fake.messages(ALERTS) == []
    # The script is used up: the next call is answered normally.
    assert client.chat_postMessage(channel=ALERTS, text="second")["ok"] is True
    assert [m.text for m in fake.messages(ALERTS)] == ["second"]


def test_slack_sdk_retry_handler_honours_the_fake_429(
    fake: FakeSlackApi, mocker: MockerFixture
) -> None:
    # The handler sleeps with time.sleep (patched for every thread while this test runs; the fake
    # itself only sleeps for latency, none here).
    sleep = mocker.patch("slack_sdk.http_retry.builtin_handlers.time.sleep")
    retrying = WebClient(token=TOKEN, base_url=fake.url, timeout=5,
                         retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)])
    fake.script("chat.postMessage", rate_limited("3"))

    response = retrying.chat_postMessage(channel=ALERTS, text="after a wait")

    assert response["ok"] is True
    [(waited,), _] = sleep.call_args
    assert 3 <= waited < 4  # Retry-After plus slack_sdk's random jitter
    assert [r.path for r in fake.requests] == ["/api/chat.postMessage"] * 2
    assert [m.text for m in fake.messages(ALERTS)] == ["after a wait"]


def test_scripts_are_per_method(fake: FakeSlackApi, client: WebClient) -> None:
    fake.script("chat.update", error_reply("edit_window_closed"), error_reply("cant_update_message"))
    posted = client.chat_postMessage(channel=ALERTS, text="not scripted")
    assert client.auth_test()["ok"] is True

    first = api_error(client.chat_update, channel=ALERTS, ts=posted["ts"], text="e1")
    second = api_error(client.chat_update, channel=ALERTS, ts=posted["ts"], text="e2")
    third = client.chat_update(channel=ALERTS, ts=posted["ts"], text="e3")

    assert [first.response["error"], second.response["error"], third["ok"]] == [
        "edit_window_closed", "cant_update_message", True]
    assert fake.messages(ALERTS)[0].edits == 1


def test_scripted_missing_scope(fake: FakeSlackApi, client: WebClient) -> None:
    fake.script("chat.postMessage", missing_scope(provided="channels:read,chat:write.public"))

    error = api_error(client.chat_postMessage, channel=ALERTS, text="hi")

    assert error.response["error"] == "missing_scope"
    assert error.response["needed"] == "chat:write"
    assert error.response["provided"] == "channels:read,chat:write.public"


def test_scripted_non_json_answer(fake: FakeSlackApi, client: WebClient) -> None:
    fake.script("chat.postMessage", Reply(502, "<html>Bad Gateway</html>", {"Content-Type": "text/html"}))

    error = api_error(client.chat_postMessage, channel=ALERTS, text="hi")

    assert error.response.status_code == 502
    assert error.response["ok"] is False
    assert "Bad Gateway" in error.response["error"]  # slack_sdk's own message for a non-JSON body


def test_late_normal_answer_posts_although_the_client_gave_up(fake: FakeSlackApi) -> None:
    impatient = WebClient(token=TOKEN, base_url=fake.url, timeout=0.2)  # type: ignore[arg-type]
    fake.script("chat.postMessage", normal(delay=0.6))

    with pytest.raises(TimeoutError):
        impatient.chat_postMessage(channel=ALERTS, text="did it post?")

    # slack_sdk does not retry a read timeout (only connection errors): one request, one message.
    assert [m.text for m in fake.messages(ALERTS)] == ["did it post?"]
    assert len(fake.requests) == 1


def test_latency(client: WebClient, fake: FakeSlackApi) -> None:
    fake.latency = 0.15
    started = time.monotonic()

    assert client.auth_test()["ok"] is True
    assert time.monotonic() - started >= 0.15
