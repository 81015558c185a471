"""The one check every inbound JSON-RPC message passes before the SDK sees it, on HTTP and stdio alike.

- **Duplicate member names** (at any depth: the envelope, ``params``, ``arguments``) make the message unparseable:
  RFC 8259 section 4 leaves their meaning to each implementation, so a gateway reading the first ``amount`` and
  Mandate reading the last would disagree about what was approved. I-JSON (RFC 7493 section 2.3) forbids them; we
  answer JSON-RPC 2.0 section 5.1 **-32700 Parse error** with ``id: null`` (no member of an ambiguous object, the
  ``id`` included, can be trusted), and nothing runs.
- Text that is not JSON at all (truncated, not UTF-8, nested past the parser's depth) is -32700 as well.
- JSON that is not one JSON-RPC message object (an array, a number, an object without ``jsonrpc: "2.0"`` and a
  method or result) is **-32600 Invalid Request** (section 5.1). MCP (2025-06-18 onwards) has no batches.

The messages say what is wrong in a sentence; they never carry a parser's or validator's internals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from pydantic import ValidationError

PARSE_ERROR = -32700
INVALID_REQUEST = -32600


class DuplicateMember(ValueError):
    """An object has two members with the same name."""


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a message is refused: a JSON-RPC error to answer with."""

    code: int
    message: str
    id: str | int | None = None

    def response(self) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": self.id, "error": {"code": self.code, "message": self.message}}

    def error_message(self) -> types.JSONRPCError:
        return types.JSONRPCError(
            jsonrpc="2.0", id=self.id, error=types.ErrorData(code=self.code, message=self.message)
        )


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise DuplicateMember(name)
        result[name] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # RFC 8259 section 6: NaN and Infinity are not numbers in JSON


def strict_loads(body: bytes | str) -> Any:
    """JSON text to a value, refusing duplicate member names at any depth and the non-standard NaN/Infinity
    (raises ValueError or RecursionError)."""
    return json.loads(body, object_pairs_hook=_unique_members, parse_constant=_no_constant)


def check_message(body: bytes | str) -> Problem | None:
    """``None`` when ``body`` is one unambiguous JSON-RPC message; otherwise the error to answer with."""
    return read_message(body)[1]


def read_message(body: bytes | str) -> tuple[dict[str, Any] | None, Problem | None]:
    """:func:`check_message` and the message it accepted, parsed once: ``(message, None)`` or ``(None, problem)``."""
    try:
        value = strict_loads(body)
    except DuplicateMember as exc:
        return None, Problem(
            PARSE_ERROR,
            f"Parse error: the member {_shown(str(exc))} appears more than once in one object; duplicate names "
            "are ambiguous, so the message was not read and nothing was done",
        )
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None, Problem(PARSE_ERROR, "Parse error: the message is not valid JSON, so nothing was done")
    if not isinstance(value, dict):
        kind = "an array (batches are not part of MCP)" if isinstance(value, list) else "not an object"
        return None, Problem(
            INVALID_REQUEST, f"Invalid Request: the message is {kind}; send one JSON-RPC request object"
        )
    try:
        types.jsonrpc_message_adapter.validate_python(value, by_name=False)
    except ValidationError:
        request_id = value.get("id")
        known_id = request_id if isinstance(request_id, str | int) and not isinstance(request_id, bool) else None
        return None, Problem(
            INVALID_REQUEST,
            'Invalid Request: not a JSON-RPC 2.0 message (it needs "jsonrpc": "2.0" and a string "method", or a '
            "response's result or error)",
            known_id,
        )
    return value, None


def _shown(name: str) -> str:
    text = json.dumps(name)
    return text if len(text) <= 66 else text[:60] + '..."'
