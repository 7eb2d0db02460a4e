"""armor-notify-webhook: POST armor-notify alerts as JSON to any HTTPS endpoint, signed.

Each notification is one ``POST`` of a JSON document (the alert, the rule that routed it, its
dedup key and the action) with two headers the receiver checks:

- ``X-Armor-Timestamp``: when the request was signed, in Unix seconds;
- ``X-Armor-Signature``: ``sha256=`` and the hex HMAC-SHA256, keyed with the shared secret, of
  the timestamp, a dot, and the exact body bytes (``f"{timestamp}.".encode() + body``).

Signing the timestamp with the body lets a receiver refuse replays: a captured request stops
verifying once its timestamp is older than the receiver's tolerance (:func:`verify_signature`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from armor_notify import (
    DestinationConfig,
    DestinationType,
    Notification,
    Outcome,
    Secret,
    SecretHttpsUrl,
    hookimpl,
    mask_url,
    parse_retry_after,
)
from armor_notify.http import Answer, HttpClient, NetworkError, Redactor
from armor_notify.secrets import secret_values

__version__ = "0.1.0"

SIGNATURE_HEADER = "X-Armor-Signature"
TIMESTAMP_HEADER = "X-Armor-Timestamp"
USER_AGENT = f"armor-notify-webhook/{__version__}"
MIN_SECRET_LENGTH = 16
DEFAULT_TOLERANCE = 300.0
"""Seconds a receiver accepts between the signed timestamp and its own clock."""

# Headers the plugin sets itself: a config may not replace them.
RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "transfer-encoding",
     SIGNATURE_HEADER.lower(), TIMESTAMP_HEADER.lower()}
)
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # an HTTP header name (RFC 9110)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BODY_EXCERPT = 200


# -- config ----------------------------------------------------------------------------------------


class WebhookConfig(DestinationConfig):
    """``type: webhook``: where to POST, the shared signing secret, and extra headers."""

    # The URL and the secret must never reach an error message, even as echoed input.
    model_config = ConfigDict(hide_input_in_errors=True)

    url: SecretHttpsUrl
    """The endpoint (https, or http on a loopback host); masked everywhere, path included."""
    secret: Secret
    """The shared key of the HMAC signature; keep it in ``${WEBHOOK_SECRET}``."""
    headers: dict[str, Secret] = Field(default_factory=dict)
    """Extra request headers (an ``Authorization`` token...); their values are masked too."""

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: Secret) -> Secret:
        if len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"use at least {MIN_SECRET_LENGTH} random characters, e.g. the output of "
                "python3 -c 'import secrets; print(secrets.token_hex(32))'"
            )
        return value

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, value: dict[str, Secret]) -> dict[str, Secret]:
        for name, header in value.items():
            if not _TOKEN.match(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"{name} is set by the webhook plugin itself and cannot be changed")
            if _CONTROL.search(header.get_secret_value()):
                raise ValueError(f"the value of {name} contains a line break or control character")
        return value

    def describe(self) -> str:
        names = f", headers {', '.join(sorted(self.headers))}" if self.headers else ""
        return f"webhook {mask_url(self.url.get_secret_value())} (signed){names}"


# -- what is sent ----------------------------------------------------------------------------------


def build_payload(notification: Notification) -> dict[str, Any]:
    """The JSON document: the alert as armor-notify accepted it, and what routed it."""
    return {
        "version": 1,
        "action": notification.action,
        "rule": notification.rule,
        "dedup_key": notification.dedup_key,
        "destination": notification.destination,
        "source": notification.source,
        "test": notification.test,
        "alert": notification.alert.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def sign(secret: str | bytes, timestamp: str | int, body: bytes) -> str:
    """``sha256=<hex>``: the HMAC-SHA256 of ``b"<timestamp>." + body`` keyed with ``secret``."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class SignatureError(ValueError):
    """A request that did not come from armor-notify with this secret, or came too late."""


def verify_signature(
    secret: str | bytes,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check a received request; raise :class:`SignatureError` saying what is wrong.

    ``body`` is the raw request body (before any JSON parsing); ``headers`` the request headers
    (any case). Requests signed more than ``tolerance`` seconds before or after ``now`` are
    refused, so a captured request cannot be replayed later.
    """
    found = {name.lower(): value for name, value in headers.items()}
    timestamp = found.get(TIMESTAMP_HEADER.lower(), "").strip()
    signature = found.get(SIGNATURE_HEADER.lower(), "").strip()
    if not timestamp or not signature:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    if not timestamp.isdigit():
        raise SignatureError(f"{TIMESTAMP_HEADER} is not a Unix time in seconds")
    skew = abs((time.time() if now is None else now) - int(timestamp))
    if skew > tolerance:
        raise SignatureError(
            f"signed {skew:.0f}s away from this clock (tolerance {tolerance:g}s): a replayed "
            "request, or a clock out of sync"
        )
    if not hmac.compare_digest(sign(secret, timestamp, body), signature):
        raise SignatureError("signature does not match the body (wrong secret, or altered body)")


# -- sending ---------------------------------------------------------------------------------------


class WebhookSender:
    """Posts one signed request per attempt and classifies the answer. Thread-safe."""

    bounded_waits = True
    """One post through HttpClient, whose timeout bounds the whole attempt."""

    def __init__(self, config: WebhookConfig) -> None:
        self._url = config.url.get_secret_value()
        self._key = config.secret.get_secret_value().encode()
        # The URL (with its path and tokens), the signing key and every header value: a
        # receiver's answer may quote any of them, and all are masked in what is reported.
        self._redactor = Redactor(secret_values(config))
        self._where = mask_url(self._url)
        # armor-notify's HTTP client: kept-alive connections shared by every I/O thread, proxy
        # and CA settings from the environment; never retries or follows redirects itself.
        self._http = HttpClient(self._url, {
            **{name: value.get_secret_value() for name, value in config.headers.items()},
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        })

    def send(self, notification: Notification) -> Outcome:
        body = encode(build_payload(notification))
        timestamp = str(int(time.time()))
        signed = {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(self._key, timestamp, body)}
        try:
            # The timeout bounds the whole attempt; a signed request is never redirected
            # elsewhere (the client does not follow redirects).
            answer = self._http.post(self._url, body, headers=signed,
                                     timeout=notification.timeout)
        except NetworkError as exc:  # no answer: timed out, refused, TLS trouble...
            outcome = exc.outcome(self._where, notification.timeout)
        else:
            outcome = self._classify(answer)
        return self._redactor.outcome(outcome)

    def _classify(self, answer: Answer) -> Outcome:
        status = answer.status
        said = f"HTTP {status} {answer.reason}".strip()
        excerpt = self._excerpt(answer.text)
        if excerpt:
            said += f": {excerpt}"
        if 200 <= status < 300:
            return Outcome.delivered(status=status)
        if status in (408, 429) or status >= 500:
            retry_after = parse_retry_after(answer.headers.get("Retry-After"))
            return Outcome.retry(said, retry_after=retry_after, status=status)
        if 300 <= status < 400:
            return Outcome.failed(
                said, status=status,
                hint="the receiver redirects; set url to the final address (a signed request "
                "is never sent on to another address)",
            )
        hint = None
        if status in (401, 403):
            hint = ("the receiver refused the request: check that it verifies with the same "
                    "secret and that both clocks are right (the timestamp must be recent)")
        elif status in (404, 405):
            hint = "check url: the receiver has no webhook endpoint there"
        return Outcome.failed(said, hint=hint, status=status)

    def _excerpt(self, text: str) -> str:
        # Masked before it is cut, so no half of a secret is left behind.
        text = " ".join(self._redactor.text(text).split())
        return text if len(text) <= _BODY_EXCERPT else text[: _BODY_EXCERPT - 1] + "…"

    def close(self) -> None:
        """Close the kept-alive connections (called when armor-notify is done with the sender)."""
        self._http.close()


# -- registering -----------------------------------------------------------------------------------

WEBHOOK = DestinationType(
    name="webhook",
    config_model=WebhookConfig,
    sender=WebhookSender,
    display_name="Webhook",
    send_resolved_default=True,
    default_rate_limit="none",
)


@hookimpl
def register_destination_types(register: Callable[[DestinationType], None]) -> None:
    register(WEBHOOK)
