"""Reading alerts from JSON (a file, stdin, a string or parsed data), every problem reported.

An input is one JSON object, an array of them, or JSON lines (one object a line). Objects and
arrays are read whole (at most 16 MiB). JSON lines can be streamed through :class:`AlertInput`,
which checks every line first (so a bad line is reported before anything is routed or sent)
and then reads the alerts again one at a time, never holding them all.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from .alert import BUILTIN_EVENT_TYPES, Alert
from .errors import AlertError, Problem

MAX_INPUT_BYTES = 16 * 1024 * 1024
"""The most an object or array input (or one line of JSON lines) may hold."""
MAX_STDIN_BYTES = 1024 * 1024 * 1024
"""The most standard input may hold (it is copied to a temporary file to be read twice)."""
MAX_PROBLEMS = 100
"""Problems reported for one input; more are counted, not listed."""


class AlertInput:
    """Alerts from a file or standard input (``-``), as a stream when they are JSON lines.

    ``check()`` reads the whole input once and raises :class:`AlertError` listing its problems;
    iterating then yields the alerts. JSON lines are validated line by line and read again when
    iterated, so memory stays flat however many there are (standard input is copied to a
    temporary file to be read twice). ``max_bytes`` caps the whole input (``None``: JSON lines
    of any size).
    """

    def __init__(self, path: str, event_types: Sequence[str] = BUILTIN_EVENT_TYPES, *,
                 max_bytes: int | None = None) -> None:
        self.name = "<stdin>" if path == "-" else path
        self.event_types = tuple(event_types)
        self.max_bytes = max_bytes
        self._whole: list[Alert] | None = None
        self._checked = False
        self._file = self._open(path)
        try:
            self.json_lines = _starts_with_a_line_object(self._file)
        except (OSError, UnicodeDecodeError) as exc:
            self.close()
            raise AlertError([Problem(self.name, "", f"cannot read the alert file: {exc}")]) \
                from None

    def _open(self, path: str) -> IO[str]:
        try:
            if path != "-":
                return Path(path).open(encoding="utf-8")
            # Kept open until close(); standard input can be read only once, the spool twice.
            limit = self.max_bytes if self.max_bytes is not None else MAX_STDIN_BYTES
            spool = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
            try:
                copied = 0
                while chunk := sys.stdin.read(min(2**20, limit + 1 - copied)):
                    spool.write(chunk)
                    copied += len(chunk)
                    if copied > limit:
                        raise AlertError([Problem(self.name, "", (
                            f"the alert input is larger than {limit // 2**20} MiB"
                            if self.max_bytes is not None else
                            f"standard input is larger than {limit // 2**20:,} MiB: name a file "
                            "instead, which is read as a stream without a limit"))])
                spool.seek(0)
            except BaseException:
                spool.close()
                raise
            return spool
        except FileNotFoundError:
            raise AlertError([Problem(self.name, "", "alert file not found")]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise AlertError([Problem(self.name, "", f"cannot read the alert file: {exc}")]) \
                from None

    def check(self) -> None:
        """Read everything once; raise :class:`AlertError` listing every problem."""
        if self._checked:
            return
        if not self.json_lines:
            self._whole = parse_alerts_text(self._read_whole(), self.event_types,
                                            source=self.name)
        else:
            problems: list[Problem] = []
            count = more = 0
            for _, found in self._lines():
                if isinstance(found, Alert):
                    count += 1
                    continue
                room = max(0, MAX_PROBLEMS - len(problems))
                problems.extend(found[:room])
                more += max(0, len(found) - room)
            if more:
                problems.append(Problem(self.name, "", f"and {more} more problems"))
            if not count and not problems:
                problems.append(Problem(self.name, "", "expected one alert object or a "
                                                       "non-empty array of alert objects"))
            if problems:
                raise AlertError(problems)
        self._checked = True

    def __iter__(self) -> Iterator[Alert]:
        self.check()
        if self._whole is not None:
            yield from self._whole
            return
        for _, found in self._lines():
            if isinstance(found, Alert):
                yield found

    def _read_whole(self) -> str:
        self._file.seek(0)
        try:
            text = self._file.read(MAX_INPUT_BYTES + 1)
        except (OSError, UnicodeDecodeError) as exc:
            raise AlertError([Problem(self.name, "", f"cannot read the alert file: {exc}")]) \
                from None
        if len(text) > MAX_INPUT_BYTES:
            raise AlertError([Problem(self.name, "", "the alert input is larger than 16 MiB; "
                                                     "JSON lines (one alert a line) may be "
                                                     "larger")])
        return text

    def _lines(self) -> Iterator[tuple[int, Alert | list[Problem]]]:
        """Each non-blank line's alert, or its problems."""
        self._file.seek(0)
        size = 0
        number = 0
        try:
            while True:
                line = self._file.readline(MAX_INPUT_BYTES + 1)
                if not line:
                    return
                number += 1
                size += len(line)
                if self.max_bytes is not None and size > self.max_bytes:
                    yield number, [Problem(self.name, "", f"the alert input is larger than "
                                                          f"{self.max_bytes // 2**20} MiB",
                                           number)]
                    return
                if len(line) > MAX_INPUT_BYTES:
                    yield number, [Problem(self.name, "", "a line is longer than 16 MiB",
                                           number)]
                    return
                if line.strip():
                    yield number, self._parse_line(line, number)
        except (OSError, UnicodeDecodeError) as exc:
            yield number + 1, [Problem(self.name, "", f"cannot read the alert file: {exc}",
                                       number + 1)]

    def _parse_line(self, line: str, number: int) -> Alert | list[Problem]:
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            return [Problem(self.name, "", f"not valid JSON: {exc.msg} (reading it as JSON "
                                           "lines, one alert object a line)", number)]
        if not isinstance(data, dict):
            return [Problem(self.name, "", "expected an alert object on this line (JSON "
                                           "lines: one alert object a line)", number)]
        try:
            return _validate(data, self.event_types)
        except _Invalid as invalid:
            return [Problem(self.name, path, message, number)
                    for path, message in invalid.problems]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> AlertInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_alerts(path: str, event_types: Sequence[str] = BUILTIN_EVENT_TYPES) -> list[Alert]:
    """Alerts from a JSON file (one object, an array, or JSON lines), or standard input (``-``),
    at most 16 MiB of them."""
    with AlertInput(path, event_types, max_bytes=MAX_INPUT_BYTES) as source:
        return list(source)


def parse_alerts_text(text: str, event_types: Sequence[str] = BUILTIN_EVENT_TYPES, *,
                      source: str = "<input>") -> list[Alert]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":
            raise AlertError([Problem(source, "", f"not valid JSON: {exc.msg}",
                                      exc.lineno)]) from None
        data = _json_lines(text, source)  # several documents: JSON lines, one alert a line
    return parse_alerts(data, event_types, source=source)


def _json_lines(text: str, source: str) -> list[Any]:
    items: list[Any] = []
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError as exc:
            problems.append(Problem(source, "", f"not valid JSON: {exc.msg} (reading it as JSON "
                                                "lines, one alert object a line)", number))
    if problems:
        raise AlertError(problems)
    return items


def parse_alerts(data: Any, event_types: Sequence[str] = BUILTIN_EVENT_TYPES, *,
                 source: str = "<input>") -> list[Alert]:
    """Validate one alert object or an array of them; raise :class:`AlertError` with every problem."""
    from .config import format_loc

    single = isinstance(data, dict)
    items = [data] if single else data
    if not isinstance(items, list) or not items:
        raise AlertError([Problem(source, "", "expected one alert object or a non-empty array "
                                              "of alert objects")])
    alerts: list[Alert] = []
    problems: list[Problem] = []
    kinds = tuple(event_types)
    for i, item in enumerate(items):
        try:
            alerts.append(_validate(item, kinds))
        except _Invalid as invalid:
            prefix = "" if single else format_loc((i,))
            problems.extend(Problem(source, _join(prefix, path), message)
                            for path, message in invalid.problems)
    if problems:
        raise AlertError(problems)
    return alerts


class _Invalid(Exception):
    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems


def _validate(item: Any, event_types: tuple[str, ...]) -> Alert:
    """One alert, or :class:`_Invalid` with each problem's path and message."""
    from .config import format_loc, suggest

    try:
        return Alert.model_validate(item, context={"event_types": event_types})
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            if err["type"] == "extra_forbidden":
                key = str(err["loc"][-1])
                top = len(err["loc"]) == 1
                fields = [f.alias or n for n, f in Alert.model_fields.items()]
                message = (f"unknown field '{key}'{suggest(key, fields) if top else ''}: "
                           "alerts accept only the documented fields")
            elif err["type"] == "missing":
                message = f"missing required field '{err['loc'][-1]}'"
            else:
                message = err["msg"].removeprefix("Value error, ")
            problems.append((format_loc(tuple(err["loc"])), message))
        raise _Invalid(problems) from None


def _join(prefix: str, path: str) -> str:
    if not prefix:
        return path
    if not path:
        return prefix
    return f"{prefix}{path}" if path.startswith("[") else f"{prefix}.{path}"


def _starts_with_a_line_object(fh: IO[str]) -> bool:
    """Whether the first non-blank line is a whole JSON object by itself (JSON lines, or an
    object written on one line, which reads the same way)."""
    while line := fh.readline(MAX_INPUT_BYTES + 1):
        if line.strip():
            with contextlib.suppress(ValueError):
                return isinstance(json.loads(line), dict)
            return False
    return False
