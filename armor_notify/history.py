"""What the outbox knows that intake decisions ask about (:class:`History`): what was notified
when (cooldowns, daily limits, digests), the mutes in force and the check ledger. The outbox
answers it inside its intake transaction (and ``route --at`` from a read); :data:`NO_HISTORY` is
an outbox with nothing in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .ledger import CheckState, Failing
    from .mutes import Mute


class History(Protocol):
    """What the outbox knows, asked inside its intake transaction (each backend answers it)."""

    def last_notified(self, rule: str, asset_id: str, destination: str,
                      since: float) -> float | None: ...
    def count_notified(self, since: float, *, rule: str | None = None,
                       destination: str | None = None) -> int: ...
    def digest_closes(self, batch_key: str) -> float | None: ...
    def mutes(self, at: float) -> Sequence[Mute]:
        """The mutes in force at ``at``."""
        ...
    def check_state(self, key: tuple[str, str, str]) -> CheckState | None:
        """The check ledger's entry for (source, check id, asset id)."""
        ...
    def failing(self, since: float) -> Sequence[Failing]:
        """Checks failing now (not folded) that began failing at or after ``since``."""
        ...
    def posted(self, destination: str, dedup_key: str) -> tuple[str, Mapping[str, Any]] | None:
        """The message a destination last reported posting for an incident (what its sender
        returned as ``Outcome.delivered(message=…)``), with the alert status it was posted
        for; ``None``: none."""
        ...


class _NoHistory:
    """An outbox with nothing in it (``route`` before anything was ever sent)."""

    def last_notified(self, rule: str, asset_id: str, destination: str,
                      since: float) -> float | None:
        return None

    def count_notified(self, since: float, *, rule: str | None = None,
                       destination: str | None = None) -> int:
        return 0

    def digest_closes(self, batch_key: str) -> float | None:
        return None

    def mutes(self, at: float) -> Sequence[Mute]:
        return ()

    def check_state(self, key: tuple[str, str, str]) -> CheckState | None:
        return None

    def failing(self, since: float) -> Sequence[Failing]:
        return ()

    def posted(self, destination: str, dedup_key: str) -> tuple[str, Mapping[str, Any]] | None:
        return None


NO_HISTORY: History = _NoHistory()
