"""A deliberately broken plugin for the tests: it was written against an armor-notify API that
does not exist, so importing it fails (as a plugin built for a newer armor-notify would)."""

from __future__ import annotations

from typing import Any

from armor_notify import DestinationType, hookimpl, register_webhook_signer


@hookimpl
def register_destination_types(register: Any) -> None:
    register(register_webhook_signer(DestinationType))
