"""The test kit's fixtures, as the pytest plugin armor-notify installs (``pytest11``).

pytest loads this module into every run wherever armor-notify is installed, so it imports nothing
but pytest: each fixture imports :mod:`armor_notify.testing` (the models, the notifier, the
dispatcher) when a test first asks for it, and a project that never does pays nothing. Leave it
out of a run with ``pytest -p no:armor_notify``. The fixtures:

- ``make_alert``: ``make_alert(**fields)``, a valid alert with your fields;
- ``notifier_factory``: ``notifier_factory(config, *plugins, installed=False, environ=None)``,
  a notifier with plugins registered inline, closed after the test;
- ``send_alert``: ``send_alert(destination_type, config, alert=None)``, one alert through the
  real dispatcher, returning the report;
- ``captured_notifications``: a ``capture`` destination type that records every notification.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .api import Notifier
    from .testing import Capture


@pytest.fixture(name="make_alert")
def _make_alert_fixture() -> Any:
    """A factory: ``make_alert(**fields)`` gives a valid :class:`Alert` (see
    :func:`armor_notify.testing.make_alert`)."""
    from .testing import make_alert

    return make_alert


@pytest.fixture
def notifier_factory() -> Iterator[Any]:
    """A factory: ``notifier_factory(config, *plugins, installed=False, environ=None)`` gives a
    :class:`Notifier` (see :func:`armor_notify.testing.build_notifier`); every one is closed
    after the test."""
    from .testing import build_notifier

    made: list[Notifier] = []

    def factory(config: Mapping[str, Any] | str, *plugins: object, **kwargs: Any) -> Notifier:
        notifier = build_notifier(config, *plugins, **kwargs)
        made.append(notifier)
        return notifier

    yield factory
    for notifier in made:
        notifier.close()


@pytest.fixture(name="send_alert")
def _send_alert_fixture() -> Any:
    """``send_alert(destination_type, config, alert=None)``: deliver one alert to one
    destination and return the :class:`SendReport` (see :func:`armor_notify.testing.send_alert`)."""
    from .testing import send_alert

    return send_alert


@pytest.fixture
def captured_notifications() -> Capture:
    """A fresh :class:`~armor_notify.testing.Capture`: register
    ``captured_notifications.destination_type`` and read ``captured_notifications.notifications``
    after sending."""
    from .testing import Capture

    return Capture()
