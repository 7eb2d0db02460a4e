"""Human output: plain aligned tables that read well in a terminal and in CI logs.

Everything the command line prints goes through ``echo`` (or ``echo_json``), so two promises are
kept in one place:

- No control character from data reaches the terminal raw. Alert text, names from the config,
  server replies and plugin messages can hold escape sequences (``ESC [1A ESC [2K`` to erase a
  line, ``ESC ] 0;…BEL`` to retitle the window, ``ESC ] 52;…`` to write the clipboard), C1
  controls, line separators or bidi overrides. ``clean`` turns each into a visible escape
  (``\\x1b``, ``\\u202e``) and is applied to every value taken from data; ``echo`` applies the same
  rule to the whole text as a last guard, keeping only the newlines and tabs the output itself
  writes.
- A closed standard output (``armor-notify worker | head -1``) ends the output quietly and stops
  nothing else: the first write that finds the pipe closed points the file descriptor at the null
  device (the recipe in Python's ``signal`` documentation, so the final flush cannot fail either),
  and later writes are discarded. Commands that only print ask ``stdout_closed()`` and stop.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence

import click

# C0 controls, DEL, C1 controls; the Unicode line and paragraph separators; the bidirectional
# marks, embeddings, overrides and isolates (U+061C, U+200E-F, U+202A-E, U+2066-9) that reorder
# what a terminal shows ("Trojan Source").
_OTHER = "\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_DATA = re.compile(f"[\x00-\x1f{_OTHER}]")
_TEXT = re.compile(f"[\x00-\x08\x0b-\x1f{_OTHER}]")  # keeps tab (09) and newline (0a)
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(value: object) -> str:
    """``value`` as text that is safe on a terminal: every control character (newlines and tabs
    too) as a visible escape such as ``\\x1b`` or ``\\n``. Use it on every value from data."""
    return _DATA.sub(_visible, str(value))


def safe(text: str) -> str:
    """``clean``, except for newlines and tabs: for whole texts the output itself lays out."""
    return _TEXT.sub(_visible, text)


class _Closed:
    stdout = False
    stderr = False


def stdout_closed() -> bool:
    """True once a write found standard output closed (the reader went away)."""
    return _Closed.stdout


def echo(text: str = "", *, err: bool = False, nl: bool = True) -> None:
    """Print ``text`` (made ``safe``) on stdout or stderr; a closed stream discards it."""
    _write(safe(text), err=err, nl=nl)


def echo_json(text: str, *, nl: bool = True) -> None:
    """Print JSON text on stdout. ``json.dumps`` with ``ensure_ascii`` (the default) escapes every
    control character and every non-ASCII character, so it needs no further cleaning."""
    _write(text, err=False, nl=nl)


def _write(text: str, *, err: bool, nl: bool) -> None:
    if _Closed.stderr if err else _Closed.stdout:
        return
    try:
        click.echo(text, err=err, nl=nl)
    except BrokenPipeError:
        _discard(err)


def _discard(err: bool) -> None:
    """Point the closed stream's file descriptor at the null device: what is still buffered and
    anything written later goes nowhere, and the interpreter's final flush succeeds."""
    if err:
        _Closed.stderr = True
    else:
        _Closed.stdout = True
    stream = sys.stderr if err else sys.stdout
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test runner's buffer)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, max_width: int = 60) -> str:
    """Columns padded to their widest cell (cells longer than ``max_width`` are cut with '…').

    Whitespace in a cell (newlines too) becomes one space, other control characters visible
    escapes (``clean``), so a cell is always one line of plain text."""
    cells = [[_cut(str(c), max_width) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in cells]
    return "\n".join(lines)


def _cut(text: str, width: int) -> str:
    text = clean(" ".join(text.split()))
    return text if len(text) <= width else text[: width - 1] + "…"
