"""Reading alerts from JSON (a file, stdin, a string or parsed data), every problem reported.

An input is one JSON object, an array of them, or JSON lines (one object a line). Objects and
arrays are read whole (at most 16 MiB). JSON lines can be streamed through :class:`AlertInput`,
which checks every line first (so a bad line is reported before anything is routed or sent)
and then reads the alerts again one at a time, never holding them all.
"""

from __future__ import annotations

import json
import math
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from .alert import BUILTIN_EVENT_TYPES, Alert
from .errors import AlertError, Problem
from .sources import Source, SourceAlert, SourceInput
from .validation import format_loc, suggest

MAX_INPUT_BYTES = 16 * 1024 * 1024
"""The most an object or array input (or one line of JSON lines) may hold."""
MAX_STDIN_BYTES = 1024 * 1024 * 1024
"""The most standard input may hold (it is copied to a temporary file to be read twice)."""
MAX_PROBLEMS = 100
"""Problems reported for one input; more are counted, not listed."""
MAX_DEPTH = 32
"""The deepest nesting of objects and arrays in one alert (an alert itself needs four)."""


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
                # utf-8-sig: a byte order mark (as some Windows editors write) is skipped.
                return Path(path).open(encoding="utf-8-sig")
            # Kept open until close(); standard input can be read only once, the spool twice.
            limit = self.max_bytes if self.max_bytes is not None else MAX_STDIN_BYTES
            spool = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
            try:
                copied = 0
                while chunk := sys.stdin.read(min(2**20, limit + 1 - copied)):
                    if not copied:
                        chunk = chunk.removeprefix("\ufeff")  # a byte order mark
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
            data = _loads(line)
        except json.JSONDecodeError as exc:
            return [Problem(self.name, "", f"not valid JSON: {exc.msg} (reading it as JSON "
                                           "lines, one alert object a line)", number)]
        except _TooDeep as deep:
            return [Problem(self.name, "", deep.message, number)]
        if not isinstance(data, (dict, _Repeated)):
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
        data = _loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":
            raise AlertError([Problem(source, "", f"not valid JSON: {exc.msg}",
                                      exc.lineno)]) from None
        data = _json_lines(text, source)  # several documents: JSON lines, one alert a line
    except _TooDeep as deep:
        raise AlertError([Problem(source, "", deep.message, deep.line)]) from None
    return parse_alerts(data, event_types, source=source)


def _json_lines(text: str, source: str) -> list[Any]:
    items: list[Any] = []
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(_loads(line))
        except json.JSONDecodeError as exc:
            problems.append(Problem(source, "", f"not valid JSON: {exc.msg} (reading it as JSON "
                                                "lines, one alert object a line)", number))
        except _TooDeep as deep:
            problems.append(Problem(source, "", deep.message, number))
    if problems:
        raise AlertError(problems)
    return items


def parse_alerts(data: Any, event_types: Sequence[str] = BUILTIN_EVENT_TYPES, *,
                 source: str = "<input>") -> list[Alert]:
    """Validate one alert object or an array of them; raise :class:`AlertError` with every problem."""
    single = isinstance(data, (dict, _Repeated))
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


def read_source(source: Source, given: SourceInput,
                event_types: Sequence[str] = BUILTIN_EVENT_TYPES, *,
                passed: list[Alert] | None = None) -> list[Alert]:
    """The alerts ``source`` makes of ``given``: its alert objects validated as native ones, every
    problem named at its place in the input (``alerts[2].asset.name``). Raises
    :class:`AlertError` (a :class:`SourceError` for input the source cannot read). A check
    result gets the source's name as its ``check.source``. Checks that passed are kept when
    they carry a ``check`` (the ledger resolves with them), or appended to ``passed`` when it
    is given; others are left out."""
    kinds = tuple(event_types)
    if given.is_directory and "directory" not in source.reads:
        raise given.fail(f"is a directory; the {source.name} source reads "
                         f"{' or '.join(r for r in source.reads if r != 'body') or 'files'}")
    try:
        made = list(source.read(given))
    except AlertError:
        raise
    except Exception as exc:  # a source plugin's bug: named, never a traceback
        raise given.fail(f"the {source.name} source failed: {type(exc).__name__}: {exc}") \
            from None
    wrong = next((item for item in made if not isinstance(item, SourceAlert)), None)
    if wrong is not None:
        raise given.fail(f"the {source.name} source returned {type(wrong).__name__}, not "
                         "SourceAlert")
    alerts: list[Alert] = []
    problems: list[Problem] = []
    for item in made:
        data = dict(item.data)
        if isinstance(data.get("check"), dict) and "source" not in data["check"]:
            data["check"] = {**data["check"], "source": source.name}
        if item.passed and passed is None and "check" not in data:
            continue
        try:
            (passed if item.passed and passed is not None else alerts).append(
                _validate(data, kinds))
        except _Invalid as invalid:
            problems.extend(Problem(item.file or given.name, _join(item.where, path),
                                    f"{message} (as made by the {source.name} source)")
                            for path, message in invalid.problems)
        if len(problems) >= MAX_PROBLEMS:
            break
    if problems:
        raise AlertError(problems[:MAX_PROBLEMS])
    return alerts


def source_input(path: str) -> SourceInput:
    """A file or directory to read with a source, or standard input (``-``), read whole."""
    if path != "-":
        return SourceInput.from_path(path)
    data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise AlertError([Problem("<stdin>", "", "standard input is larger than 16 MiB: name "
                                                 "the file instead")])
    return SourceInput.from_bytes(data, "<stdin>")


class SourceAlerts:
    """A source's alerts with the interface of :class:`AlertInput` (``check()``, then iterate;
    a context manager), for the commands that stream native input."""

    def __init__(self, source: Source, given: SourceInput,
                 event_types: Sequence[str] = BUILTIN_EVENT_TYPES) -> None:
        self.source, self.given, self.event_types = source, given, tuple(event_types)
        self.name = given.name
        self._alerts: list[Alert] | None = None

    def check(self) -> None:
        if self._alerts is None:
            self._alerts = read_source(self.source, self.given, self.event_types)

    def __iter__(self) -> Iterator[Alert]:
        self.check()
        assert self._alerts is not None
        yield from self._alerts

    def close(self) -> None:
        pass

    def __enter__(self) -> SourceAlerts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Invalid(Exception):
    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems


def _validate(item: Any, event_types: tuple[str, ...]) -> Alert:
    """One alert, or :class:`_Invalid` with each problem's path and message."""
    try:
        return Alert.model_validate(item, context={"event_types": event_types})
    except ValidationError as exc:
        # What JSON let through (a repeated key, NaN, deep nesting) fails validation too; it is
        # looked for only then, and named instead of the type errors it caused.
        structural = _structure(item)
        if structural:
            raise _Invalid(structural) from None
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
            try:
                return isinstance(_loads(line), (dict, _Repeated))
            except ValueError:
                return False
            except _TooDeep:  # reported when the line is read as an alert
                return line.lstrip().startswith("{") and line.rstrip().endswith("}")
    return False


# -- JSON, strictly ---------------------------------------------------------------------------------


class _Repeated:
    """A JSON object in which a key appears more than once (JSON parsers silently keep the last
    value; alerts do not allow it). Not a dict, so that validation fails where it is."""

    def __init__(self, value: dict[str, Any], repeated: tuple[str, ...]) -> None:
        self.value = value
        self.repeated = repeated


class _Constant:
    """``NaN``, ``Infinity`` or ``-Infinity``: JavaScript, not JSON numbers."""

    def __init__(self, name: str) -> None:
        self.name = name


class _TooDeep(Exception):
    def __init__(self, line: int | None) -> None:
        self.line = line
        self.message = _too_deep()


def _too_deep() -> str:
    return f"nested too deeply (more than {MAX_DEPTH} levels of objects and arrays)"


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any] | _Repeated:
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    seen: set[str] = set()
    repeated: dict[str, None] = {}
    for key, _ in pairs:
        if key in seen:
            repeated[key] = None
        seen.add(key)
    return _Repeated(out, tuple(repeated))


def _loads(text: str) -> Any:
    """JSON, with repeated keys and non-numbers kept for :func:`_structure` to report at their
    path, and :class:`_TooDeep` (with the line) where the parser would run out of stack."""
    try:
        return json.loads(text, object_pairs_hook=_object, parse_constant=_Constant,
                          parse_int=_int)
    except RecursionError:
        raise _TooDeep(_deep_line(text)) from None


def _int(text: str) -> int | float:
    """A JSON integer; one too long for Python to convert (thousands of digits) becomes an
    infinite float, which validation then reports at its path as not finite."""
    return int(text) if len(text) <= 1000 else float(text)


_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _deep_line(text: str) -> int | None:
    """The line where nesting first goes past :data:`MAX_DEPTH` (only computed on failure)."""
    depth = 0
    for token in _JSON_TOKENS.finditer(text):
        kind = token.group()
        if kind in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return text.count("\n", 0, token.start()) + 1
        elif kind in "]}":
            depth -= 1
    return None


def _structure(item: Any) -> list[tuple[str, str]]:
    """(path, message) for what JSON lets through and an alert must not hold: nesting past
    :data:`MAX_DEPTH`, repeated keys, ``NaN``/``Infinity`` and numbers too large to be finite.
    Each of them fails validation; this names them."""
    problems: list[tuple[str, str]] = []
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(item, ())]
    while stack:
        value, loc = stack.pop()
        if isinstance(value, (dict, list, tuple, _Repeated)) and len(loc) >= MAX_DEPTH:
            problems.append((format_loc(loc[:2]), _too_deep()))  # where it starts: enough
            continue
        if isinstance(value, _Repeated):
            problems.extend((format_loc((*loc, key)), f"'{key}' appears more than once in "
                             "this object: give each field once") for key in value.repeated)
            value = value.value
        if isinstance(value, dict):
            stack.extend((v, (*loc, str(k))) for k, v in reversed(value.items()))
        elif isinstance(value, (list, tuple)):
            stack.extend((v, (*loc, i)) for i, v in reversed(list(enumerate(value))))
        elif isinstance(value, _Constant):
            problems.append((format_loc(loc), f"{value.name} is not a JSON number: numbers "
                                              "must be finite"))
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append((format_loc(loc), "not a finite number (too large, or not a "
                                              "number)"))
    return problems
