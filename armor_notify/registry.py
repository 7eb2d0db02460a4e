"""What the loaded plugins registered: destination types, event types and alert sources.

A leaf of the plugin layer: config loading and matching read the registry, the plugin manager
fills it, and it imports neither of them.
"""

from __future__ import annotations

from .alert import BUILTIN_EVENT_TYPES
from .destinations import DestinationType
from .errors import PluginError
from .sources import Source

LOAD_ENV = "ARMOR_NOTIFY_LOAD_PLUGINS"
"""The variable that chooses which third-party plugins load (named in conflict errors)."""


class Registry:
    """What the loaded plugins registered: destination types, event types and alert sources."""

    def __init__(self) -> None:
        self.destination_types: dict[str, DestinationType] = {}
        self.event_types: list[str] = list(BUILTIN_EVENT_TYPES)
        self.sources: dict[str, Source] = {}
        self._type_owner: dict[str, str] = {}
        self._source_owner: dict[str, str] = {}
        self.failed: list[str] = []

    def add_destination_type(self, owner: str, dtype: DestinationType) -> None:
        if not isinstance(dtype, DestinationType):
            raise PluginError(
                f"plugin '{owner}' registered {type(dtype).__name__!s}, not a DestinationType"
            )
        if dtype.name in self.destination_types:
            raise _both("destination type", dtype.name, self._type_owner[dtype.name], owner)
        fallback = next((t for t in self.destination_types.values() if t.url_fallback), None)
        if dtype.url_fallback and fallback is not None:
            raise PluginError(
                f"destination types '{fallback.name}' (plugin '{self._type_owner[fallback.name]}') "
                f"and '{dtype.name}' (plugin '{owner}') both take every otherwise unclaimed URL "
                f"scheme; uninstall one of them or exclude it with {LOAD_ENV}"
            )
        self.destination_types[dtype.name] = dtype
        self._type_owner[dtype.name] = owner

    def add_source(self, owner: str, source: Source) -> None:
        if not isinstance(source, Source):
            raise PluginError(f"plugin '{owner}' registered {type(source).__name__!s}, not a Source")
        if not source.name.isidentifier() or source.name.lower() != source.name:
            raise PluginError(f"plugin '{owner}' registered source {source.name!r}: use a "
                              "lower-case identifier")
        if source.name in self.sources:
            raise _both("source", source.name, self._source_owner[source.name], owner)
        self.sources[source.name] = source
        self._source_owner[source.name] = owner

    def add_event_type(self, owner: str, name: str) -> None:
        if not isinstance(name, str) or not name.isidentifier() or name.lower() != name:
            raise PluginError(
                f"plugin '{owner}' registered event type {name!r}: use a lower-case identifier"
            )
        if name not in self.event_types:
            self.event_types.append(name)

    @property
    def failure_note(self) -> str:
        """Names the plugins that failed to load, for errors about missing types."""
        return f" (plugins that failed to load: {', '.join(self.failed)})" if self.failed else ""

    def types_for_scheme(self, scheme: str) -> list[DestinationType]:
        """The types a bare ``scheme://`` URL is offered to, in order: those listing the scheme
        in ``url_schemes``, then the fallback type (``url_fallback``), if one is installed."""
        claiming = [t for t in self.destination_types.values() if scheme in t.url_schemes]
        fallback = [t for t in self.destination_types.values()
                    if t.url_fallback and t not in claiming]
        return claiming + fallback

    def type_for_scheme(self, scheme: str) -> DestinationType | None:
        """The first type a bare ``scheme://`` URL is offered to (see :meth:`types_for_scheme`)."""
        types = self.types_for_scheme(scheme)
        return types[0] if types else None


def _both(kind: str, name: str, first: str, second: str) -> PluginError:
    """Two plugins registered the same name: the error that names both and the way out."""
    return PluginError(f"{kind} '{name}' is registered by both plugin '{first}' and plugin "
                       f"'{second}'; uninstall one of them or exclude it with {LOAD_ENV}")
