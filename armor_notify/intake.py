"""Reading alerts from JSON (a file, stdin, a string or parsed data), every problem reported."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .alert import BUILTIN_EVENT_TYPES, Alert
from .errors import AlertError, Problem

MAX_INPUT_BYTES = 16 * 1024 * 1024


def read_alerts(path: str, event_types: Sequence[str] = BUILTIN_EVENT_TYPES) -> list[Alert]:
    """Alerts from a JSON file (one object, an array, or JSON lines), or standard input (``-``)."""
    name = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            text = sys.stdin.read(MAX_INPUT_BYTES + 1)
        else:
            with Path(path).open(encoding="utf-8") as fh:
                text = fh.read(MAX_INPUT_BYTES + 1)
    except FileNotFoundError:
        raise AlertError([Problem(name, "", "alert file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AlertError([Problem(name, "", f"cannot read the alert file: {exc}")]) from None
    if len(text) > MAX_INPUT_BYTES:
        raise AlertError([Problem(name, "", "the alert input is larger than 16 MiB")])
    return parse_alerts_text(text, event_types, source=name)


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
    from .config import format_loc, suggest

    single = isinstance(data, dict)
    items = [data] if single else data
    if not isinstance(items, list) or not items:
        raise AlertError([Problem(source, "", "expected one alert object or a non-empty array "
                                              "of alert objects")])
    alerts: list[Alert] = []
    problems: list[Problem] = []
    fields = [f.alias or n for n, f in Alert.model_fields.items()]
    for i, item in enumerate(items):
        prefix: tuple[str | int, ...] = () if single else (i,)
        try:
            alerts.append(Alert.model_validate(item, context={"event_types": tuple(event_types)}))
        except ValidationError as exc:
            for err in exc.errors(include_input=False, include_url=False):
                loc = prefix + tuple(err["loc"])
                if err["type"] == "extra_forbidden":
                    key = str(err["loc"][-1])
                    top = len(err["loc"]) == 1
                    message = (f"unknown field '{key}'{suggest(key, fields) if top else ''}: "
                               "alerts accept only the documented fields")
                elif err["type"] == "missing":
                    message = f"missing required field '{err['loc'][-1]}'"
                else:
                    message = err["msg"].removeprefix("Value error, ")
                problems.append(Problem(source, format_loc(loc), message))
    if problems:
        raise AlertError(problems)
    return alerts
