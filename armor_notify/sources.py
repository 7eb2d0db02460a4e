"""Alert sources: the tools that produce data alerts (dbt, Great Expectations, Alertmanager…),
plugged in the way destinations are (SPEC §7).

A plugin registers a :class:`Source` through the ``register_sources`` hook. A source reads what
its tool writes (a file, a directory of artifacts, or an HTTP request body: a
:class:`SourceInput`) and turns it into native alert objects (SPEC §1), each with the place in
the input it came from. armor-notify validates those objects exactly as it validates native
JSON, and reports every problem at its place: a source never builds :class:`Alert` models
itself, so it cannot bypass a check. What the source cannot read at all it reports as
:class:`SourceError` problems, each with its place too.

This module is part of the plugin API.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AlertError, Problem

__all__ = ["MAX_SOURCE_BYTES", "Source", "SourceAlert", "SourceError", "SourceInput"]

MAX_SOURCE_BYTES = 64 * 1024 * 1024
"""The most one input file (or body) may hold: dbt's manifest of a large project is tens of MB."""


class SourceError(AlertError):
    """The input cannot be read as the source's format: every problem, each with its place."""


@dataclass(frozen=True)
class SourceInput:
    """What a source reads: a file or a directory (``path``), or bytes already read (``data``:
    standard input, an HTTP request body). ``name`` is how messages name it."""

    name: str
    path: Path | None = None
    data: bytes | None = None

    @classmethod
    def from_path(cls, path: str | Path) -> SourceInput:
        return cls(str(path), path=Path(path))

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "<input>") -> SourceInput:
        return cls(name, data=data)

    @property
    def is_directory(self) -> bool:
        return self.path is not None and self.path.is_dir()

    def problem(self, message: str, where: str = "", file: str | None = None) -> Problem:
        """A problem at ``where`` (``alerts[2].labels``) in this input, or in ``file`` of it."""
        return Problem(file or self.name, where, message)

    def fail(self, message: str, where: str = "", file: str | None = None) -> SourceError:
        """A :class:`SourceError` with one problem, to raise."""
        return SourceError([self.problem(message, where, file)])

    def file(self, name: str) -> Path | None:
        """``name`` in the input's directory (or the input itself, when it is a file with that
        name); ``None`` when there is no such file."""
        if self.path is None:
            return None
        found = self.path / name if self.is_directory else (
            self.path if self.path.name == name else None)
        return found if found is not None and found.is_file() else None

    def read_bytes(self, path: Path | None = None) -> bytes:
        """The bytes of ``path`` (default: the input itself), at most :data:`MAX_SOURCE_BYTES`."""
        if path is None and self.data is not None:
            data = self.data
            where = self.name
        else:
            target = path or self.path
            if target is None:
                raise self.fail("nothing to read")
            where = str(target)
            try:
                with target.open("rb") as fh:
                    data = fh.read(MAX_SOURCE_BYTES + 1)
            except FileNotFoundError:
                raise SourceError([Problem(where, "", "file not found")]) from None
            except IsADirectoryError:
                raise SourceError([Problem(where, "", "is a directory; name the file, or use a "
                                                      "source that reads directories")]) from None
            except OSError as exc:
                raise SourceError([Problem(where, "", f"cannot read it: {exc.strerror or exc}")]
                                  ) from None
        if len(data) > MAX_SOURCE_BYTES:
            raise SourceError([Problem(where, "", f"larger than {MAX_SOURCE_BYTES // 2**20} MiB")])
        return data

    def read_json(self, path: Path | None = None) -> Any:
        """The JSON in ``path`` (default: the input itself); problems name the line."""
        where = str(path) if path is not None else self.name
        text = self.read_bytes(path)
        try:
            return json.loads(text.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise SourceError([Problem(where, "", "not UTF-8 text")]) from None
        except json.JSONDecodeError as exc:
            raise SourceError([Problem(where, "", f"not valid JSON: {exc.msg}", exc.lineno)]
                              ) from None
        except RecursionError:
            raise SourceError([Problem(where, "", "nested too deeply")]) from None


@dataclass(frozen=True)
class SourceAlert:
    """One native alert object a source made, and where in its input it came from (for
    problems: ``alerts[2]``, ``results[5] (test.shop.not_null_orders_id)``)."""

    where: str
    data: Mapping[str, Any]
    file: str | None = None
    """The file of the input it came from, when the input is a directory."""
    passed: bool = False
    """A check that passed (a dbt test, a fresh source). With a ``check`` in its data
    (``{"id": …, "status": "pass"}``) it is a result the check ledger needs (a pass resolves
    the check's incident), and :func:`armor_notify.intake.read_source` keeps it; without one
    it is left out."""


@dataclass(frozen=True)
class Source:
    """A kind of alert input a plugin provides, registered through ``register_sources``."""

    name: str
    """What ``--source NAME`` selects, e.g. ``alertmanager``."""
    description: str
    """One line for ``armor-notify plugins``: what it reads."""
    read: Callable[[SourceInput], Sequence[SourceAlert]]
    """Turns an input into native alert objects; raises :class:`SourceError` for input it
    cannot read. An empty sequence means the input holds nothing to alert on (every dbt test
    passed)."""
    reads: tuple[str, ...] = ("file", "body")
    """What it accepts: ``file``, ``directory``, ``body`` (an HTTP request body)."""
