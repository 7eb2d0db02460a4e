"""The ``slack`` destination: a Block Kit message posted to a Slack incoming webhook, or with a
bot token through Slack's Web API (:mod:`armor_notify_plugins.slack_api`), which can update the
message and reply in its thread when the incident is acknowledged or resolved.

Alert text is untrusted: an asset called ``<!channel>`` must not page a whole channel. So every
piece of it is escaped (``&``, ``<``, ``>``, the only characters Slack parses for mentions and
links), mrkdwn text objects are ``verbatim`` (no auto-linking of ``#channel`` or URLs), and the
payload never carries ``link_names`` or ``parse``, which would turn a bare ``@here`` into a mention.

Slack answers ``200 ok`` on success and a plain-text error code otherwise (``channel_is_archived``,
``invalid_token``…); the code is reported verbatim with a remedy hint.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from armor_notify import (
    DestinationConfig,
    DestinationType,
    HttpsUrl,
    Notification,
    Outcome,
    Secret,
    SecretHttpsUrl,
    Sender,
    StrictModel,
    hookimpl,
    mask_secret,
    mask_url,
    parse_retry_after,
)
from armor_notify.http import Answer, HttpClient, NetworkError, Redactor
from armor_notify.message import Message, and_more, build_digest, build_message
from armor_notify.secrets import ELLIPSIS
from armor_notify.templates import (
    Template,
    TemplateError,
    TemplateText,
    render_named,
    template_context,
    template_failed,
)

__all__ = [
    "SLACK",
    "SlackConfig",
    "SlackSender",
    "build_payload",
    "escape",
    "make_sender",
    "register_destination_types",
]

# Block Kit limits (docs.slack.dev/reference/block-kit; slack_sdk models/blocks).
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
# The top-level `text` is only the notification preview and fallback; Slack cuts at 40,000.
MAX_FALLBACK_TEXT = 3000
# Slack lists more schema changes than the shared default: a message has room, an inbox less so.
MAX_LISTED_CHANGES = 25

# What a URL may already contain (reserved characters and %-escapes), as requests' requote_uri.
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"

_STATE_EMOJI = {"resolved": ":white_check_mark:", "acknowledged": ":eyes:"}
_SEVERITY_EMOJI = {
    "critical": ":red_circle:",
    "warning": ":large_orange_circle:",
    "info": ":large_blue_circle:",
}

_REPORT_IT = (
    "armor-notify sent a message Slack rejected: please report it, with the alert that caused it"
)
_REVOKED = (
    "the webhook was revoked or removed: create a new incoming webhook and update "
    "webhook_url (SLACK_WEBHOOK_URL)"
)

ERROR_HINTS: Mapping[str, str] = {
    "invalid_payload": _REPORT_IT,
    "invalid_blocks": _REPORT_IT,
    "invalid_blocks_format": _REPORT_IT,
    "no_text": _REPORT_IT,
    "missing_text_or_fallback_or_attachments": _REPORT_IT,
    "too_many_attachments": _REPORT_IT,
    "invalid_token": _REVOKED,
    "no_service": _REVOKED,
    "no_service_id": _REVOKED,
    "no_team": _REVOKED,
    "no_active_hooks": (
        "the Slack app's incoming webhooks are turned off: turn on Incoming Webhooks in the "
        "app's settings, or create a new webhook and update webhook_url (SLACK_WEBHOOK_URL)"
    ),
    "team_disabled": "the Slack workspace was disabled: use a webhook from an active workspace",
    "action_prohibited": (
        "a Slack admin restriction blocks this app or channel: ask a workspace admin to allow "
        "the app to post there, or use a webhook for another channel"
    ),
    "posting_to_general_channel_denied": (
        "only admins may post in #general in this workspace: create the webhook for another "
        "channel, or ask an admin to allow it"
    ),
    "channel_not_found": (
        "the webhook's channel no longer exists: create a new webhook for an existing channel "
        "and update webhook_url (SLACK_WEBHOOK_URL)"
    ),
    "channel_is_archived": (
        "the channel was archived: unarchive it, or create a new webhook for an active channel "
        "and update webhook_url (SLACK_WEBHOOK_URL)"
    ),
    "user_not_found": (
        "the webhook posts to a user who no longer exists: create a new webhook for a channel "
        "and update webhook_url (SLACK_WEBHOOK_URL)"
    ),
    "rollup_error": "Slack had an internal error; the message will be sent again",
}

_RATE_LIMIT_HINT = (
    "Slack accepts about one message per second per webhook; armor-notify waits as Slack asks"
)
_UNEXPECTED_HINT = (
    "that is not Slack's answer to an incoming webhook: check that webhook_url is the URL Slack "
    "gave you (https://hooks.slack.com/services/…) and that no proxy is in between"
)
_TLS_HINT = (
    "the server's certificate did not verify: if a proxy inspects TLS, point REQUESTS_CA_BUNDLE "
    "at its CA bundle; otherwise something is intercepting the connection"
)
# An upstream body may be a proxy's HTML page: show enough to recognise it, not the whole page.
_MAX_REASON = 300


def escape(text: str) -> str:
    """Slack's escaping: ``&`` → ``&amp;`` (first), ``<`` → ``&lt;``, ``>`` → ``&gt;``; no more."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fit(text: str, limit: int) -> str:
    """``text`` escaped and cut to ``limit`` characters with an ellipsis, never inside an entity."""
    return _cut_escaped(escape(text), limit)


def _cut_escaped(escaped: str, limit: int) -> str:
    """Escaped text cut to ``limit`` characters with an ellipsis, never inside an entity."""
    if len(escaped) <= limit:
        return escaped
    cut = escaped[: max(0, limit - len(ELLIPSIS))]
    # After escaping, every '&' starts an entity; one without its ';' was cut in half.
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut.rstrip() + ELLIPSIS


def _code(text: str, limit: int) -> str:
    """``text`` as an inline code span (no mrkdwn styling inside), escaped and within ``limit``."""
    if "`" in text:  # a backtick would end the span early: show it as ordinary text instead
        return _fit(text, limit)
    return f"`{_fit(text, limit - 2)}`"


def _mrkdwn(text: str) -> dict[str, Any]:
    # verbatim: Slack does not auto-link bare URLs and #channel names in it.
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text)}


def _link_url(link: str) -> str:
    # Percent-encode what would end or split a <url|label> link ('>', '|', spaces, '<').
    return quote(link, safe=_URL_SAFE).replace("|", "%7C")


def _lines_within(head: str, lines: list[str], more: int, limit: int) -> str:
    """``head`` and as many ``lines`` as fit in ``limit``; the rest join ``and N more``."""
    kept = list(lines)
    while True:
        tail = [and_more(more)] if more else []
        text = "\n".join([head, *kept, *tail])
        if len(text) <= limit or not kept:
            return text if len(text) <= limit else text[:limit]
        kept.pop()
        more += 1


def _change_line(message: Message, index: int) -> str:
    change = message.changes[index]
    line = f"• {escape(change.kind)}"
    if change.column:
        line += f": {_code(change.column, 500)}"
    if change.detail:
        line += f" ({_fit(change.detail, 500)})"
    if change.breaking:
        line += " — *breaking*"
    return line


def build_digest_payload(notification: Notification) -> dict[str, Any]:
    """A digest: the headline, one section per asset listing its alerts (each linking to it),
    and the count of alerts not listed. Escaped and within Slack's limits like any message."""
    digest = build_digest(notification)
    blocks: list[dict[str, Any]] = [{
        "type": "header",
        "text": {"type": "plain_text", "text": _fit(f":package: Digest · {digest.headline}",
                                                    MAX_HEADER_TEXT), "emoji": True},
    }]
    room = MAX_BLOCKS - 3  # header, the "not listed" note, the context line
    unlisted = digest.left_out
    for index, group in enumerate(digest.groups):
        if index >= room:
            unlisted += sum(len(g.items) for g in digest.groups[index:])
            break
        lines = []
        for item in group.items:
            line = f"• {_fit(item.text, 600)}"
            if item.link:
                line += f" · <{escape(_link_url(item.link))}|{_fit(digest.link_text, 100)}>"
            lines.append(line)
        blocks.append(_section(_lines_within(f"*{_code(group.asset, 500)}*", lines, 0,
                                             MAX_SECTION_TEXT)))
    if unlisted:
        blocks.append(_section(f"_{escape(and_more(unlisted))} not listed here_"))
    context = f"{escape(digest.time_text)} · {digest.total} alerts"
    context += f" · from {_fit(notification.source, 100)} via armor-notify"
    blocks.append({"type": "context", "elements": [_mrkdwn(context)]})
    return {
        "text": _fit(f":package: Digest: {digest.headline}", MAX_FALLBACK_TEXT),
        "blocks": blocks[:MAX_BLOCKS],
        "unfurl_links": False,
        "unfurl_media": False,
    }


# -- templates ------------------------------------------------------------------------------------

Text = Annotated[Template, TemplateText(escape=escape)]
"""A template whose printed values are escaped as Slack needs (``& < >``)."""


class TextObject(StrictModel):
    """A Block Kit text object whose text is a template."""

    type: Literal["mrkdwn", "plain_text"] = "mrkdwn"
    text: Text
    emoji: bool | None = None
    """For ``plain_text``: show ``:emoji:`` codes as emoji."""

    def render(self, context: Mapping[str, Any], limit: int) -> dict[str, Any] | None:
        """The text object, cut to ``limit``; ``None`` when it renders empty (Slack refuses an
        empty text)."""
        text = _cut_escaped(self.text.render(context), limit)
        if not text.strip():
            return None
        if self.type == "mrkdwn":  # verbatim: no auto-linking of #channels or URLs, as built in
            return {"type": "mrkdwn", "text": text, "verbatim": True}
        shown: dict[str, Any] = {"type": "plain_text", "text": text}
        if self.emoji is not None:
            shown["emoji"] = self.emoji
        return shown


class HeaderBlock(StrictModel):
    type: Literal["header"]
    text: TextObject

    @field_validator("text")
    @classmethod
    def _plain(cls, value: TextObject) -> TextObject:
        if value.type != "plain_text":
            raise ValueError("a header's text is plain_text (Slack shows no mrkdwn there)")
        return value

    def render(self, context: Mapping[str, Any]) -> dict[str, Any] | None:
        text = self.text.render(context, MAX_HEADER_TEXT)
        return {"type": "header", "text": text} if text else None


class SectionBlock(StrictModel):
    type: Literal["section"]
    text: TextObject | None = None
    fields: Annotated[tuple[TextObject, ...], Field(max_length=MAX_FIELDS)] = ()

    @model_validator(mode="after")
    def _something(self) -> SectionBlock:
        if self.text is None and not self.fields:
            raise ValueError("a section needs text or fields")
        return self

    def render(self, context: Mapping[str, Any]) -> dict[str, Any] | None:
        block: dict[str, Any] = {"type": "section"}
        text = self.text.render(context, MAX_SECTION_TEXT) if self.text else None
        fields = [f for f in (f.render(context, MAX_FIELD_TEXT) for f in self.fields) if f]
        if text:
            block["text"] = text
        if fields:
            block["fields"] = fields
        return block if text or fields else None


class ContextBlock(StrictModel):
    type: Literal["context"]
    elements: Annotated[tuple[TextObject, ...], Field(min_length=1, max_length=MAX_CONTEXT_ELEMENTS)]

    def render(self, context: Mapping[str, Any]) -> dict[str, Any] | None:
        elements = [e for e in (e.render(context, MAX_FIELD_TEXT) for e in self.elements) if e]
        return {"type": "context", "elements": elements} if elements else None


class DividerBlock(StrictModel):
    type: Literal["divider"]

    def render(self, context: Mapping[str, Any]) -> dict[str, Any] | None:
        return {"type": "divider"}


Block = Annotated[HeaderBlock | SectionBlock | ContextBlock | DividerBlock,
                  Field(discriminator="type")]


class SlackTemplate(StrictModel):
    """``template:`` of a Slack destination (see docs/templates.md): the message's ``text``
    (the notification and fallback text) and its ``blocks``, each string a template."""

    text: Annotated[Template, TemplateText(escape=escape,
                                           max_length=MAX_FALLBACK_TEXT)] | None = None
    blocks: Annotated[tuple[Block, ...], Field(max_length=MAX_BLOCKS)] | None = None
    """``[]``: the text alone."""


def _templated(payload: dict[str, Any], template: SlackTemplate,
               notification: Notification) -> dict[str, Any]:
    """The built-in payload with the template's text and blocks in place of its own."""
    context = template_context(notification)
    if template.text is not None:
        text = render_named({"text": template.text}, context)["text"]
        if text.strip():
            payload["text"] = text
    if template.blocks is not None:
        blocks = []
        for index, block in enumerate(template.blocks):
            try:
                shown = block.render(context)
            except TemplateError as exc:
                raise exc.within(f"template.blocks[{index}]") from None
            if shown is not None:
                blocks.append(shown)
        payload["blocks"] = blocks
        if not blocks:  # none given, or every one rendered empty: the text alone
            del payload["blocks"]
    return payload


def build_payload(notification: Notification,
                  template: SlackTemplate | None = None) -> dict[str, Any]:
    """The JSON body for Slack: a Block Kit message within Slack's limits, plus a ``text`` fallback.

    Every alert-derived string is escaped; the payload never includes ``link_names`` or ``parse``.
    With a ``template``, its text and blocks replace the built-in ones (not for digests); a
    template that fails for this alert raises :class:`TemplateError`.
    """
    if notification.digest:
        return build_digest_payload(notification)
    if template is not None:
        return _templated(build_payload(notification), template, notification)
    message = build_message(notification, max_changes=MAX_LISTED_CHANGES)
    emoji = _STATE_EMOJI.get(message.state) or _SEVERITY_EMOJI.get(message.severity, ":bell:")

    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _fit(f"{emoji} {message.headline}", MAX_HEADER_TEXT),
                "emoji": True,
            },
        }
    ]
    if message.test_notice:
        blocks.append(_section(":test_tube: " + _fit(message.test_notice, MAX_SECTION_TEXT - 20)))

    title = f"*{_fit(message.title, MAX_SECTION_TEXT - 40)}*"
    if message.state == "resolved":
        title = f"Resolved: {title}"
    elif message.state == "acknowledged":
        title = f"Acknowledged: {title}"
    blocks.append(_section(title))

    fields = []
    for field in message.fields[:MAX_FIELDS]:
        if not field.value:
            continue
        label = f"*{escape(field.label)}*\n"
        room = MAX_FIELD_TEXT - len(label)
        value = _code(field.value, room) if field.label == "Asset" else _fit(field.value, room)
        fields.append(_mrkdwn(label + value))
    if fields:
        blocks.append({"type": "section", "fields": fields})

    # The resolved and acknowledged forms are short: the details were in the triggered message.
    if message.state == "triggered":
        if message.description:
            blocks.append(_section(_fit(message.description, MAX_SECTION_TEXT)))
        if message.changes or message.more_changes:
            head = "*Changes*"
            if message.changes_summary:
                head += f" · {escape(message.changes_summary)}"
            lines = [_change_line(message, i) for i in range(len(message.changes))]
            blocks.append(
                _section(_lines_within(head, lines, message.more_changes, MAX_SECTION_TEXT))
            )
        if message.freshness:
            blocks.append(_section(":hourglass: " + _fit(message.freshness, MAX_SECTION_TEXT - 20)))

    if message.link:
        url = _link_url(message.link)
        label = _fit(message.link_text or "View alert", 200)
        # A plain link, not a button: link buttons need an interactivity endpoint, or Slack
        # shows a warning after every click.
        link = f":link: <{escape(url)}|{label}>"
        if len(link) <= MAX_SECTION_TEXT:
            blocks.append(_section(link))

    context = f"{escape(message.time_text)} · alert {_code(message.alert_id, 600)}"
    context += f" · from {_fit(notification.source, 100)} via armor-notify"
    blocks.append({"type": "context", "elements": [_mrkdwn(context)]})

    fallback = f"{emoji} {message.summary}"
    if message.state == "triggered":
        fallback += f" ({notification.alert.asset.name})"
    return {
        "text": _fit(fallback, MAX_FALLBACK_TEXT),
        "blocks": blocks[:MAX_BLOCKS],
        "unfurl_links": False,
        "unfurl_media": False,
    }


_CHANNEL = re.compile(r"^(?:[CGD][A-Z0-9]{8,}|#[a-z0-9][a-z0-9._-]{0,79})$")


class SlackConfig(DestinationConfig):
    """``type: slack``: a Slack incoming webhook (``webhook_url``), or a bot posting to a
    channel through the Web API (``token`` and ``channel``)."""

    # The webhook URL and the token are credentials: keep them out of pydantic's error messages
    # too. (pydantic merges this with the base class's settings.)
    model_config = ConfigDict(hide_input_in_errors=True)

    webhook_url: SecretHttpsUrl | None = None
    """``https://hooks.slack.com/services/T…/B…/…`` (keep it in ``${SLACK_WEBHOOK_URL}``)."""
    token: Secret | None = None
    """A bot token, ``xoxb-…`` (keep it in ``${SLACK_BOT_TOKEN}``); needs the ``chat:write``
    scope, and the app invited to the channel."""
    channel: str | None = None
    """With ``token``: the channel's ID (``C0123ABCD``) or ``#name``."""
    api_url: HttpsUrl = "https://slack.com/api/"
    """With ``token``: where the Web API is (a proxy, or a loopback fake in tests)."""
    template: SlackTemplate | None = None
    """The message's text and blocks, from templates of the alert's fields."""

    @field_validator("token")
    @classmethod
    def _bot_token(cls, value: Secret | None) -> Secret | None:
        if value is not None and not value.get_secret_value().startswith(("xoxb-", "xoxp-")):
            raise ValueError("is not a Slack bot token: use the Bot User OAuth Token (xoxb-…) "
                             "from the app's OAuth & Permissions page")
        return value

    @field_validator("channel")
    @classmethod
    def _channel_id_or_name(cls, value: str | None) -> str | None:
        if value is not None and not _CHANNEL.match(value):
            raise ValueError("must be a channel ID (C0123ABCD: the channel's details, at the "
                             "bottom of About) or #name (lower case)")
        return value

    @field_validator("api_url")
    @classmethod
    def _ends_with_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

    @model_validator(mode="after")
    def _one_mode(self) -> SlackConfig:
        bot = self.token is not None or self.channel is not None
        if self.webhook_url is not None and bot:
            raise ValueError("give webhook_url (an incoming webhook) or token and channel (a "
                             "bot), not both")
        if self.webhook_url is None and not bot:
            raise ValueError("give webhook_url (an incoming webhook: ${SLACK_WEBHOOK_URL}), or "
                             "token and channel (a bot: ${SLACK_BOT_TOKEN} and C0123… or #name)")
        if bot and (self.token is None or self.channel is None):
            raise ValueError(f"a bot needs both token and channel: "
                             f"{'channel' if self.channel is None else 'token'} is missing")
        return self

    def describe(self) -> str:
        if self.token is not None:
            return (f"Slack {self.channel} as a bot (token "
                    f"{mask_secret(self.token.get_secret_value())})")
        assert self.webhook_url is not None
        return f"Slack webhook {mask_url(self.webhook_url.get_secret_value())}"

    def target_key(self) -> str | None:
        # A webhook posts to one channel; a bot is one app in one channel. The rate limit
        # follows (rate_limit_key's default): Slack's is per channel.
        if self.token is not None:
            return f"{self.api_url} {self.token.get_secret_value()} {self.channel}"
        assert self.webhook_url is not None
        return self.webhook_url.get_secret_value()


def make_sender(config: SlackConfig) -> Sender:
    """A webhook's sender, or with a token the Web API's."""
    if config.token is not None:
        from .slack_api import SlackApiSender

        return SlackApiSender(config)
    return SlackSender(config)


class SlackSender:
    """Posts one message per attempt to the configured webhook and classifies Slack's answer."""

    bounded_waits = True
    """One post through HttpClient, whose timeout bounds the whole attempt."""

    def __init__(self, config: SlackConfig) -> None:
        assert config.webhook_url is not None
        self._config = config
        self._url = config.webhook_url.get_secret_value()
        self._http = HttpClient(self._url, {"Content-Type": "application/json"})
        # A refusal may quote the webhook URL, its path or its token: all masked.
        self._redactor = Redactor([self._url])

    def close(self) -> None:
        """Close the kept-alive connections (a later ``send`` opens new ones)."""
        self._http.close()

    def preview(self, notification: Notification) -> dict[str, Any]:
        """The payload ``send`` would post, to the webhook (masked)."""
        return {"request": f"POST {mask_url(self._url)}",
                "payload": build_payload(notification, self._config.template)}

    def send(self, notification: Notification) -> Outcome:
        try:
            payload = build_payload(notification, self._config.template)
        except TemplateError as exc:
            return template_failed(exc, notification)
        body = json.dumps(payload, allow_nan=False).encode()
        where = mask_url(self._url)
        try:
            answer = self._http.post(self._url, body, timeout=notification.timeout)
        except NetworkError as exc:
            outcome = exc.outcome(where, notification.timeout, certificate_hint=_TLS_HINT,
                                  hint="check webhook_url and any proxy settings (HTTPS_PROXY, "
                                  "NO_PROXY)")
        else:
            outcome = self._classify(answer)
        return self._redactor.outcome(outcome)

    def _classify(self, answer: Answer) -> Outcome:
        status = answer.status
        body = self._scrub(answer.text.strip())
        if 200 <= status < 300 and body == "ok":
            return Outcome.delivered(status=status)
        code = body[:_MAX_REASON] if body else f"HTTP {status} {answer.reason}".strip()
        retry_after = parse_retry_after(answer.headers.get("Retry-After"))
        if status == 429:
            return Outcome.retry(
                code, retry_after=retry_after, hint=_RATE_LIMIT_HINT, status=status
            )
        if status >= 500:
            return Outcome.retry(
                code, retry_after=retry_after, hint=ERROR_HINTS.get(body), status=status
            )
        if 300 <= status < 400:
            return Outcome.failed(
                f"HTTP {status} redirect", hint=_UNEXPECTED_HINT, status=status
            )
        # 4xx, and a 2xx whose body is not "ok" (the message may have been posted, so a retry
        # could duplicate it): permanent either way.
        return Outcome.failed(code, hint=ERROR_HINTS.get(body, _UNEXPECTED_HINT), status=status)

    def _scrub(self, text: str) -> str:
        """Mask the webhook URL, its path and its tokens wherever upstream text quotes them."""
        return self._redactor.text(text)


SLACK_WEBHOOK_HOST = "hooks.slack.com"


def _from_url(url: str) -> dict[str, Any] | None:
    """A bare URL → the native config: Apprise's ``slack://TokenA/TokenB/TokenC``, or Slack's own
    ``https://hooks.slack.com/services/…``. Other ``https`` URLs are not Slack's: ``None`` passes
    them on (to the Apprise bridge, when it is installed)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "https":
        return _from_slack_tokens_url(url)
    if (parts.hostname or "").rstrip(".") != SLACK_WEBHOOK_HOST:
        return None
    if not parts.path.startswith("/services/") or len([p for p in parts.path.split("/") if p]) != 4:
        raise ValueError(
            "only Slack incoming-webhook URLs (https://hooks.slack.com/services/T…/B…/…) are "
            "supported"
        )
    if parts.query or parts.fragment or parts.username or parts.password or parts.port:
        raise ValueError("an incoming-webhook URL has no user, port, query or fragment")
    return {"webhook_url": url}


def _from_slack_tokens_url(url: str) -> dict[str, Any]:
    """``slack://TokenA/TokenB/TokenC`` (Apprise's webhook form) → the native config."""
    parts = urlsplit(url)
    tokens = [part for part in [parts.hostname or "", *parts.path.split("/")] if part]
    if parts.username or parts.query or parts.fragment or len(tokens) != 3:
        if tokens and tokens[0].lower().startswith("xox"):
            raise ValueError(
                "a bot token does not go in a URL (it would be shown wherever the URL is): "
                "write the destination out (type: slack, token: ${SLACK_BOT_TOKEN}, channel: "
                "C0123… or #name)"
            )
        raise ValueError(
            "only Apprise's incoming-webhook form slack://TokenA/TokenB/TokenC is supported "
            "(a webhook always posts to the channel it was created for, under the app's name); "
            "to use Apprise's other Slack options, write type: apprise with this url"
        )
    token_a, token_b, token_c = tokens
    return {"webhook_url": f"https://hooks.slack.com/services/{token_a.upper()}/{token_b.upper()}/{token_c}"}


SLACK = DestinationType(
    name="slack",
    config_model=SlackConfig,
    sender=make_sender,
    display_name="Slack",
    send_resolved_default=True,
    default_rate_limit="1/second",
    url_schemes=("slack", "https"),
    from_url=_from_url,
    test_reminder="",
    supports_digest=True,
)


@hookimpl
def register_destination_types(register: Callable[[DestinationType], None]) -> None:
    """Register the ``slack`` destination type."""
    register(SLACK)
