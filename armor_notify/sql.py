"""The seam between the outbox's shared algorithms and a database: the statements of one
transaction (:class:`Db`), or plain queries (:class:`Reads`), written with ``?`` placeholders.

A leaf: the outbox's backends implement it, and what keeps state in the outbox (the deliveries,
the check ledger, the mutes) writes its SQL against it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Protocol

Row = tuple[Any, ...]


class Reads(Protocol):
    """Queries, written with ``?`` placeholders (what reading the ledger and the mutes needs)."""

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...
    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...


class Db(Reads, Protocol):
    """The statements of one transaction, in a backend's dialect. SQL given to it is written
    with ``?`` placeholders, over the tables every backend has (``deliveries``, ``rate_state``,
    ``checks``, ``mutes``); the adaptor translates what its driver needs."""

    store: str
    """What messages call the store: "the state file", "the database"."""
    first_of_its_key: str
    """A condition on the claim's due row ``d`` (``o`` is free for a subquery): no older
    unfinished delivery has its destination and dedup key, so a retried trigger never overtakes
    its resolve."""
    claim_lock: str
    """Ends the claim's query for due rows: how it locks the rows it takes ("" where the
    transaction holds the whole store)."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; how many rows it changed."""
    def among(self, column: str, values: Collection[Any]) -> tuple[str, tuple[Any, ...]]:
        """The condition "``column`` is one of ``values``", and its parameters."""
    def rate_key(self, key: str) -> Row | None:
        """Rate key ``key``'s ``(tat, hold)`` (``None``: no row), locked until the transaction
        ends where the backend locks rows (it creates a missing row to lock it)."""
