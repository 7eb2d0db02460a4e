"""The plugin contract: every hook armor-notify calls, with what it passes and what it expects.

Implement hooks with ``@armor_notify.hookimpl`` in a module named in your package's
``armor_notify`` entry point. Hooks register objects; alerts are never fanned out through a hook
call, so one broken plugin cannot silence another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # the contract names these types; importing it loads nothing else
    from collections.abc import Callable

    from .destinations import DestinationType
    from .sources import Source

hookspec = pluggy.HookspecMarker("armor_notify")


@hookspec
def register_destination_types(register: Callable[[DestinationType], None]) -> None:
    """Register the destination types this plugin provides.

    Called once, when plugins are loaded (:func:`armor_notify.plugins.load_plugins`), before any
    config is read. Call ``register(DestinationType(...))`` once per type. A type name already
    registered by another plugin is an error that names both plugins.

    Example::

        @hookimpl
        def register_destination_types(register):
            register(DestinationType("webhook", WebhookConfig, WebhookSender))
    """


@hookspec
def register_event_types(register: Callable[[str], None]) -> None:
    """Register event types beyond the built-in ones (``schema_change``, ``freshness_violation``…).

    Called once, when plugins are loaded. Call ``register("name")`` for each type; names are
    lower-case identifiers. Alerts and rules may then use them in ``event_type`` and ``event``.

    Example::

        @hookimpl
        def register_event_types(register):
            register("dbt_test_failed")
    """


@hookspec
def register_sources(register: Callable[[Source], None]) -> None:
    """Register the alert sources this plugin provides: tools whose output armor-notify reads.

    Called once, when plugins are loaded. Call ``register(Source(...))`` once per source; its
    name is what ``--source NAME`` selects. A name already registered by another plugin is an
    error that names both plugins. A source turns its input into native alert objects, which
    armor-notify then validates (see :mod:`armor_notify.sources`).

    Example::

        @hookimpl
        def register_sources(register):
            register(Source("nagios", "Nagios notifications (JSON)", read_nagios))
    """
