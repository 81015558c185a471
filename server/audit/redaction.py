"""What of a tool's arguments the audit record keeps: everything but sensitive values (DESIGN.md section 6).

Sensitive fields are declared where the tool is declared (``@tool(sensitive=...)``) and replaced by a marker. Two
kinds of value are treated as sensitive by default, declared or not, because they are where personal data hides:

- **email addresses**: any string value containing one (RFC 5322 ``local@domain``, loosely matched);
- **free text**: any string value containing white space or longer than :data:`FREE_TEXT_LENGTH` characters.
  Identifiers, codes, amounts and enumerations (``cus_1001``, ``EUR``, ``"12.50"``, ``pending``) have neither.

:func:`default_sensitive_fields` gives the same defaults from an argument model's schema (a string field without a
``pattern`` or ``enum`` is free text; a field named or formatted as an email is an email), for declaring them where
the tool is declared. A SHA-256 digest over the canonical JSON of the full arguments is kept beside the redacted
form, so an auditor can check a claimed argument set against the record and approvals can be bound to the exact
arguments (DESIGN.md section 2, "Approval"). Nested objects and lists are redacted the same way, value by value.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

REDACTED = "[redacted]"
REDACTED_EMAIL = "[redacted:email]"
REDACTED_TEXT = "[redacted:text]"
FREE_TEXT_LENGTH = 64

_EMAIL = re.compile(r"[^\s@]+@[^\s@]+\.[^\s@]+")
_WHITESPACE = re.compile(r"\s")


def canonical_json(value: Any) -> str:
    return _CANONICAL.encode(value)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
"""What ``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)`` builds on every
call, built once (a call's record and answer encode three or four values; the encoder keeps no state between them)."""


def arguments_digest(arguments: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(dict(arguments)).encode()).hexdigest()


def redact_value(value: Any) -> Any:
    """A value with the default rules applied: emails and free text replaced by a marker, recursively."""
    if isinstance(value, str):
        if "@" in value and _EMAIL.search(value):  # an address has an "@": most values are spared the search
            return REDACTED_EMAIL
        if len(value) > FREE_TEXT_LENGTH or _WHITESPACE.search(value):
            return REDACTED_TEXT
        return value
    if isinstance(value, Mapping):
        return {str(key): redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    return value


def redact(arguments: Mapping[str, Any], sensitive: frozenset[str]) -> dict[str, Any]:
    """The arguments as the audit record keeps them: declared fields replaced, the default rules applied to the rest."""
    return {key: (REDACTED if key in sensitive else redact_value(value)) for key, value in arguments.items()}


def _is_free_text(schema: Mapping[str, Any]) -> bool:
    variants = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(variants, list):
        return any(isinstance(v, Mapping) and _is_free_text(v) for v in variants)
    return schema.get("type") == "string" and "pattern" not in schema and "enum" not in schema and "const" not in schema


def default_sensitive_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields of an argument model that are sensitive by default: emails and unconstrained (free) text."""
    properties: Mapping[str, Any] = model.model_json_schema().get("properties", {})
    found: set[str] = set()
    for name, schema in properties.items():
        if not isinstance(schema, Mapping):
            continue
        email = "email" in name.lower() or schema.get("format") == "email"
        if email or _is_free_text(schema):
            found.add(name)
    return frozenset(found)
