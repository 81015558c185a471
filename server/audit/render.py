"""Audit records for people and for machines: one-line summaries (``tail``), a full view (``show``), and the JSON
object of each JSON Lines export (``export``; RFC 8259 values, one object per line, for SIEM ingestion).

In the export, ``arguments`` and ``result_summary`` are JSON objects rather than the strings stored (their
canonical JSON, :func:`server.audit.redaction.canonical_json`, gives the stored string back, so an exported record
can still be checked against its hash), ``scopes`` is a list and ``at`` is RFC 3339 UTC.

Every agent-influenced value is shown escaped (:mod:`server.display`): the text formats escape control and bidi
characters, and the JSON forms write them as ``\\uXXXX`` escapes, which parse back to the exact stored value.
"""

from __future__ import annotations

import json
from typing import Any

from server.audit.chain import canonical_time, is_legacy, stored_leaf_intact
from server.audit.query import AuditRow
from server.display import escape_text, json_text

EXPORT_VERSION = 1


def _time(row: AuditRow) -> str | None:
    """``at`` as RFC 3339, or None when the column was emptied (no writer leaves it null; verify calls it altered)."""
    return canonical_time(row["at"]) if row["at"] is not None else None


def _parsed(text: object) -> Any:
    try:
        return json.loads(str(text))
    except ValueError:
        return text


def export_object(row: AuditRow) -> dict[str, Any]:
    data = dict(row)
    data["at"] = _time(row)
    data["arguments"] = _parsed(row["arguments"])
    data["result_summary"] = _parsed(row["result_summary"])
    data["scopes"] = str(row["scopes"]).split() if row["scopes"] else []
    data["export_version"] = EXPORT_VERSION
    return data


def export_line(row: AuditRow) -> str:
    return json_text(export_object(row), separators=(",", ":"))


def _who(row: AuditRow) -> str:
    client, subject = row["client_id"], row["subject"]
    if client is None and subject is None:
        return "(unauthenticated)"
    if client == subject or subject is None:
        return escape_text(client)
    return f"{escape_text(client)} ({escape_text(subject)})"


def summary_line(row: AuditRow) -> str:
    """``#42 2025-01-31T09:05:00.000123Z allow/succeeded refund_create refunds-agent (agent:refunds) ...``"""
    what = row["tool"] or f"[{row['kind']}]"
    parts = [
        f"#{row['seq']}",
        _time(row) or "-",
        f"{row['decision']}/{row['outcome']}",
        escape_text(what),
        _who(row),
    ]
    if row["customer_id"]:
        parts.append(f"customer={escape_text(row['customer_id'])}")
    if row["reason_code"]:
        parts.append(f"reason={escape_text(row['reason_code'])}")
    if row["approval_id"]:
        parts.append(f"approval={escape_text(row['approval_id'])}")
    parts.append(f"{int(row['latency_us']) / 1000:.1f}ms" if row["latency_us"] is not None else "-")
    parts.append(escape_text(row["id"]))
    return " ".join(parts)


def detail_lines(row: AuditRow) -> list[str]:
    """Every field, one per line, with the hash recomputed so the reader sees whether this record is intact."""
    data = export_object(row)
    data.pop("export_version")
    width = max(len(key) for key in data)
    lines = []
    for key, value in data.items():
        if value is None:
            shown = "-"
        elif isinstance(value, dict | list):
            shown = json_text(value, sort_keys=True)
        else:
            shown = escape_text(value)
        lines.append(f"{key:<{width}}  {shown}")
    what = "legacy chain hash" if is_legacy(row) else "leaf hash"
    intact = f"{what} matches content" if stored_leaf_intact(row) else f"{what.upper()} DOES NOT MATCH CONTENT"
    position = "not integrated yet" if row["leaf_index"] is None else f"leaf {row['leaf_index']}"
    lines.append(f"{'integrity':<{width}}  {intact}; {position}")
    return lines
