"""Text that people read: one function that shows every character an agent could use to forge or hide output.

Anything an agent influences (a tool name, argument values, ``clientInfo``, reasons) is stored exactly as it
arrived, so the audit hash covers the real bytes. Whenever it is shown to a person (a terminal, a log file, the
console) it goes through :func:`escape_text` (or :func:`json_text` for JSON a person may read), so a CR/LF cannot
start a forged line, an ANSI escape (ECMA-48 CSI/OSC) cannot recolour or clear a terminal, and a bidirectional
control (Unicode TR #9: U+202A-U+202E, U+2066-U+2069, and the marks U+200E, U+200F, U+061C) cannot reorder what
the reader sees (CVE-2021-42574, "Trojan Source").

Escaped, not removed: the reader sees that the characters were there. The escapes are Python-style (``\\n``,
``\\x1b``, ``\\u202e``) and a backslash is shown doubled, so a literal ``\\n`` typed by an agent cannot pass for an
escaped line break.
"""

from __future__ import annotations

import json
import logging
import re
from traceback import TracebackException
from typing import Any

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}

_C0 = "\x00-\x1f"  # C0 controls (ECMA-48): CR, LF, ESC, BEL, NUL, ...
_RAW_IN_JSON_CLASS = (
    "\x7f-\x9f"  # DEL and the C1 controls, including CSI U+009B and NEL U+0085
    "\u061c\u200e\u200f"  # Arabic letter mark, left-to-right and right-to-left marks
    "\u202a-\u202e\u2066-\u2069"  # bidi embeddings, overrides and isolates
    "\u2028\u2029"  # line and paragraph separators (some viewers break lines there)
    "\ufeff"  # zero-width no-break space / byte-order mark
)
_UNSAFE = re.compile(f"[{_C0}{_RAW_IN_JSON_CLASS}]")
_RAW_IN_JSON = re.compile(f"[{_RAW_IN_JSON_CLASS}]")
"""What ``json.dumps`` leaves unescaped in strings (it escapes C0 itself; a raw C0 in its output is layout)."""
_UNSAFE_OR_BACKSLASH = re.compile(f"[{_C0}{_RAW_IN_JSON_CLASS}\\\\]")


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _json_escape_one(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def escape_text(value: object) -> str:
    """``value`` as text safe to print on one line of a terminal or log: controls and bidi marks escaped."""
    return _UNSAFE_OR_BACKSLASH.sub(_escape_one, str(value))


def has_unsafe_characters(value: str) -> bool:
    return _UNSAFE.search(value) is not None


def json_text(value: Any, **options: Any) -> str:
    """``json.dumps`` (non-ASCII kept readable) with the characters JSON leaves raw (C1, bidi, U+2028) escaped as
    ``\\uXXXX``: the same JSON value, safe to show in a terminal."""
    return _RAW_IN_JSON.sub(_json_escape_one, json.dumps(value, ensure_ascii=False, **options))


class EscapingFormatter(logging.Formatter):
    """Wraps a handler's formatter so every record's message is one line with its controls escaped.

    The message (with its arguments merged in) is escaped before the wrapped formatter lays out the line; a
    traceback keeps its own line breaks (they are the formatter's, not an agent's) but each of its lines is escaped,
    so an agent-supplied value inside an exception message cannot pass for a line of its own.
    """

    def __init__(self, inner: logging.Formatter | None = None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.msg, record.args, record.exc_text, record.stack_info
        try:
            record.msg, record.args = escape_text(record.getMessage()), None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = "".join(_traceback_lines(TracebackException.from_exception(record.exc_info[1])))
                record.exc_text = record.exc_text.rstrip("\n")
            if record.stack_info:
                record.stack_info = _escape_lines(record.stack_info)
            return self.inner.format(record)
        finally:
            record.msg, record.args, record.exc_text, record.stack_info = saved


def _traceback_lines(te: TracebackException) -> list[str]:
    """A traceback as Python prints it, except that each exception's message is one escaped line."""
    parts: list[str] = []
    if te.__cause__ is not None:
        parts += [*_traceback_lines(te.__cause__), f"\n{_CAUSE}\n\n"]
    elif te.__context__ is not None and not te.__suppress_context__:
        parts += [*_traceback_lines(te.__context__), f"\n{_CONTEXT}\n\n"]
    if te.stack:
        parts += ["Traceback (most recent call last):\n", *(_escape_lines(frame) for frame in te.stack.format())]
    parts.append(escape_text("".join(te.format_exception_only()).rstrip("\n")) + "\n")
    return parts


_CAUSE = "The above exception was the direct cause of the following exception:"
_CONTEXT = "During handling of the above exception, another exception occurred:"


def _escape_lines(text: str) -> str:
    return "\n".join(_UNSAFE.sub(_escape_one, line) for line in text.split("\n"))


def install_escaping(*loggers: logging.Logger) -> None:
    """Wrap the formatter of every handler of ``loggers`` (the root logger by default) in an EscapingFormatter."""
    for logger in loggers or (logging.getLogger(),):
        for handler in logger.handlers:
            if not isinstance(handler.formatter, EscapingFormatter):
                handler.setFormatter(EscapingFormatter(handler.formatter))
