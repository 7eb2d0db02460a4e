"""Errors meant for people: each says what is wrong, where, and what to do."""

from __future__ import annotations

from dataclasses import dataclass

# Exit codes of the command line (SPEC §6), and of ``SendReport.exit_code``.
EXIT_OK = 0
EXIT_FAILED = 1
"""Some delivery failed for good."""
EXIT_USAGE = 2
"""Bad config, input or usage: an :class:`ArmorNotifyError`."""
EXIT_QUEUED = 3
"""Some delivery is still queued for retry."""
EXIT_INTERNAL = 4
"""An internal error (a bug in armor-notify): never 1, which means a delivery failed."""


class ArmorNotifyError(Exception):
    """Base of every error armor-notify reports to users (exit code 2 on the command line)."""


@dataclass(frozen=True)
class Problem:
    """One problem found in a file: where it is and what is wrong."""

    file: str
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ProblemsError(ArmorNotifyError):
    """Every problem found at once, so a user fixes them all in one go."""

    kind = "input"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        count = len(problems)
        head = f"{count} problem{'s' if count != 1 else ''} in the {self.kind}"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in problems))


class ConfigError(ProblemsError):
    """The config file is invalid."""

    kind = "config"


class AlertError(ProblemsError):
    """An alert file is invalid."""

    kind = "alert input"


class MuteError(ProblemsError):
    """A mute that cannot be set: no scope, no reason, no end (or too long), an unknown rule."""

    kind = "mute"


class PluginError(ArmorNotifyError):
    """A plugin broke the contract in a way that makes every config ambiguous."""
