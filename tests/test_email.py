"""The ``email`` destination against real aiosmtpd servers on 127.0.0.1 (see fake_smtp.py)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import getaddresses, parsedate_to_datetime
from html.parser import HTMLParser
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from armor_notify_plugins import email as email_destination
from armor_notify_plugins.email import EmailConfig, EmailSender, build_email, email_subject
from conftest import run_cli
from fake_smtp import (
    FakeSMTPServer,
    closed_port,
    ignore_known_aiosmtpd_warnings,
    implicit_tls_server,
    plain_server,
    starttls_server,
)
from pydantic import ValidationError

from armor_notify import Alert, DestinationType, Notification, Outcome
from armor_notify.config import config_from_dict
from armor_notify.errors import ConfigError
from armor_notify.message import build_message
from armor_notify.plugins import PluginManager

PASSWORD = "s3cret-app-password-7f3k9q"

ALERT: dict[str, Any] = {
    "id": "alert_abc123",
    "event_type": "schema_change",
    "severity": "critical",
    "title": "3 columns removed from orders",
    "description": "Columns were dropped by migration 0042.\nDownstream dashboards may break.",
    "asset": {
        "id": "asset-1",
        "name": "analytics.public.orders",
        "data_source": "warehouse-prod",
        "environment": "production",
    },
    "changes": [
        {"type": "column_removed", "column": "email", "from": "varchar"},
        {"type": "column_removed", "column": "phone", "from": "varchar"},
        {"type": "column_added", "column": "contact_id", "to": "bigint"},
    ],
    "link": "https://app.anomalyarmor.ai/alerts/alert_abc123",
    "occurred_at": "2024-05-01T12:00:00Z",
}


def notification(*, test: bool = False, timeout: float = 5, **changes: Any) -> Notification:
    return Notification(
        alert=Alert.model_validate({**ALERT, **changes}),
        destination="email-data-eng",
        rule="Production Breaking Changes",
        dedup_key="anomalyarmor-production-breaking-changes-schema_change-asset-1",
        source="anomalyarmor",
        link_text="View in AnomalyArmor",
        timeout=timeout,
        test=test,
    )


def send(server: FakeSMTPServer, note: Notification | None = None, **overrides: Any) -> Outcome:
    config = EmailConfig.model_validate(server.config(**overrides))
    return EmailSender(config).send(note or notification())


def outcome_text(outcome: Outcome) -> str:
    return f"{outcome.reason} {outcome.hint} {outcome.details}"


@pytest.fixture
def tls_submission(tmp_path: Path) -> Iterator[FakeSMTPServer]:
    ignore_known_aiosmtpd_warnings()
    with starttls_server(tmp_path, password=PASSWORD) as server:
        yield server


@pytest.fixture
def tls_implicit(tmp_path: Path) -> Iterator[FakeSMTPServer]:
    ignore_known_aiosmtpd_warnings()
    with implicit_tls_server(tmp_path, password=PASSWORD) as server:
        yield server


@pytest.fixture
def relay() -> Iterator[FakeSMTPServer]:
    with plain_server() as server:
        yield server


@pytest.fixture(autouse=True)
def _no_ambient_trust(monkeypatch: pytest.MonkeyPatch) -> None:
    # The fake CA must be trusted only where a test says so.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


def parts(message: EmailMessage) -> tuple[str, str]:
    plain = message.get_body(preferencelist=("plain",))
    rich = message.get_body(preferencelist=("html",))
    assert isinstance(plain, EmailMessage) and isinstance(rich, EmailMessage)
    return plain.get_content(), rich.get_content()


class TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def html_tags_and_text(markup: str) -> tuple[list[str], str]:
    collector = TagCollector()
    collector.feed(markup)
    return collector.tags, "".join(collector.text)


# -- delivery over the three kinds of server -------------------------------------------------


def test_starttls_with_login_delivers_one_multipart_message_to_to_and_cc(
    tls_submission: FakeSMTPServer,
) -> None:
    outcome = send(
        tls_submission,
        to=["Data Eng <data-eng@example.com>", "oncall@example.com"],
        cc=["audit@example.org"],
    )

    assert outcome.status == "delivered", outcome_text(outcome)
    [received] = tls_submission.handler.received
    assert len(tls_submission.handler.peers) == 1, "one SMTP session for every recipient"
    assert received.tls and received.login == "alerts@example.com"
    assert received.mail_from == "alerts@example.com"
    assert received.rcpt_tos == ["data-eng@example.com", "oncall@example.com", "audit@example.org"]

    message = received.message
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["Subject"] == (
        "[AnomalyArmor] CRITICAL: 3 columns removed from orders (analytics.public.orders)"
    )
    assert message["From"] == "AnomalyArmor <alerts@example.com>"
    assert getaddresses([message["To"]]) == [
        ("Data Eng", "data-eng@example.com"),
        ("", "oncall@example.com"),
    ]
    assert message["Cc"] == "audit@example.org"
    assert "Bcc" not in message
    assert message["Message-ID"] == outcome.details["message_id"]
    assert message["Message-ID"].endswith("@example.com>")
    assert parsedate_to_datetime(message["Date"]).tzinfo is not None
    assert outcome.details["recipients"] == received.rcpt_tos


def test_implicit_tls_with_login_delivers(tls_implicit: FakeSMTPServer) -> None:
    outcome = send(tls_implicit, security="ssl")

    assert outcome.status == "delivered", outcome_text(outcome)
    [received] = tls_implicit.handler.received
    assert received.login == "alerts@example.com"
    assert received.rcpt_tos == ["data-eng@example.com"]
    assert received.message.get_content_type() == "multipart/alternative"


def test_plain_loopback_relay_delivers_without_login(relay: FakeSMTPServer) -> None:
    outcome = send(relay, security="none")

    assert outcome.status == "delivered", outcome_text(outcome)
    [received] = relay.handler.received
    assert received.login is None and not received.tls
    assert received.rcpt_tos == ["data-eng@example.com"]


def test_ssl_cert_file_is_honoured_like_the_system_store(
    tls_submission: FakeSMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tls_submission.ca_file is not None
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_submission.ca_file))

    outcome = send(tls_submission, ca_file=None)

    assert outcome.status == "delivered", outcome_text(outcome)


# -- what the message says -------------------------------------------------------------------


def test_text_and_html_parts_carry_the_same_content_as_the_slack_message(
    relay: FakeSMTPServer,
) -> None:
    note = notification()
    outcome = send(relay, note, security="none")
    assert outcome.status == "delivered", outcome_text(outcome)
    plain, rich = parts(relay.handler.received[0].message)
    _, html_text = html_tags_and_text(rich)
    content = build_message(note)

    expected = [
        content.headline,
        content.title,
        *(f"{field.label}: {field.value}" for field in content.fields),
        "Columns were dropped by migration 0042.",
        "Downstream dashboards may break.",
        *content.change_lines(),
        f"{content.link_text}: {content.link}",
        content.time_text,
    ]
    for line in expected:
        assert line in plain
    for field in content.fields:
        assert field.label in html_text and field.value in html_text
    for line in [content.headline, content.title, *content.change_lines(), content.link_text]:
        assert line in html_text
    assert f'href="{ALERT["link"]}"' in rich


def test_long_change_lists_end_with_and_n_more_in_both_parts(relay: FakeSMTPServer) -> None:
    changes = [{"type": "column_added", "column": f"col_{i}", "to": "int"} for i in range(25)]
    note = notification(changes=changes)
    more = build_message(note).more_changes
    assert more > 0

    send(relay, note, security="none")
    plain, rich = parts(relay.handler.received[0].message)

    assert f"and {more} more" in plain
    assert f"and {more} more" in html_tags_and_text(rich)[1]


def test_resolved_and_test_alerts_say_so_in_the_subject() -> None:
    resolved = notification(status="resolved")
    test_alert = notification(test=True)

    assert email_subject(resolved) == (
        "[AnomalyArmor] RESOLVED: 3 columns removed from orders (analytics.public.orders)"
    )
    assert email_subject(test_alert).startswith("[AnomalyArmor] Test Alert: ")
    assert email_subject(notification(status="acknowledged"), "[Data]").startswith(
        "[Data] ACKNOWLEDGED: "
    )


def test_test_notification_carries_the_test_notice(relay: FakeSMTPServer) -> None:
    note = notification(test=True)
    send(relay, note, security="none")
    plain, rich = parts(relay.handler.received[0].message)

    notice = build_message(note).test_notice
    assert notice and notice in plain
    assert notice in html_tags_and_text(rich)[1]


def test_non_ascii_names_and_titles_survive_the_trip(relay: FakeSMTPServer) -> None:
    outcome = send(
        relay,
        notification(title="Spalte „straße“ entfernt"),
        security="none",
        **{"from": "Datenqualität <alerts@example.com>"},
    )

    assert outcome.status == "delivered", outcome_text(outcome)
    message = relay.handler.received[0].message
    assert message["Subject"].endswith("Spalte „straße“ entfernt (analytics.public.orders)")
    assert message["From"] == "Datenqualität <alerts@example.com>"


# -- header injection and HTML escaping ------------------------------------------------------

def header_lines(head: bytes) -> list[str]:
    """The names of the headers in a serialised header block (folded lines start with a space)."""
    return [
        line.split(b":", 1)[0].decode()
        for line in head.splitlines()
        if line and not line[:1].isspace()
    ]


HOSTILE = "Orders\r\nBcc: victim@evil.example\u2028X-Injected: yes <script>alert(1)</script>"


def test_line_breaks_in_alert_text_never_become_headers(relay: FakeSMTPServer) -> None:
    note = notification(
        title=HOSTILE,
        description=HOSTILE,
        asset={"id": "asset-1", "name": HOSTILE, "data_source": "dw\r\nCc: victim@evil.example"},
    )
    outcome = send(relay, note, security="none")

    assert outcome.status == "delivered", outcome_text(outcome)
    [received] = relay.handler.received
    message = received.message
    assert received.rcpt_tos == ["data-eng@example.com"]
    assert sorted(message.keys()) == sorted(
        ["Subject", "From", "To", "Date", "Message-ID", "Auto-Submitted", "MIME-Version",
         "Content-Type"]
    )
    assert "\n" not in message["Subject"] and "\u2028" not in message["Subject"]
    header_names = header_lines(received.content.split(b"\r\n\r\n", 1)[0])
    assert "Bcc" not in header_names and "X-Injected" not in header_names


def test_html_part_escapes_every_piece_of_alert_text(relay: FakeSMTPServer) -> None:
    note = notification(
        title=HOSTILE,
        description='<img src=x onerror="alert(1)"> & <b>bold</b>',
        asset={"id": "asset-1", "name": "<script>steal()</script>", "environment": "<i>prod"},
        changes=[{"type": "column_removed", "column": "<script>x</script>"}],
    )
    send(relay, note, security="none")
    plain, rich = parts(relay.handler.received[0].message)
    tags, text = html_tags_and_text(rich)

    assert "script" not in tags and "img" not in tags and "i" not in tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rich
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in rich
    assert "<script>steal()</script>" in text  # shown to the reader as text, never run
    assert "<script>steal()</script>" in plain  # the text part needs no escaping


def test_subject_collapses_line_breaks_even_when_the_alert_skipped_validation() -> None:
    alert = Alert.model_validate(ALERT)
    raw = alert.model_copy(
        update={
            "title": "Late\r\nBcc: victim@evil.example",
            "asset": alert.asset.model_copy(update={"name": "db.t\u2028X-Injected: 1\x00"}),
        }
    )
    note = Notification(
        alert=raw, destination="d", rule="r", dedup_key="k", source="anomalyarmor",
        link_text="View", timeout=1,
    )
    config = EmailConfig.model_validate(
        {"host": "localhost", "security": "none", "from": "a@example.com", "to": ["b@example.com"]}
    )

    message = build_email(config, note)

    assert message["Subject"] == (
        "[AnomalyArmor] CRITICAL: Late Bcc: victim@evil.example (db.t X-Injected: 1)"
    )
    header_names = header_lines(message.as_bytes().split(b"\n\n", 1)[0])
    assert "Bcc" not in header_names and "X-Injected" not in header_names


# -- failures and how they are classified ----------------------------------------------------


def test_wrong_password_fails_with_the_servers_535_reply(tls_submission: FakeSMTPServer) -> None:
    wrong = "not-the-password-a8d7f6"
    outcome = send(tls_submission, password=wrong)

    assert outcome.status == "failed"
    assert "535 5.7.8 Authentication credentials invalid" in outcome.reason
    assert outcome.hint and "app password" in outcome.hint
    assert wrong not in outcome_text(outcome) and PASSWORD not in outcome_text(outcome)
    assert tls_submission.handler.received == []
    # One failed login on the server, not one per mechanism (providers lock accounts on those).
    assert tls_submission.auth_attempts == ["PLAIN"]


@pytest.mark.parametrize(("security", "fixture"),
                         [("starttls", "tls_submission"), ("ssl", "tls_implicit")])
def test_a_login_is_one_auth_command_with_plain(
    security: str, fixture: str, request: pytest.FixtureRequest
) -> None:
    server: FakeSMTPServer = request.getfixturevalue(fixture)
    assert send(server, security=security).status == "delivered"
    assert server.auth_attempts == ["PLAIN"]
    assert [r.login for r in server.handler.received] == [server.username]


def test_a_non_ascii_password_logs_in(tmp_path: Path) -> None:
    # smtplib's login() cannot send one (UnicodeEncodeError); PLAIN carries UTF-8 (RFC 4616).
    ignore_known_aiosmtpd_warnings()
    with starttls_server(tmp_path, password="pässwörd-ü€") as server:
        assert send(server).status == "delivered"
    assert server.auth_attempts == ["PLAIN"]


def test_login_is_used_when_plain_is_not_offered(tmp_path: Path) -> None:
    ignore_known_aiosmtpd_warnings()
    with starttls_server(tmp_path, password=PASSWORD, without_mechanisms=("PLAIN",)) as server:
        assert send(server).status == "delivered"
        wrong = send(server, password="not-the-password-a8d7f6")
    assert server.auth_attempts == ["LOGIN", "LOGIN"]
    assert wrong.status == "failed" and "535" in wrong.reason


def test_a_server_without_plain_or_login_is_told_apart(tmp_path: Path) -> None:
    ignore_known_aiosmtpd_warnings()
    with starttls_server(tmp_path, password=PASSWORD,
                         without_mechanisms=("PLAIN", "LOGIN")) as server:
        outcome = send(server)
    assert outcome.status == "failed"
    assert "offers no login armor-notify uses" in outcome.reason
    assert server.auth_attempts == [] and PASSWORD not in outcome_text(outcome)


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_untrusted_certificate_fails_with_a_ca_file_hint(
    security: str, tmp_path: Path
) -> None:
    ignore_known_aiosmtpd_warnings()
    start = starttls_server if security == "starttls" else implicit_tls_server
    with start(tmp_path, password=PASSWORD) as server:
        outcome = send(server, security=security, ca_file=None)
        assert server.handler.received == []

    assert outcome.status == "failed"
    assert "certificate" in outcome.reason and "could not be verified" in outcome.reason
    assert outcome.hint and "ca_file" in outcome.hint and "SSL_CERT_FILE" in outcome.hint
    assert PASSWORD not in outcome_text(outcome)


def test_verify_false_connects_to_an_untrusted_server_and_warns(
    tls_submission: FakeSMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=email_destination.__name__):
        outcome = send(tls_submission, ca_file=None, verify=False)

    assert outcome.status == "delivered", outcome_text(outcome)
    assert "verification is OFF" in caplog.text
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        ("mail_reply", "451 4.3.0 Mail server temporarily rejected message"),
        ("rcpt_reply", "450 4.2.1 Mailbox temporarily unavailable"),
        ("data_reply", "452 4.3.1 Insufficient system storage"),
    ],
)
def test_4xx_replies_are_retried(relay: FakeSMTPServer, command: str, reply: str) -> None:
    setattr(relay.handler, command, reply)

    outcome = send(relay, security="none")

    assert outcome.status == "retry"
    assert reply in outcome.reason


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        ("mail_reply", "553 5.7.1 <alerts@example.com>: Sender address rejected: not owned by user"),
        ("data_reply", "554 5.7.1 Message rejected: content looks like spam"),
    ],
)
def test_5xx_replies_fail_with_the_reply_verbatim(
    relay: FakeSMTPServer, command: str, reply: str
) -> None:
    setattr(relay.handler, command, reply)

    outcome = send(relay, security="none")

    assert outcome.status == "failed"
    assert reply in outcome.reason
    assert outcome.hint


def test_one_refused_recipient_is_reported_by_address(relay: FakeSMTPServer) -> None:
    rejection = "550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown"
    relay.handler.rcpt_replies["gone@example.com"] = rejection

    outcome = send(relay, security="none", to=["data-eng@example.com", "gone@example.com"])

    assert outcome.status == "delivered"
    assert outcome.details["refused_recipients"] == {"gone@example.com": rejection}
    assert outcome.details["recipients"] == ["data-eng@example.com"]
    assert "gone@example.com" in outcome.reason and "refused" in outcome.reason
    assert relay.handler.received[0].rcpt_tos == ["data-eng@example.com"]


def test_every_recipient_refused_fails_listing_each(relay: FakeSMTPServer) -> None:
    relay.handler.rcpt_reply = "550 5.1.1 Recipient address rejected: User unknown"

    outcome = send(relay, security="none", to=["a@example.com"], cc=["b@example.com"])

    assert outcome.status == "failed"
    assert outcome.details["refused_recipients"] == {
        "a@example.com": "550 5.1.1 Recipient address rejected: User unknown",
        "b@example.com": "550 5.1.1 Recipient address rejected: User unknown",
    }
    assert "a@example.com" in outcome.reason and "b@example.com" in outcome.reason
    assert relay.handler.received == []


def test_refused_connection_is_retried() -> None:
    config = EmailConfig.model_validate(
        {"host": "127.0.0.1", "port": closed_port(), "security": "none",
         "from": "a@example.com", "to": ["b@example.com"]}
    )

    outcome = EmailSender(config).send(notification(timeout=1))

    assert outcome.status == "retry"
    assert "refused" in outcome.reason


def test_a_server_that_never_answers_times_out_and_is_retried() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # the kernel completes the handshake; nobody ever says 220
        config = EmailConfig.model_validate(
            {"host": "127.0.0.1", "port": silent.getsockname()[1], "security": "starttls",
             "from": "a@example.com", "to": ["b@example.com"]}
        )
        outcome = EmailSender(config).send(notification(timeout=0.2))

    assert outcome.status == "retry"
    assert "within 0.2 s" in outcome.reason


def test_starttls_required_but_not_offered_fails_clearly(relay: FakeSMTPServer) -> None:
    outcome = send(relay, security="starttls")

    assert outcome.status == "failed"
    assert "does not offer STARTTLS" in outcome.reason
    assert relay.handler.received == []


def test_implicit_tls_against_a_plain_server_fails_with_a_security_hint(
    relay: FakeSMTPServer,
) -> None:
    outcome = send(relay, security="ssl")

    assert outcome.status == "failed"
    assert "TLS handshake" in outcome.reason
    assert outcome.hint and "security: starttls" in outcome.hint


def test_plain_session_against_a_starttls_only_server_fails_with_the_530_reply(
    tls_submission: FakeSMTPServer,
) -> None:
    outcome = send(tls_submission, security="none", username=None, password=None)

    assert outcome.status == "failed"
    assert "530 Must issue a STARTTLS command first" in outcome.reason
    assert outcome.hint and "starttls" in outcome.hint


def test_login_without_tls_fails_because_auth_is_not_offered(
    tls_submission: FakeSMTPServer,
) -> None:
    outcome = send(tls_submission, security="none")

    assert outcome.status == "failed"
    assert "AUTH" in outcome.reason
    assert PASSWORD not in outcome_text(outcome)


# -- config ----------------------------------------------------------------------------------


def config(**values: Any) -> EmailConfig:
    base = {"host": "smtp.example.com", "from": "alerts@example.com", "to": ["a@example.com"]}
    return EmailConfig.model_validate({**base, **values})


def errors(**values: Any) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        config(**values)
    return [(tuple(e["loc"]), e["msg"]) for e in caught.value.errors()]


@pytest.mark.parametrize(
    ("security", "port"), [("starttls", 587), ("ssl", 465), ("none", 25)]
)
def test_port_defaults_follow_the_security_mode(security: str, port: int) -> None:
    assert config(host="localhost", security=security).port == port
    assert config(host="localhost", security=security, port=2525).port == 2525


def test_describe_names_server_mode_and_recipients_but_never_the_password() -> None:
    configured = config(
        to=["Team A <a@x.example>", "b@y.example"],
        username="alerts@example.com",
        password=PASSWORD,
    )

    assert configured.describe() == (
        "email via smtp.example.com:587 (starttls) to a@x.example, b@y.example"
    )
    assert PASSWORD not in configured.describe()
    assert PASSWORD not in repr(configured) and PASSWORD not in str(configured)
    assert "certificate NOT verified" in config(verify=False).describe()


def test_security_none_is_only_for_loopback_unless_allowed() -> None:
    [(location, message)] = errors(security="none")
    assert location == ()
    assert "security: none" in message and "smtp.example.com" in message

    assert config(security="none", allow_insecure=True).security == "none"
    for loopback in ("localhost", "127.0.0.1", "::1", "[::1]"):
        assert config(host=loopback, security="none").security == "none"


@pytest.mark.parametrize(
    "bad",
    [
        "a@example.com, b@example.com",
        "a@example.com; b@example.com",
        "victim@example.com\r\nBcc: other@evil.example",
        "victim@example.com\nBcc: other@evil.example",
        "victim@example.com\u2028",
        "nobody",
        "nobody@",
        "@example.com",
        "a@@example.com",
        "<a@example.com",
        "Group: a@example.com;",
        "",
    ],
)
def test_bad_addresses_are_refused_with_their_path_and_value(bad: str) -> None:
    [(location, message)] = errors(to=["ok@example.com", bad])
    assert location == ("to", 1)
    if bad:
        assert repr(bad) in message

    [(location, _)] = errors(cc=[bad])
    assert location == ("cc", 0)
    [(location, _)] = errors(**{"from": bad})
    assert location == ("from",)


def test_addresses_are_normalised_and_display_names_kept() -> None:
    configured = config(
        to='"Müller, Anna" <anna@bücher.example>',
        **{"from": "AnomalyArmor <alerts@example.com>"},
    )
    assert configured.to == ('"Müller, Anna" <anna@xn--bcher-kva.example>',)
    assert configured.from_ == "AnomalyArmor <alerts@example.com>"


def test_credentials_go_together_and_never_appear_in_errors() -> None:
    [(_, message)] = errors(username="alerts@example.com")
    assert "password is missing" in message
    [(_, message)] = errors(password=PASSWORD)
    assert "username is missing" in message and PASSWORD not in message
    [(_, message)] = errors(username="alerts@example.com", password="")
    assert "password is empty" in message


def test_recipients_are_required() -> None:
    assert errors(to=[]) == [(("to",), "Value error, list at least one recipient address")]


def test_ca_file_must_exist_and_hold_certificates(tmp_path: Path) -> None:
    [(location, message)] = errors(ca_file=str(tmp_path / "missing.pem"))
    assert location == ("ca_file",) and "no such file" in message

    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    [(location, message)] = errors(ca_file=str(junk))
    assert location == ("ca_file",) and "PEM" in message


def test_unknown_options_are_refused() -> None:
    [(location, _)] = errors(bcc=["hidden@example.com"])
    assert location == ("bcc",)


# -- registration ----------------------------------------------------------------------------


def test_registers_the_email_destination_type() -> None:
    registered: list[DestinationType] = []
    email_destination.register_destination_types(registered.append)

    [dtype] = registered
    assert dtype.name == "email" and dtype.display_name == "email"
    assert dtype.config_model is EmailConfig
    assert dtype.send_resolved_default is False
    assert dtype.default_rate_limit == "none"
    assert isinstance(dtype.sender(config()), EmailSender)


def test_the_entry_point_names_the_email_package() -> None:
    # The destination is a package (compose, transport, outcomes…); its entry point is the package.
    points = {ep.name: ep for ep in metadata.entry_points(group="armor_notify")}
    assert points["email"].value == "armor_notify_plugins.email"
    assert points["email"].load() is email_destination
    assert PluginManager().load().registry.destination_types["email"] is email_destination.EMAIL


def test_config_errors_name_the_destination_path() -> None:
    registry = PluginManager().load().registry
    spec = {
        "type": "email",
        "host": "smtp.example.com",
        "from": "alerts@example.com",
        "to": ["ok@example.com", "victim@example.com\r\nBcc: other@evil.example"],
    }

    with pytest.raises(ConfigError) as caught:
        config_from_dict({"version": 1, "destinations": {"email-data-eng": spec}}, registry)

    assert (
        "destinations.email-data-eng.to[1]: 'victim@example.com\\r\\nBcc: other@evil.example' "
        "contains a line break or control character"
    ) in str(caught.value)


@pytest.mark.slow
def test_armor_notify_test_sends_a_test_email_end_to_end(
    relay: FakeSMTPServer, tmp_path: Path
) -> None:
    config_file = tmp_path / "armor-notify.yaml"
    config_file.write_text(
        "version: 1\n"
        "destinations:\n"
        "  email-data-eng:\n"
        "    type: email\n"
        f"    host: 127.0.0.1\n    port: {relay.port}\n    security: none\n"
        "    from: AnomalyArmor <alerts@example.com>\n"
        "    to: [data-eng@example.com]\n    cc: [audit@example.com]\n"
    )

    result = run_cli("test", "email-data-eng", "--config", str(config_file))

    assert result.returncode == 0, result.stderr
    assert "Success! Test event sent to email" in result.stdout
    [received] = relay.handler.received
    assert received.rcpt_tos == ["data-eng@example.com", "audit@example.com"]
    assert received.message["Subject"].startswith("[AnomalyArmor] Test Alert: ")
    plain, _ = parts(received.message)
    assert "No action is needed" in plain
