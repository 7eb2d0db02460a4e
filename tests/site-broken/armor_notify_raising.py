"""A deliberately broken plugin for the tests: its registration hook raises."""

from __future__ import annotations

from typing import Any

from armor_notify import hookimpl


@hookimpl
def register_destination_types(register: Any) -> None:
    raise RuntimeError("settings file ~/.config/raising.toml not found")
