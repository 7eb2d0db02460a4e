"""The built-in destinations pass the same conformance suite third-party plugins run.

Each class gives ``armor_notify.testing.DestinationConformance`` its destination type, configs
and a loopback receiver (this repository's protocol fakes) scripted to answer each attempt as
the suite asks; the inherited ``test_*`` methods do the rest, over the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from armor_notify_plugins.email import register_destination_types as register_email
from armor_notify_plugins.pagerduty import PAGERDUTY
from armor_notify_plugins.slack import SLACK
from fake_pagerduty import INVALID_ROUTING_KEY, FakePagerDuty, FakeResponse
from fake_slack import OK, FakeSlack, error, rate_limited
from fake_slack import Reply as SlackReply
from fake_smtp import (
    HOST,
    RecordingHandler,
    _authenticator,
    _server_tls,
    free_port,
    ignore_known_aiosmtpd_warnings,
)

from armor_notify import DestinationType
from armor_notify.testing import DELIVERED, DestinationConformance, Reply

PD_KEY = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"
SLACK_URL = "https://hooks.slack.com/services/T000/B000/SECRETPATHxxxxxxxx"
SMTP_PASSWORD = "s3cret-app-password"
# Long enough to outlast the suite's timeout many times over; the fakes end it when they stop.
HANG_SECONDS = 30.0


def _secret_fields(config: Mapping[str, Any], *names: str) -> list[str]:
    return [str(config[name]) for name in names if config.get(name)]


# -- PagerDuty -------------------------------------------------------------------------------------

_JUDGE = 0  # scripted status: let the fake judge the event as PagerDuty would
_HANG = -1  # scripted status: never answer (until the fake stops)


class ScriptedPagerDuty(FakePagerDuty):
    """The PagerDuty fake, with two more scripted answers: judge normally, and hang."""

    def _next_scripted(self) -> FakeResponse | None:
        answer = super()._next_scripted()
        if answer is not None and answer.status == _JUDGE:
            return None
        if answer is not None and answer.status == _HANG:
            self._stopping.wait(HANG_SECONDS)
            return FakeResponse(504, b"")
        return answer


def pagerduty_answer(reply: Reply) -> FakeResponse:
    if reply.kind == "delivered":
        return FakeResponse(_JUDGE)
    if reply.kind == "permanent":
        return FakeResponse.invalid_event(INVALID_ROUTING_KEY)
    if reply.kind == "hang":
        return FakeResponse(_HANG)
    if reply.retry_after is not None:
        return FakeResponse.too_many_requests(str(reply.retry_after))
    return FakeResponse.server_error(502)


class TestPagerDutyConformance(DestinationConformance):
    def destination_type(self) -> DestinationType:
        return PAGERDUTY

    def valid_config(self) -> dict[str, Any]:
        return {"integration_key": PD_KEY}

    def invalid_configs(self) -> Sequence[tuple[dict[str, Any], str]]:
        return [
            ({"integration_key": "u+abcdefghijklmnopqr"}, "integration_key"),  # a REST API key
            ({"integration_key": PD_KEY, "region": "mars"}, "region"),
            ({"integration_key": PD_KEY, "url": "http://events.example.com"}, "url"),
            ({"integration_key": PD_KEY, "region": "eu", "url": "https://pd.example.com"}, ""),
            ({"region": "us"}, "integration_key"),
        ]

    def secrets(self, config: Mapping[str, Any]) -> list[str]:
        return _secret_fields(config, "integration_key")

    @contextlib.contextmanager
    def receiver(self, replies: Sequence[Reply]) -> Iterator[dict[str, Any]]:
        with ScriptedPagerDuty() as fake:
            fake.script(*(pagerduty_answer(r) for r in replies))
            yield {"integration_key": PD_KEY, "url": fake.url}


# -- Slack -----------------------------------------------------------------------------------------


def slack_answer(reply: Reply) -> SlackReply:
    if reply.kind == "delivered":
        return OK
    if reply.kind == "permanent":
        return error("channel_is_archived")
    if reply.kind == "hang":
        return SlackReply(delay=HANG_SECONDS)
    if reply.retry_after is not None:
        return rate_limited(str(reply.retry_after))
    return error("rollup_error")


class TestSlackConformance(DestinationConformance):
    def destination_type(self) -> DestinationType:
        return SLACK

    def valid_config(self) -> dict[str, Any]:
        return {"webhook_url": SLACK_URL}

    def invalid_configs(self) -> Sequence[tuple[dict[str, Any], str]]:
        return [
            ({"webhook_url": SLACK_URL.replace("https:", "http:")}, "webhook_url"),
            ({"webhook_url": "hooks.slack.com/services/T000/B000/SECRETPATHxxxxxxxx"}, "webhook_url"),
            ({}, ""),
            ({"token": "xoxb-1111-2222-SECRETSECRETSECRET", "channel": "general"}, "channel"),
            ({"token": "SECRETSECRETSECRET-not-a-token", "channel": "C0123ALERTS"}, "token"),
            ({"token": "xoxb-1111-2222-SECRETSECRETSECRET"}, ""),
            ({"webhook_url": SLACK_URL, "token": "xoxb-1111-2222-SECRETSECRETSECRET",
              "channel": "C0123ALERTS"}, ""),
        ]

    def secrets(self, config: Mapping[str, Any]) -> list[str]:
        return _secret_fields(config, "webhook_url", "token")

    @contextlib.contextmanager
    def receiver(self, replies: Sequence[Reply]) -> Iterator[dict[str, Any]]:
        with FakeSlack() as fake:
            fake.script(*(slack_answer(r) for r in replies))
            yield {"webhook_url": fake.url}


# -- email -----------------------------------------------------------------------------------------


@dataclass
class ScriptedSMTPHandler(RecordingHandler):
    """Answers each session's MAIL command as the next scripted reply says, then records the
    message as usual. One delivery attempt is one SMTP session, so one MAIL."""

    script: deque[Reply] = field(default_factory=deque)

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        reply = self.script.popleft() if self.script else DELIVERED
        if reply.kind == "hang":
            await asyncio.sleep(HANG_SECONDS)  # cancelled when the controller stops
            return "421 4.4.2 Timeout"
        if reply.kind == "permanent":
            return "554 5.7.1 Message rejected: policy violation"
        if reply.kind == "retryable":
            return "451 4.3.0 Temporary local problem, try again later"
        return await super().handle_MAIL(server, session, envelope, address, mail_options)


def _email_type() -> DestinationType:
    registered: list[DestinationType] = []
    register_email(registered.append)
    return registered[0]


class TestEmailConformance(DestinationConformance):
    supports_retry_after = False  # SMTP has no way to ask for a delay

    def destination_type(self) -> DestinationType:
        return _email_type()

    def valid_config(self) -> dict[str, Any]:
        return {
            "host": "smtp.example.com",
            "username": "alerts@example.com",
            "password": SMTP_PASSWORD,
            "from": "AnomalyArmor <alerts@example.com>",
            "to": ["data-eng@example.com"],
        }

    def invalid_configs(self) -> Sequence[tuple[dict[str, Any], str]]:
        valid = self.valid_config()
        return [
            ({**valid, "to": ["a@example.com, b@example.com"]}, "to[0]"),
            ({**valid, "security": "tls"}, "security"),
            ({**valid, "host": "smtp.example.com/587"}, "host"),
            ({key: v for key, v in valid.items() if key != "username"}, ""),
            ({**valid, "security": "none"}, ""),  # unencrypted to a non-loopback host
        ]

    def secrets(self, config: Mapping[str, Any]) -> list[str]:
        return _secret_fields(config, "password")

    @contextlib.contextmanager
    def receiver(self, replies: Sequence[Reply]) -> Iterator[dict[str, Any]]:
        ignore_known_aiosmtpd_warnings()
        context, ca_file = _server_tls(self.tmp_path)
        handler = ScriptedSMTPHandler(script=deque(replies))
        port = free_port()
        controller = Controller(
            handler,
            hostname=HOST,
            port=port,
            server_hostname="fake-smtp.test",
            tls_context=context,
            require_starttls=True,
            auth_required=True,
            authenticator=_authenticator("alerts@example.com", SMTP_PASSWORD),
        )
        controller.start()
        try:
            yield {
                "host": HOST,
                "port": port,
                "security": "starttls",
                "ca_file": str(ca_file),
                "username": "alerts@example.com",
                "password": SMTP_PASSWORD,
                "from": "AnomalyArmor <alerts@example.com>",
                "to": ["data-eng@example.com"],
            }
        finally:
            controller.stop()
