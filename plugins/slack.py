"""The ``slack`` destination: a Block Kit message posted to a Slack incoming webhook, or with a
bot token through Slack's Web API (:mod:`armor_notify_plugins.slack_api`), which can update the
message and reply in its thread when the incident is acknowledged or resolved.

Alert text is untrusted: an asset called ``<!channel>`` must not page a whole channel. So every
piece of it is escaped (``&``, ``<``, ``>``, the only characters Slack parses for mentions and
links), mrkdwn text objects are ``verbatim`` (no auto-linking of ``#channel`` or URLs), and the
payload never carries ``link_names`` or ``parse``, which would turn a bare ``@here`` into a mention.

Slack answers ``200 ok`` on success and a plain-text error code otherwise (``channel_is_archived``,
``invalid_token``…); the code is reported verbatim with a remedy hint.

This module holds the config, its template blocks and Slack's escaping; :mod:`.slack_sender` builds
the payload and posts it, and is imported when the first sender is made, so checking a config
never loads it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from armor_notify import (
    DestinationConfig,
    DestinationType,
    HttpsUrl,
    Secret,
    SecretHttpsUrl,
    Sender,
    StrictModel,
    hookimpl,
    mask_secret,
    mask_url,
)
from armor_notify.secrets import ELLIPSIS
from armor_notify.templates import Template, TemplateText

__all__ = [
    "SLACK",
    "SlackConfig",
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

def escape(text: str) -> str:
    """Slack's escaping: ``&`` → ``&amp;`` (first), ``<`` → ``&lt;``, ``>`` → ``&gt;``; no more."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


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
    from .slack_sender import SlackSender

    return SlackSender(config)


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
