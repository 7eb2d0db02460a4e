"""The plugin layer: hookspecs, loading through entry points, isolation, the loading variable."""

from __future__ import annotations

import ast
import inspect
import re
import types
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from armor_notify import DestinationConfig, DestinationType, Outcome, hookimpl, hookspecs
from armor_notify.errors import PluginError
from armor_notify.plugins import PluginManager, load_plugins, reset_plugins

TESTS = Path(__file__).parent
HOOKS = [name for name, fn in vars(hookspecs).items()
         if callable(fn) and hasattr(fn, "armor_notify_spec")]


class _Cfg(DestinationConfig):
    pass


class _Sender:
    def __init__(self, config: _Cfg) -> None:
        self.config = config

    def send(self, notification: Any) -> Outcome:
        return Outcome.delivered()


def _plugin(**hooks: Any) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{k: hookimpl(v) for k, v in hooks.items()})


def test_every_hook_is_documented_typed_and_tested() -> None:
    assert HOOKS == ["register_destination_types", "register_event_types", "register_sources"]
    test_source = "\n".join(p.read_text() for p in TESTS.glob("test_*.py"))
    for name in HOOKS:
        fn = getattr(hookspecs, name)
        doc = inspect.getdoc(fn) or ""
        assert "Called" in doc and "Example" in doc, f"{name} needs a full docstring"
        sig = inspect.signature(fn)
        assert all(p.annotation is not inspect.Parameter.empty for p in sig.parameters.values())
        assert re.search(rf"def test_hook_{name}\b", test_source), f"no test_hook_{name}"


def test_hook_register_destination_types() -> None:
    dtype = DestinationType("inline", _Cfg, _Sender, display_name="Inline")
    pm = PluginManager().load(extra=[("inline", _plugin(register_destination_types=lambda register:
                                                          register(dtype)))])
    assert pm.registry.destination_types["inline"] is dtype
    assert pm.plugins["inline"].destination_types == ["inline"]
    assert pm.plugins["inline"].hooks == ["register_destination_types"]


def test_hook_register_sources() -> None:
    from armor_notify.sources import Source

    source = Source("inline", "alerts as they are", lambda given: [])
    pm = PluginManager().load(extra=[("src", _plugin(register_sources=lambda register:
                                                      register(source)))])
    assert pm.registry.sources["inline"] is source
    assert pm.plugins["src"].sources == ["inline"]
    assert pm.plugins["src"].hooks == ["register_sources"]
    with pytest.raises(PluginError, match="registered int, not a Source"):
        PluginManager().load(extra=[("bad", _plugin(register_sources=lambda register:
                                                     register(3)))])


def test_hook_register_event_types() -> None:
    pm = PluginManager().load(extra=[("ev", _plugin(register_event_types=lambda register:
                                                     register("dbt_run_failed")))])
    assert "dbt_run_failed" in pm.registry.event_types
    assert pm.plugins["ev"].event_types == ["dbt_run_failed"]


def test_built_ins_load_through_the_entry_point_group() -> None:
    eps = {ep.name: ep for ep in metadata.entry_points(group="armor_notify")}
    for name in ("pagerduty", "slack", "email"):
        assert eps[name].dist is not None
        assert eps[name].dist.metadata["Name"] == "armor-notify"
    pm = PluginManager().load()
    assert {"pagerduty", "slack", "email"} <= set(pm.registry.destination_types)
    assert all(pm.plugins[n].builtin for n in ("pagerduty", "slack", "email"))


def test_loading_is_explicit_and_idempotent() -> None:
    import armor_notify  # noqa: F401  (importing loads nothing)

    pm = PluginManager()
    assert pm.registry.destination_types == {}
    pm.load()
    count = len(pm.pm.get_plugins())
    pm.load()
    assert len(pm.pm.get_plugins()) == count
    assert load_plugins() is load_plugins()
    reset_plugins()


@pytest.mark.parametrize(("value", "scripted"), [
    (None, True), ("", False), ("armor-notify-scripted", True),
    ("armor_notify_scripted, other", True), ("other", False),
])
def test_load_plugins_variable(monkeypatch: pytest.MonkeyPatch, value: str | None,
                               scripted: bool) -> None:
    if value is not None:
        monkeypatch.setenv("ARMOR_NOTIFY_LOAD_PLUGINS", value)
    pm = PluginManager().load()
    assert ("scripted" in pm.registry.destination_types) is scripted
    assert "pagerduty" in pm.registry.destination_types  # built-ins always load


def test_a_plugin_that_fails_to_import_is_reported_and_the_rest_load() -> None:
    broken = metadata.EntryPoint("broken", "armor_notify_no_such_module", "armor_notify")
    good = next(ep for ep in metadata.entry_points(group="armor_notify") if ep.name == "slack")
    pm = PluginManager().load(entry_points=[broken, good])
    assert "slack" in pm.registry.destination_types
    assert "failed to import armor_notify_no_such_module" in (pm.plugins["broken"].error or "")
    assert pm.plugin_errors() and "broken" in pm.plugin_errors()[0]
    assert pm.registry.failure_note == " (plugins that failed to load: broken)"


def test_a_registration_hook_that_raises_fails_only_its_plugin() -> None:
    def explode(register: Any) -> None:
        raise RuntimeError("kaboom")

    dtype = DestinationType("inline", _Cfg, _Sender)
    pm = PluginManager().load(extra=[
        ("bad", _plugin(register_destination_types=explode)),
        ("good", _plugin(register_destination_types=lambda register: register(dtype))),
    ])
    assert "inline" in pm.registry.destination_types
    assert pm.plugins["bad"].error == "register_destination_types raised RuntimeError: kaboom"


def test_a_misspelt_hook_is_reported_and_its_plugin_dropped() -> None:
    pm = PluginManager().load(extra=[("typo", _plugin(register_destination_typez=lambda
                                                      register: None))])
    error = pm.plugins["typo"].error or ""
    assert "unknown hook 'register_destination_typez'" in error
    assert "did you mean 'register_destination_types'" in error
    assert not pm.pm.has_plugin("typo")


def test_two_plugins_registering_one_type_name_is_an_error() -> None:
    dtype = DestinationType("pagerduty", _Cfg, _Sender)
    with pytest.raises(PluginError, match="registered by both plugin 'pagerduty' and plugin 'dup'"):
        PluginManager().load(extra=[("dup", _plugin(register_destination_types=lambda register:
                                                     register(dtype)))])


def test_registering_something_that_is_not_a_destination_type_is_an_error() -> None:
    with pytest.raises(PluginError, match="registered str, not a DestinationType"):
        PluginManager().load(extra=[("odd", _plugin(register_destination_types=lambda register:
                                                     register("nope")))])


def test_bad_event_type_names_are_rejected() -> None:
    with pytest.raises(PluginError, match="lower-case identifier"):
        PluginManager().load(extra=[("ev", _plugin(register_event_types=lambda register:
                                                    register("Bad Name")))])


@pytest.mark.slow
def test_tracing_prints_hook_calls() -> None:
    from conftest import run_cli

    res = run_cli("plugins", env={"ARMOR_NOTIFY_TRACE_PLUGINS": "1"})
    assert res.returncode == 0
    assert "[armor-notify] hook register_destination_types -> ['pagerduty']" in res.stderr
    assert "[armor-notify] hook register_event_types done (scripted: ok)" in res.stderr


def _runtime_imports(module: str) -> set[str]:
    """The modules ``armor_notify/<module>.py`` imports when it runs (not under TYPE_CHECKING),
    relative ones as ``armor_notify.<name>``."""
    tree = ast.parse((TESTS.parent / "armor_notify" / f"{module}.py").read_text())
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = f"armor_notify.{node.module or ''}".rstrip(".") if node.level else node.module
            found.add(base or "")
            if node.level and not node.module:
                found.update(f"armor_notify.{alias.name}" for alias in node.names)
    return found


def test_the_hook_contract_imports_types_only_for_type_checking() -> None:
    assert _runtime_imports("hookspecs") == {"__future__", "typing", "pluggy"}


def test_the_registry_is_a_leaf_of_the_plugin_layer() -> None:
    imports = _runtime_imports("registry")
    assert not imports & {"armor_notify.plugins", "armor_notify.config", "armor_notify.api"}
    from armor_notify import plugins, registry

    assert plugins.Registry is registry.Registry  # kept importable from its old home
