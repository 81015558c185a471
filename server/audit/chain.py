"""Appending to the hash chain, and the canonical form each link's hash is computed over (DESIGN.md section 6).

The canonical form is JSON with sorted keys, no insignificant white space, UTF-8, timestamps as RFC 3339 UTC with
microseconds (in the spirit of RFC 8785, JSON Canonicalization Scheme; our values are only strings, integers and
null, so number canonicalisation never arises). ``hash = SHA-256(prev_hash || canonical(record without hash))``.

Appends are linear: :func:`append` locks the single ``audit_head`` row (``SELECT ... FOR UPDATE`` on PostgreSQL; on
SQLite every write transaction already holds the database write lock from ``BEGIN IMMEDIATE``), takes the next
``seq`` and the previous hash from it, and inserts the record in the caller's transaction. The database then moves
the head to the new record, and refuses any record that does not extend the head (triggers created by
:func:`server.storage.schema.create_schema`); ``seq`` is the primary key besides. Even a writer that bypassed the
lock could not put a second record at the same position or link one to anything but the head: the chain cannot
fork. Two statements per record: the head read and the insert.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, insert, select
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from server.audit.models import GENESIS_HASH, AuditHead, AuditRecord

HASHED_FIELDS: tuple[str, ...] = tuple(sorted(name for name in AuditRecord.model_fields if name != "hash"))
"""Every column but ``hash``, in canonical (sorted) order."""

RECORDS: Table = SQLModel.metadata.tables[AuditRecord.__tablename__]
HEAD: Table = SQLModel.metadata.tables[AuditHead.__tablename__]


def canonical_time(value: datetime) -> str:
    """RFC 3339 UTC with microseconds: ``2025-01-31T09:05:00.000123Z``."""
    if value.tzinfo is not None and value.tzinfo is not UTC:
        value = value.astimezone(UTC)  # naive values are UTC already: SQLite hands them back so
    return value.isoformat(timespec="microseconds")[:26] + "Z"


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def canonical_values(values: Sequence[Any]) -> bytes:
    """The canonical bytes of a record given as its values in :data:`HASHED_FIELDS` order (a database row)."""
    body = dict(zip(HASHED_FIELDS, values, strict=True))  # keys in sorted order: the same as sort_keys=True
    at = body["at"]
    if not isinstance(at, datetime):
        raise TypeError(f"an audit record's time must be a datetime, not {type(at).__name__}")
    body["at"] = canonical_time(at)
    return _ENCODER.encode(body).encode()


def canonical_row(row: Mapping[str, Any]) -> bytes:
    """The canonical bytes of a record given as a mapping of column name to value."""
    return canonical_values([row[name] for name in HASHED_FIELDS])


def row_hash(row: Mapping[str, Any]) -> str:
    """The hash a record given as a mapping must carry: SHA-256 over its ``prev_hash`` and its canonical bytes."""
    return hashlib.sha256(str(row["prev_hash"]).encode() + canonical_row(row)).hexdigest()


def record_values(record: AuditRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in AuditRecord.model_fields}


def canonical_bytes(record: AuditRecord) -> bytes:
    return canonical_row(record_values(record))


def link_hash(record: AuditRecord) -> str:
    return row_hash(record_values(record))


_HEAD_FOR_UPDATE = select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1).with_for_update()  # SQLite: no FOR UPDATE
_INSERT_RECORD = insert(RECORDS)


async def append(session: AsyncSession, record: AuditRecord) -> AuditRecord:
    """Give ``record`` the next position in the chain and insert it, inside the caller's transaction.

    Whatever the caller has pending in the session is flushed first, so the record is the transaction's last write
    and the head row stays locked only from here to the commit. The database moves the head with the insert (a
    trigger, :mod:`server.storage.schema`), and refuses a record that does not extend the head.
    """
    await session.flush()
    connection = await session.connection()
    head = (await connection.execute(_HEAD_FOR_UPDATE)).first()
    if head is None:  # a database whose schema was created without the head row
        await connection.execute(insert(HEAD).values(id=1, seq=0, hash=GENESIS_HASH))
        seq, prev_hash = 0, GENESIS_HASH
    else:
        seq, prev_hash = int(head[0]), str(head[1])
    record.seq = seq + 1
    record.prev_hash = prev_hash
    values = record_values(record)
    record.hash = values["hash"] = row_hash(values)
    await connection.execute(_INSERT_RECORD, values)
    return record
