"""Masking of secrets for every output: logs, errors, reprs, tables and JSON."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

ELLIPSIS = "…"


def mask_secret(value: str) -> str:
    """Show only enough of a secret to recognise it: ``a1b2…o5p6``.

    Short values (under 16 characters) show nothing at all, since four characters from each end
    would reveal half of them.
    """
    if len(value) < 16:
        return ELLIPSIS
    return f"{value[:4]}{ELLIPSIS}{value[-4:]}"


def mask_url(url: str) -> str:
    """Keep a URL's scheme, host and port; elide credentials, path, query and fragment.

    Webhook URLs carry their secret in the path, so ``https://hooks.slack.com/services/T0/B0/XX``
    becomes ``https://hooks.slack.com/…``.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return ELLIPSIS
    if not parts.scheme or not host:
        return ELLIPSIS
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    tail = f"/{ELLIPSIS}" if (parts.path not in ("", "/") or parts.query or parts.fragment) else ""
    return f"{parts.scheme}://{netloc}{tail}"


class Secret(SecretStr):
    """A string that never shows itself: reprs and ``str()`` give ``a1b2…o5p6``.

    Use it for every credential in a destination's config model; call ``.get_secret_value()``
    only where the secret goes onto the wire.
    """

    def _display(self) -> str:
        return mask_secret(self.get_secret_value())


class SecretUrl(SecretStr):
    """A URL whose path or credentials are secret (a Slack webhook): shown as ``https://host/…``."""

    def _display(self) -> str:
        return mask_url(self.get_secret_value())


def redact(text: str, secrets: list[str]) -> str:
    """Replace every occurrence of each secret in ``text`` with its masked form.

    A last line of defence for messages built from upstream errors (an exception from an HTTP
    library may quote the URL it failed on).
    """
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        if secret in text:
            masked = mask_url(secret) if "://" in secret else mask_secret(secret)
            text = text.replace(secret, masked)
    return text


def secret_values(model: Any) -> list[str]:
    """Every secret value held by a pydantic model: fields typed ``SecretStr`` (or subclasses),
    also inside dicts, lists, tuples and nested models (a plugin's ``headers: dict[str, Secret]``)."""
    found: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, dict):
            for item in value.values():
                collect(item)
        elif isinstance(value, (list, tuple, set, frozenset)):
            for item in value:
                collect(item)
        elif hasattr(type(value), "model_fields"):
            for name in type(value).model_fields:
                collect(getattr(value, name, None))

    for name in type(model).model_fields:
        collect(getattr(model, name, None))
    return found
