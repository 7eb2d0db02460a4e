"""The outbox backends the conformance suite (``test_outbox_contract.py``) runs on.

A backend says how to open an outbox on a fresh store and, when the store can be shared by
several outbox objects (several processes), how to open another one on the same store. A new
backend (PostgreSQL, issue 15) is one more entry in :data:`BACKENDS`: a function that takes the
test's temporary directory and returns a :class:`Backend`, or calls ``pytest.skip`` when the
server is not available.

What the suite needs that the ``Outbox`` protocol does not offer (damaging a stored row, as a
disk or an older version would leave it) is a backend hook too, so the tests stay written
against the protocol alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

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

    def open(self) -> Outbox:
        box = self.connect()
        self.opened.append(box)
        return box

    def close(self) -> None:
        for box in self.opened:
            box.close()
        self.opened.clear()


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


BACKENDS: dict[str, Callable[[Path], Backend]] = {
    "sqlite-file": sqlite_file,
    "sqlite-memory": sqlite_memory,
}
"""Every backend the suite runs on, by name (the test ids)."""

SHARED_BACKENDS = ("sqlite-file",)
"""The backends whose store several outbox objects share (the two-connection tests)."""
