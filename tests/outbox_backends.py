"""The outbox backends the conformance suite (``test_outbox_contract.py``) runs on.

A backend says how to open an outbox on a fresh store and, when the store can be shared by
several outbox objects (several processes), how to open another one on the same store. A new
backend (PostgreSQL, issue 15) is one more entry in :data:`BACKENDS`: a function that takes the
test's temporary directory and returns a :class:`Backend`, or calls ``pytest.skip`` when the
server is not available.

What the suite needs that the ``Outbox`` protocol does not offer (damaging a stored row, as a
disk or an older version would leave it) is a backend hook too, so the tests stay written
against the protocol alone.

Backends whose store is a server (PostgreSQL) are slow to reach in a fresh run: their test
cases carry the ``slow`` mark (:func:`params`), so ``pytest -m "not slow"`` stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import postgres
import pytest

from armor_notify.outbox import Outbox, SqliteOutbox

# An alert an older version accepted and this one refuses (``Infinity`` is not JSON's, and a
# delay must be finite): what a stored row can hold without being readable back.
OLDER_VERSION_ALERT = json.dumps(
    {"id": "old", "event_type": "freshness_violation", "title": "late",
     "asset": {"id": "a", "name": "db.s.t"}, "freshness": {"delay_hours": "Infinity"}},
).replace('"Infinity"', "Infinity")


@dataclass
class Backend:
    """How to reach one kind of store."""

    name: str
    shared: bool
    """True when several outbox objects (processes) can open one store."""
    connect: Callable[[], Outbox]
    """A new outbox object: on the same store each time when ``shared``, else a fresh one."""
    damage: Callable[[Outbox, str], None] | None = None
    """Make the stored delivery with this id unreadable (its alert written by an older version),
    as another process would see it; ``None``: the backend cannot."""
    opened: list[Outbox] = field(default_factory=list)
    cleanup: Callable[[], None] | None = None
    """Run after the test, once every outbox is closed (a server's test database dropped)."""

    def open(self) -> Outbox:
        box = self.connect()
        self.opened.append(box)
        return box

    def close(self) -> None:
        for box in self.opened:
            box.close()
        self.opened.clear()
        if self.cleanup is not None:
            self.cleanup()


def _damage_sqlite(box: Outbox, delivery_id: str) -> None:
    sqlite = cast(SqliteOutbox, box)
    # The same connection (autocommit): works for a file and for memory alike.
    sqlite._db.execute("UPDATE deliveries SET alert=? WHERE id=?",
                       (OLDER_VERSION_ALERT, delivery_id))
    sqlite._alerts.clear()  # as in a process that did not write it (nothing cached)


def sqlite_file(tmp_path: Path) -> Backend:
    return Backend("sqlite-file", shared=True, connect=lambda: SqliteOutbox.open(tmp_path),
                   damage=_damage_sqlite)


def sqlite_memory(tmp_path: Path) -> Backend:
    return Backend("sqlite-memory", shared=False, connect=SqliteOutbox.memory,
                   damage=_damage_sqlite)


def _damage_postgres(box: Outbox, delivery_id: str) -> None:
    from armor_notify.outbox_postgres import PostgresOutbox

    pg = cast(PostgresOutbox, box)
    with pg._tx("damage") as db:
        db.execute("UPDATE deliveries SET alert=%s WHERE id=%s", (OLDER_VERSION_ALERT, delivery_id))
    pg._alerts.clear()  # as in a process that did not write it (nothing cached)


def postgresql(tmp_path: Path) -> Backend:
    """A fresh database on the session's server (``postgres.py``: skips, or fails under
    ``CI=true``, when there is none); dropped after the test."""
    from armor_notify.outbox_postgres import PostgresOutbox

    database = postgres.fresh_database()
    return Backend("postgresql", shared=True, connect=lambda: PostgresOutbox.open(database.url),
                   damage=_damage_postgres, cleanup=database.drop)


BACKENDS: dict[str, Callable[[Path], Backend]] = {
    "sqlite-file": sqlite_file,
    "sqlite-memory": sqlite_memory,
    "postgresql": postgresql,
}
"""Every backend the suite runs on, by name (the test ids)."""

SHARED_BACKENDS = ("sqlite-file", "postgresql")
"""The backends whose store several outbox objects share (the two-connection tests)."""

SLOW_BACKENDS = frozenset({"postgresql"})
"""Backends reached through a server the session starts: their cases are marked ``slow``."""


def params(names: Iterable[str]) -> list[Any]:
    """The backends as fixture parameters, the slow ones marked so."""
    return [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_BACKENDS else name
            for name in names]
