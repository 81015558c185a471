"""What one invocation leaves behind: its audit record and the MCP answer the agent reads.

DESIGN.md section 6 (what a record holds: when, who, from where, what, the decision and outcome, latency, request
and trace ids; arguments with sensitive fields redacted plus a digest of all of them) and MCP specification
2025-11-25, "Tools" (results: ``structuredContent``; a refusal is a result with ``isError: true``). The Enforcer
decides what happened; this module only writes it down, so every path (a call, a listing, a refusal at the HTTP edge,
an approved action run later) records the same fields the same way.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import mcp_types as types
from opentelemetry import trace
from pydantic import BaseModel

from scopes.policy import Decision
from server.audit.chain import LOG_FIELDS, NewRecord
from server.audit.models import AuditRecord
from server.audit.redaction import arguments_digest, canonical_json, redact
from server.auth.principal import Principal
from server.callpath.answers import Refusal
from server.callpath.decide import audit_summary
from server.memo import PerObject


@dataclass(frozen=True, slots=True)
class CallInfo:
    """Where a request came from, for the audit record."""

    transport: str
    client_address: str | None = None
    client_name: str | None = None
    client_version: str | None = None
    origin: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    idempotency_key: str | None = None
    """The call's idempotency key, once admission has read it: every record of the call names it."""


@dataclass(slots=True)
class Outcome:
    """How an invocation ended, as its audit record keeps it."""

    decision: str
    outcome: str
    reason_code: str | None = None
    reason: str | None = None
    rule_id: str | None = None
    policy_version: str | None = None
    summary: dict[str, Any] = field(default_factory=dict[str, Any])
    customer_id: str | None = None
    approval_id: str | None = None


@dataclass(frozen=True, slots=True)
class Invocation:
    """One request being answered: who, from where, which tool with which arguments, and since when."""

    principal: Principal | None
    info: CallInfo
    tool: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict[str, Any])
    """The arguments as the client sent them (less the idempotency key)."""
    sensitive: frozenset[str] = frozenset()
    """Argument fields the record keeps redacted (their digest is kept)."""
    started: float = field(default_factory=time.perf_counter)


def trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def refusal_result(refusal: Refusal) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=refusal.message)],
        structured_content=refusal.model_dump(mode="json", exclude_none=True),
        is_error=True,
    )


def success_result(result: BaseModel | dict[str, Any], *, meta: dict[str, Any] | None = None) -> types.CallToolResult:
    """A tool's result as the answer the agent reads; ``result`` as its model or as its JSON dump already made."""
    data = result if isinstance(result, dict) else result.model_dump(mode="json")
    answer = types.CallToolResult(
        content=[types.TextContent(type="text", text=canonical_json(data))],
        structured_content=data,
        is_error=False,
    )
    if meta is not None:
        answer.meta = meta
    return answer


def build_record(
    instance: str, call: Invocation, outcome: Outcome, audit_id: str, at: datetime, *, kind: str = "call"
) -> NewRecord:
    """The audit record of one invocation (DESIGN.md section 6), as its column values (no ORM object is built on
    the call path); its leaf hash and insertion key are set by ``chain.append``."""
    principal, info, tool, raw = call.principal, call.info, call.tool, call.raw
    customer_id = outcome.customer_id or _string_or_none(raw.get("customer_id"))
    record: dict[str, Any] = {
        "id": audit_id,
        "at": at,
        "instance": instance,
        "kind": kind,
        **(_identity(principal) if principal else _NO_IDENTITY),
        "transport": info.transport,
        "client_address": info.client_address,
        "client_name": info.client_name,
        "client_version": info.client_version,
        "origin": info.origin,
        "user_agent": info.user_agent,
        "tool": tool,
        "customer_id": customer_id,
        "arguments": canonical_json(redact(raw, call.sensitive)),
        "arguments_digest": arguments_digest(raw) if tool else None,
        "decision": outcome.decision,
        "reason_code": outcome.reason_code,
        "reason": outcome.reason,
        "rule_id": outcome.rule_id,
        "policy_version": outcome.policy_version,
        "outcome": outcome.outcome,
        "result_summary": canonical_json(outcome.summary),
        "latency_us": int((time.perf_counter() - call.started) * 1_000_000),
        "approval_id": outcome.approval_id,
        "idempotency_key": info.idempotency_key,
        "request_id": info.request_id,
        "trace_id": trace_id(),
    }
    for name, limit in _CHECKED_COLUMNS:  # _fit_to_columns(record), for the columns that can need it
        value = record[name]
        if isinstance(value, str) and (len(value) > limit or "\x00" in value):
            record[name] = _fitted(value, limit)
    return record


def _identity_of(principal: Principal) -> dict[str, Any]:
    return _fit_to_columns(
        {
            "subject": principal.subject,
            "client_id": principal.client_id,
            "issuer": principal.issuer,
            "scopes": " ".join(sorted(principal.scopes)),
            "token_id": principal.token_id,
            "tenant": principal.tenant,
            "actor": principal.actor,
        }
    )


_identity: PerObject[Principal, dict[str, Any]] = PerObject(_identity_of)
"""A record's identity columns, worked out and fitted to their columns once per principal (the same one comes back
for every call with a token; it is frozen, and the record copies the columns into a dict of its own)."""
_IDENTITY_COLUMNS = ("subject", "client_id", "issuer", "scopes", "token_id", "tenant", "actor")
_NO_IDENTITY: dict[str, Any] = dict.fromkeys(_IDENTITY_COLUMNS)
"""The identity columns of a record with no principal (a refusal before the token was verified): all empty."""


def _fit_to_columns(record: dict[str, Any]) -> dict[str, Any]:
    """Make every text field storable as it is on both engines: no NUL byte (PostgreSQL refuses it in text) and no
    more characters than its column holds (PostgreSQL refuses, SQLite would keep them). Client-chosen values (a tool
    name, a client name, an argument) must never make the record of a refused call impossible to write."""
    for name, limit in _TEXT_COLUMNS:
        value = record.get(name)
        if isinstance(value, str) and (len(value) > limit or "\x00" in value):
            record[name] = _fitted(value, limit)
    return record


def _fitted(value: str, limit: int) -> str:
    """``value`` with its NUL bytes written out and cut to ``limit`` characters, the last one an ellipsis."""
    fitted = value.replace("\x00", "\\u0000") if "\x00" in value else value
    return fitted[: limit - 1] + "\u2026" if len(fitted) > limit else fitted


_TEXT_COLUMNS: tuple[tuple[str, int], ...] = tuple(
    (column.name, getattr(column.type, "length", None) or sys.maxsize)
    for column in AuditRecord.__table__.columns  # type: ignore[attr-defined]
    if column.name in AuditRecord.model_fields
)
"""Each column and the characters it holds (``sys.maxsize``: a ``TEXT`` column, no limit)."""


def _can_need_fitting(name: str, limit: int) -> bool:
    """Whether :func:`build_record`'s value for column ``name`` can hold a NUL byte or exceed ``limit``.

    Not: the log's own columns (set by ``chain.append``), the identity columns (fitted once per principal,
    :data:`_identity`; all ``None`` without one), what is not text (``at``, ``latency_us``), canonical JSON (which
    writes every control character, NUL included, as an escape) while its column has no limit, and a SHA-256 hex
    digest while its column holds 64 characters. A migration that narrows one of these makes it fitted again."""
    if name in LOG_FIELDS or name in _IDENTITY_COLUMNS or name in ("at", "latency_us"):
        return False
    if name in ("arguments", "result_summary"):
        return limit != sys.maxsize
    if name == "arguments_digest":
        return limit < 64
    return True


_CHECKED_COLUMNS = tuple((name, limit) for name, limit in _TEXT_COLUMNS if _can_need_fitting(name, limit))
"""The columns :func:`build_record` fits (the log's own columns are set by ``chain.append``)."""


def decided_outcome(
    kind: str, ended: str, decision: Decision, summary: dict[str, Any], customer_id: str | None
) -> Outcome:
    """An outcome carrying the decision: its reason code, rule, policy version, and what shadow rules said."""
    return Outcome(
        kind,
        ended,
        decision.reason_code,
        decision.audit_reason or decision.reason,
        decision.rule_id,
        decision.policy_version,
        summary=audit_summary(decision, summary),
        customer_id=customer_id,
    )


def _string_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def result_summary(result: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """A short, non-sensitive summary of a result for the audit record: its identifiers and status fields."""
    data = result if isinstance(result, dict) else result.model_dump(mode="json")
    keep = {key: value for key, value in data.items() if key in SUMMARY_KEYS or key.endswith("_id")}
    if not keep and "items" not in data:
        keep = {"fields": sorted(data)}
    for key, value in data.items():
        if isinstance(value, list):
            keep[f"{key}_count"] = len(value)
    return keep


SUMMARY_KEYS = frozenset({"id", "status", "amount", "currency", "refund_id", "order_id", "customer_id"})
