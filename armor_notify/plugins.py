"""The plugin manager: explicit, idempotent loading of built-in and third-party plugins.

Built-in destinations are ordinary entry points of the ``armor-notify`` distribution in the
``armor_notify`` group, loaded exactly like third-party ones. ``ARMOR_NOTIFY_LOAD_PLUGINS``
chooses which third-party distributions load: unset = all, empty = none (built-ins only), a
comma list = only those distributions.

Every hook is called through pluggy, one plugin at a time (:func:`call_for_plugin`): each
implementation gets only the arguments it declares, an exception stays with its plugin, and
``ARMOR_NOTIFY_TRACE_PLUGINS`` (any non-empty value) prints each call and how it ended on stderr.
What the plugins registered is kept in a :class:`~armor_notify.registry.Registry`.
"""

from __future__ import annotations

import os
import sys
import threading
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError
from .registry import LOAD_ENV as LOAD_ENV
from .registry import Registry as Registry
from .validation import suggest

GROUP = "armor_notify"
BUILTIN_DISTRIBUTION = "armor-notify"
TRACE_ENV = "ARMOR_NOTIFY_TRACE_PLUGINS"

hookimpl = pluggy.HookimplMarker("armor_notify")


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin, as ``armor-notify plugins`` shows it."""

    name: str
    distribution: str
    version: str
    builtin: bool
    hooks: list[str] = field(default_factory=list)
    destination_types: list[str] = field(default_factory=list)
    event_types: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "builtin": self.builtin,
            "hooks": self.hooks,
            "destination_types": self.destination_types,
            "event_types": self.event_types,
            "sources": self.sources,
            "error": self.error,
        }


class PluginManager:
    """A typed facade over pluggy: host code never calls ``pm.hook.*`` directly."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.plugins: dict[str, PluginInfo] = {}
        self._loaded = False
        self._lock = threading.Lock()

    # -- loading -------------------------------------------------------------------------------
    def load(
        self,
        *,
        entry_points: Iterable[metadata.EntryPoint] | None = None,
        extra: Iterable[tuple[str, object]] = (),
    ) -> PluginManager:
        """Load plugins once; later calls do nothing. ``extra`` registers (name, plugin) pairs
        directly (tests, embedding applications)."""
        with self._lock:
            if self._loaded:
                return self
            wanted = _wanted_distributions()
            eps = metadata.entry_points(group=GROUP) if entry_points is None else entry_points
            named: dict[int, tuple[str, str]] = {}  # a distribution's metadata, parsed once
            for ep in sorted(eps, key=lambda e: e.name):
                self._load_entry_point(ep, wanted, named)
            for name, plugin in extra:
                self.register(plugin, name=name)
            self._drop_unknown_hooks()
            self.pm.check_pending()
            if os.environ.get(TRACE_ENV):
                self._trace_to_stderr()
            self._collect()
            self.registry.failed = [i.name for i in self.plugins.values() if i.error]
            self._loaded = True
        return self

    def _load_entry_point(self, ep: metadata.EntryPoint, wanted: set[str] | None,
                          named: dict[int, tuple[str, str]]) -> None:
        dist = ep.dist
        if dist is None:
            dist_name = version = "unknown"
        else:  # the entry points of one distribution share its object
            if id(dist) not in named:
                meta = dist.metadata
                named[id(dist)] = (meta["Name"], meta["Version"])
            dist_name, version = named[id(dist)]
        builtin = _normalise(dist_name) == BUILTIN_DISTRIBUTION
        if not builtin and wanted is not None and _normalise(dist_name) not in wanted:
            return
        info = PluginInfo(ep.name, dist_name, version, builtin)
        self.plugins[ep.name] = info
        try:
            module = ep.load()
        except Exception as exc:  # a broken plugin must not stop the others
            info.error = f"failed to import {ep.value}: {type(exc).__name__}: {exc}"
            return
        if self.pm.is_registered(module) or self.pm.has_plugin(ep.name):
            return
        self.pm.register(_hashable(module, ep.name), name=ep.name)

    def _drop_unknown_hooks(self) -> None:
        """A plugin implementing a hook that does not exist (a misspelling) is unregistered and
        reported, instead of silently never being called or stopping every other plugin."""
        known = sorted(n for n, v in vars(hookspecs).items()
                       if callable(v) and hasattr(v, "armor_notify_spec"))
        for hook_name in dir(self.pm.hook):
            caller = getattr(self.pm.hook, hook_name)
            if hook_name.startswith("_") or not hasattr(caller, "has_spec") or caller.has_spec():
                continue
            for impl in caller.get_hookimpls():
                if impl.optionalhook or not self.pm.has_plugin(impl.plugin_name):
                    continue
                info = self.plugins.get(impl.plugin_name)
                message = (f"implements unknown hook '{hook_name}'{suggest(hook_name, known)}; "
                           f"known hooks: {', '.join(known)}")
                if info is not None:
                    info.error = message
                self.pm.unregister(name=impl.plugin_name)

    def register(self, plugin: object, name: str) -> None:
        """Register a plugin object or module (for tests and applications embedding armor-notify)."""
        if name not in self.plugins:
            version = getattr(plugin, "__version__", "") or "local"
            self.plugins[name] = PluginInfo(name, name, str(version), builtin=False)
        self.pm.register(_hashable(plugin, name), name=name)
        if self._loaded:
            self._collect_from(name)

    def _trace_to_stderr(self) -> None:
        """Print every hook call that goes through pluggy (``ARMOR_NOTIFY_TRACE_PLUGINS``): the
        plugins it calls, then how the call ended."""

        def before(hook_name: str, impls: Sequence[pluggy.HookImpl],
                   kwargs: Mapping[str, object]) -> None:
            print(f"[armor-notify] hook {hook_name} -> {[i.plugin_name for i in impls]}",
                  file=sys.stderr)

        def after(outcome: pluggy.Result[object], hook_name: str,
                  impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, object]) -> None:
            exc = outcome.exception
            ended = "ok" if exc is None else f"{hook_name} raised {type(exc).__name__}: {exc}"
            names = ", ".join(i.plugin_name for i in impls)
            print(f"[armor-notify] hook {hook_name} done ({names}: {ended})", file=sys.stderr)

        self.pm.add_hookcall_monitoring(before, after)

    # -- registration hooks, called per plugin so one failure stays with its plugin -------------
    def _collect(self) -> None:
        for name in list(self.plugins):
            if self.pm.has_plugin(name):
                self._collect_from(name)

    def _collect_from(self, name: str) -> None:
        info = self.plugins[name]
        plugin = self.pm.get_plugin(name)
        info.hooks = sorted(
            caller.name for caller in (self.pm.get_hookcallers(plugin) or [])
        )
        for hook_name, register in (
            ("register_destination_types", self._adder(info, self.registry.add_destination_type,
                                                        info.destination_types, "name")),
            ("register_event_types", self._adder(info, self.registry.add_event_type,
                                                  info.event_types, None)),
            ("register_sources", self._adder(info, self.registry.add_source, info.sources,
                                              "name")),
        ):
            if hook_name not in info.hooks:
                continue
            try:
                call_for_plugin(self.pm, hook_name, name, register=register)
            except PluginError:
                raise
            except Exception as exc:  # a broken plugin must not stop the others
                info.error = f"{hook_name} raised {type(exc).__name__}: {exc}"

    def _adder(
        self,
        info: PluginInfo,
        add: Callable[[str, Any], None],
        names: list[str],
        attr: str | None,
    ) -> Callable[[Any], None]:
        def register(item: Any) -> None:
            add(info.name, item)
            names.append(getattr(item, attr) if attr else item)

        return register

    # -- what host code asks ---------------------------------------------------------------------
    def plugin_errors(self) -> list[str]:
        return [f"plugin '{i.name}' ({i.distribution} {i.version}): {i.error}"
                for i in self.plugins.values() if i.error]


def call_for_plugin(
    pm: pluggy.PluginManager, hook_name: str, plugin_name: str, **kwargs: object
) -> list[Any]:
    """Call the hook ``hook_name`` through pluggy for the plugin ``plugin_name`` alone and return
    its results.

    pluggy stops calling the remaining implementations once one raises, so each plugin gets its
    own call: an exception then stays with its plugin. Going through pluggy (not calling the
    implementation by hand) means each implementation receives only the arguments it declares,
    so a hook can gain an argument without breaking older plugins, and the call is traced.
    """
    others = [plugin for name, plugin in pm.list_name_plugin()
              if name != plugin_name and plugin is not None]
    caller = pm.subset_hook_caller(hook_name, remove_plugins=others)
    results: list[Any] = caller(**kwargs)
    return results


def _hashable(plugin: object, name: str) -> object:
    """``plugin``, or, when it cannot be hashed (a ``SimpleNamespace``, a dataclass instance), a
    module holding its hook implementations: pluggy keeps the plugins it leaves out of a call
    (:func:`call_for_plugin`) in a set."""
    try:
        hash(plugin)
    except TypeError:
        stand_in = types.ModuleType(name)
        for attr in dir(plugin):
            value = getattr(plugin, attr, None)
            if getattr(value, f"{GROUP}_impl", None) is not None:
                setattr(stand_in, attr, value)
        return stand_in
    return plugin


def _wanted_distributions() -> set[str] | None:
    raw = os.environ.get(LOAD_ENV)
    if raw is None:
        return None
    return {_normalise(part) for part in raw.split(",") if part.strip()}


_default: PluginManager | None = None
_default_lock = threading.Lock()


def load_plugins() -> PluginManager:
    """The process-wide plugin manager, loaded on first use (never at import time)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = PluginManager().load()
        return _default


def reset_plugins() -> None:
    """Forget the process-wide manager so the next :func:`load_plugins` loads afresh (tests)."""
    global _default
    with _default_lock:
        _default = None


