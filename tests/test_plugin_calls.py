"""Registration hooks are called through pluggy, one plugin at a time.

Going through pluggy (never calling an implementation by hand) is what lets a hook gain an
argument without breaking the plugins written before it, what makes hook wrappers and
``ARMOR_NOTIFY_TRACE_PLUGINS`` work, and one call per plugin keeps an exception with its plugin.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pluggy
import pytest

from armor_notify import DestinationConfig, DestinationType, Outcome, hookimpl
from armor_notify.plugins import TRACE_ENV, PluginManager, call_for_plugin


class _Cfg(DestinationConfig):
    pass


class _Sender:
    def __init__(self, config: _Cfg) -> None:
        self.config = config

    def send(self, notification: Any) -> Outcome:
        return Outcome.delivered()


INLINE = DestinationType("inline", _Cfg, _Sender)

hookspec = pluggy.HookspecMarker("armor_notify")


class WidgetSpecV2:
    """A throwaway hook contract, as it stands after ``register_widgets`` gained ``settings``
    (version 1 had ``register_widgets(register)``)."""

    @hookspec
    def register_widgets(self, register: Callable[[str], None], settings: Mapping[str, str]) -> None:
        """Register widgets; ``settings`` is new in version 2."""


class WrittenForV1:
    """A plugin written before ``settings`` existed: it declares ``register`` only."""

    @staticmethod
    @hookimpl
    def register_widgets(register: Callable[[str], None]) -> None:
        register("old-widget")


class WrittenForV2:
    @staticmethod
    @hookimpl
    def register_widgets(register: Callable[[str], None], settings: Mapping[str, str]) -> None:
        register(f"new-widget-{settings['colour']}")


def test_a_hook_that_gains_an_argument_passes_each_plugin_only_what_it_declares() -> None:
    pm = pluggy.PluginManager("armor_notify")
    pm.add_hookspecs(WidgetSpecV2)
    pm.register(WrittenForV1, name="v1")
    pm.register(WrittenForV2, name="v2")
    registered: list[str] = []

    call_for_plugin(pm, "register_widgets", "v1", register=registered.append,
                    settings={"colour": "blue"})
    assert registered == ["old-widget"]  # this plugin's implementation alone was called
    call_for_plugin(pm, "register_widgets", "v2", register=registered.append,
                    settings={"colour": "blue"})
    # Calling by hand with every declared argument bound to `register` (the old way) would have
    # handed the version 2 plugin the register function as `settings`.
    assert registered == ["old-widget", "new-widget-blue"]


def test_calling_one_plugin_leaves_the_others_out_even_when_one_raises() -> None:
    class Raising:
        @staticmethod
        @hookimpl
        def register_widgets(register: Callable[[str], None]) -> None:
            raise RuntimeError("kaboom")

    pm = pluggy.PluginManager("armor_notify")
    pm.add_hookspecs(WidgetSpecV2)
    pm.register(Raising, name="raising")
    pm.register(WrittenForV1, name="v1")
    seen: list[str] = []
    with pytest.raises(RuntimeError, match="kaboom"):
        call_for_plugin(pm, "register_widgets", "raising", register=seen.append, settings={})
    assert seen == []
    call_for_plugin(pm, "register_widgets", "v1", register=seen.append, settings={})
    assert seen == ["old-widget"]


def _monitor(pm: PluginManager) -> list[tuple[str, list[str], list[str]]]:
    """Record every hook call pluggy makes on ``pm``: hook, plugins called, arguments passed."""
    calls: list[tuple[str, list[str], list[str]]] = []

    def before(hook: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, object]) -> None:
        calls.append((hook, [i.plugin_name for i in impls], sorted(kwargs)))

    def after(outcome: pluggy.Result[object], hook: str, impls: Sequence[pluggy.HookImpl],
              kwargs: Mapping[str, object]) -> None:
        pass

    pm.pm.add_hookcall_monitoring(before, after)
    return calls


def _plugin(hooks: dict[str, Callable[..., None]]) -> type:
    return type("Plugin", (), {k: staticmethod(hookimpl(v)) for k, v in hooks.items()})


def test_the_registration_hooks_are_called_through_pluggy_one_plugin_at_a_time() -> None:
    pm = PluginManager()
    calls = _monitor(pm)
    pm.load(entry_points=[], extra=[
        ("types", _plugin({"register_destination_types": lambda register: register(INLINE),
                           "register_event_types": lambda register: register("dbt_run_failed")})),
        ("events", _plugin({"register_event_types": lambda register: register("late_batch")})),
    ])
    assert calls == [
        ("register_destination_types", ["types"], ["register"]),
        ("register_event_types", ["types"], ["register"]),
        ("register_event_types", ["events"], ["register"]),
    ]
    assert pm.registry.destination_types == {"inline": INLINE}
    assert pm.plugins["events"].event_types == ["late_batch"]


def test_a_plugin_registered_after_loading_is_called_through_pluggy_too() -> None:
    pm = PluginManager().load(entry_points=[])
    calls = _monitor(pm)
    pm.register(_plugin({"register_destination_types": lambda register: register(INLINE)}),
                name="late")
    assert calls == [("register_destination_types", ["late"], ["register"])]
    assert pm.plugins["late"].destination_types == ["inline"]


def test_a_plugin_may_wrap_its_own_registration_hook() -> None:
    # Only possible through pluggy: a wrapper around the plugin's own implementation.
    order: list[str] = []

    class Wrapping:
        @staticmethod
        @hookimpl(wrapper=True)
        def register_destination_types(register: Callable[[DestinationType], None]) -> Any:
            order.append("before")
            result = yield
            order.append("after")
            return result

        @staticmethod
        @hookimpl
        def register_event_types(register: Callable[[str], None]) -> None:
            order.append("events")

    class Registering:
        @staticmethod
        @hookimpl
        def register_destination_types(register: Callable[[DestinationType], None]) -> None:
            order.append("register")
            register(INLINE)

    pm = PluginManager().load(entry_points=[], extra=[("wrapping", Wrapping),
                                                      ("registering", Registering)])
    # Each plugin is called on its own, so the wrapper wraps its own (empty) call only.
    assert order == ["before", "after", "events", "register"]
    assert pm.plugins["wrapping"].error is None
    assert pm.plugins["registering"].destination_types == ["inline"]


def test_an_unhashable_plugin_object_registers_like_any_other() -> None:
    @dataclasses.dataclass
    class Settings:  # a dataclass instance compares by value and cannot be hashed
        name: str

        @hookimpl
        def register_event_types(self, register: Callable[[str], None]) -> None:
            register(self.name)

    pm = PluginManager().load(entry_points=[], extra=[
        ("settings", Settings("dbt_test_failed")),
        ("types", _plugin({"register_destination_types": lambda register: register(INLINE)})),
    ])
    assert pm.plugins["settings"].event_types == ["dbt_test_failed"]
    assert pm.plugins["settings"].error is None
    assert "inline" in pm.registry.destination_types


def test_tracing_prints_each_call_pluggy_makes_and_how_it_ended(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def explode(register: Any) -> None:
        raise RuntimeError("settings file not found")

    monkeypatch.setenv(TRACE_ENV, "1")
    pm = PluginManager().load(entry_points=[], extra=[
        ("raising", _plugin({"register_destination_types": explode})),
        ("good", _plugin({"register_destination_types": lambda register: register(INLINE)})),
    ])
    assert capsys.readouterr().err.splitlines() == [
        "[armor-notify] hook register_destination_types -> ['raising']",
        "[armor-notify] hook register_destination_types done (raising: register_destination_types "
        "raised RuntimeError: settings file not found)",
        "[armor-notify] hook register_destination_types -> ['good']",
        "[armor-notify] hook register_destination_types done (good: ok)",
    ]
    assert pm.plugins["raising"].error == ("register_destination_types raised RuntimeError: "
                                           "settings file not found")


def test_without_the_tracing_variable_nothing_is_printed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    PluginManager().load(entry_points=[], extra=[
        ("good", _plugin({"register_destination_types": lambda register: register(INLINE)})),
    ])
    assert capsys.readouterr().err == ""
