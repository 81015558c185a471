"""Appending to the audit log, and the canonical form each leaf hash is computed over (RFC 9162 section 2.1.1;
docs/audit.md).

The canonical form is JSON with sorted keys, no insignificant white space, UTF-8, timestamps as RFC 3339 UTC with
microseconds (in the spirit of RFC 8785, JSON Canonicalization Scheme; our values are only strings, integers and
null, so number canonicalisation never arises). A record's leaf hash is ``SHA-256(0x00 || canonical(record))`` over
its content (:data:`LEAF_FIELDS`: everything but the database's insertion key and the log's own columns).

:func:`append` inserts the record, carrying its leaf hash, in the caller's transaction, so it commits with the
effect or not at all. It reads nothing and locks nothing shared: the insertion key comes from an identity column on
PostgreSQL (``nextval`` is never held to commit), and on SQLite it is the rowid, which SQLite assigns as
``MAX(seq) + 1`` under the write lock that every SQLite write transaction holds anyway. The record's position in
the log is assigned later, outside the call, by the sequencer (:mod:`server.audit.sequencer`).

Records of the linear hash chain that came before the log (``prev_hash``/``hash`` set) keep their legacy canonical
form, ``hash = SHA-256(prev_hash || canonical(record without hash))``; their leaf is the canonical form of the whole
legacy record, chain links included (:func:`leaf_data`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring
from operator import itemgetter
from typing import Any, overload

from sqlalchemy import Table, insert
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from server.audit.merkle import leaf_hash as merkle_leaf_hash
from server.audit.models import AuditHead, AuditRecord
from server.storage.prepared import Prepared, defer, run

LOG_FIELDS = frozenset({"seq", "leaf_index", "leaf_hash", "prev_hash", "hash"})
LEAF_FIELDS: tuple[str, ...] = tuple(sorted(name for name in AuditRecord.model_fields if name not in LOG_FIELDS))
"""The content of a record, in canonical (sorted) order: what its leaf hash covers."""
LEGACY_FIELDS: tuple[str, ...] = tuple(
    sorted(name for name in AuditRecord.model_fields if name not in {"leaf_index", "leaf_hash", "hash"})
)
"""What a legacy chain link's hash covers: the content, ``seq`` and ``prev_hash``."""
HASHED_FIELDS = LEGACY_FIELDS  # the name the chain code used

NewRecord = dict[str, Any]
"""A record about to be appended, as its column values (:func:`server.callpath.record.build_record`)."""

RECORDS: Table = SQLModel.metadata.tables[AuditRecord.__tablename__]
HEAD: Table = SQLModel.metadata.tables[AuditHead.__tablename__]


def canonical_time(value: datetime) -> str:
    """RFC 3339 UTC with microseconds: ``2025-01-31T09:05:00.000123Z``."""
    if value.tzinfo is not None and value.tzinfo is not UTC:
        value = value.astimezone(UTC)  # naive values are UTC already: SQLite hands them back so
    return value.isoformat(timespec="microseconds")[:26] + "Z"


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_encode = _ENCODER.encode


def canonical_json(body: Mapping[str, Any]) -> bytes:
    """Sorted keys, no white space, UTF-8: the bytes a receipt's verifier recomputes from the record it carries."""
    return _encode(dict(sorted(body.items()))).encode()


def _body(fields: Sequence[str], row: Mapping[str, Any]) -> dict[str, Any]:
    body = {name: row[name] for name in fields}
    at = body["at"]
    if isinstance(at, datetime):
        body["at"] = canonical_time(at)
    elif not isinstance(at, str):
        raise TypeError(f"an audit record's time must be a datetime, not {type(at).__name__}")
    return body


_leaf_values = itemgetter(*LEAF_FIELDS)
_AT = LEAF_FIELDS.index("at")
_LEAF_KEYS = tuple(("," if index else "{") + encode_basestring(name) + ":" for index, name in enumerate(LEAF_FIELDS))
"""What precedes each field's value in a leaf's canonical JSON: its key, encoded once."""


def _leaf_data(row: Mapping[str, Any]) -> bytes:
    """``canonical_json(_body(LEAF_FIELDS, row))`` (a missing field raises the same ``KeyError``, a time that is
    none the same ``TypeError``), written field by field: :data:`LEAF_FIELDS` is sorted, so the body needs no
    sorting, and its keys are encoded once. A record's values are text, integers and ``None``, each written as
    ``json`` writes it; anything else is left to the encoder itself, given the body (about 1.5 us less a record)."""
    values = list(_leaf_values(row))
    at = values[_AT]
    if isinstance(at, datetime):
        values[_AT] = canonical_time(at)
    elif not isinstance(at, str):
        raise TypeError(f"an audit record's time must be a datetime, not {type(at).__name__}")
    parts: list[str] = []
    add = parts.append
    for key, value in zip(_LEAF_KEYS, values, strict=True):
        add(key)
        if value is None:
            add("null")
        elif value.__class__ is str:
            add(encode_basestring(value))
        elif value.__class__ is int:
            add(int.__repr__(value))
        else:  # a bool, a float, a subclass, ...: what the encoder makes of it (or how it refuses it)
            return _encode(dict(zip(LEAF_FIELDS, values, strict=True))).encode()
    add("}")
    return "".join(parts).encode()


def is_legacy(row: Mapping[str, Any]) -> bool:
    """Written by the linear chain before the Merkle log."""
    return row.get("hash") is not None and row.get("leaf_hash") is None


def leaf_body(row: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a record's leaf covers, as JSON values (``at`` as RFC 3339): what a receipt carries."""
    if is_legacy(row):
        return _body((*LEGACY_FIELDS, "hash"), row)
    return _body(LEAF_FIELDS, row)


def leaf_data(row: Mapping[str, Any]) -> bytes:
    return canonical_json(_body((*LEGACY_FIELDS, "hash"), row)) if is_legacy(row) else _leaf_data(row)


def leaf_hash_of(row: Mapping[str, Any]) -> bytes:
    """``SHA-256(0x00 || canonical record)`` of a record given as a mapping of column name to value."""
    return merkle_leaf_hash(leaf_data(row))


def canonical_values(values: Sequence[Any]) -> bytes:
    """The legacy canonical bytes of a record given as its values in :data:`LEGACY_FIELDS` order."""
    return canonical_json(_body(LEGACY_FIELDS, dict(zip(LEGACY_FIELDS, values, strict=True))))


def legacy_link_hash(row: Mapping[str, Any]) -> str:
    """The hash a legacy chain record must carry: SHA-256 over its ``prev_hash`` and its legacy canonical bytes."""
    return hashlib.sha256(str(row["prev_hash"]).encode() + canonical_json(_body(LEGACY_FIELDS, row))).hexdigest()


def record_values(record: AuditRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in AuditRecord.model_fields}


def stored_leaf_intact(row: Mapping[str, Any]) -> bool:
    """Whether a record's content still matches what it was committed with (its leaf hash, or its chain link). A
    record whose time is no time at all (emptied by an owner) does not."""
    if not isinstance(row.get("at"), datetime | str):
        return False
    if is_legacy(row):
        return bool(legacy_link_hash(row) == row["hash"])
    return row.get("leaf_hash") is not None and leaf_hash_of(row).hex() == row["leaf_hash"]


_INSERT_RECORD = Prepared(insert(RECORDS))
_INSERT_RETURNING_SEQ = Prepared(insert(RECORDS).returning(RECORDS.c.seq))


@overload
async def append(session: AsyncSession, record: AuditRecord) -> AuditRecord: ...
@overload
async def append(session: AsyncSession, record: NewRecord) -> None: ...
async def append(session: AsyncSession, record: AuditRecord | NewRecord) -> AuditRecord | None:
    """Insert ``record``, carrying its leaf hash, inside the caller's transaction; it commits with the effect.

    ``record``: an :class:`AuditRecord`, or its column values (what :func:`server.callpath.record.build_record`
    gives, without building an ORM object). Nothing shared is read or locked. Whatever the caller has pending in the
    session is flushed first, so the record is the transaction's last write. The insertion key ``seq`` comes from
    the database; ``leaf_index`` stays unset until the sequencer integrates the record.
    """
    values = record_values(record) if isinstance(record, AuditRecord) else dict(record)
    values["leaf_index"] = None
    values["prev_hash"] = values["hash"] = None
    values["leaf_hash"] = leaf = merkle_leaf_hash(_leaf_data(values)).hex()
    values.pop("seq", None)
    if isinstance(record, AuditRecord):
        seq = int((await run(session, _INSERT_RETURNING_SEQ, values)).scalar())
    elif session.bind is not None and session.bind.dialect.name == "sqlite":
        await run(session, _INSERT_RECORD, values)  # seq: the rowid, MAX + 1 under the transaction's write lock
        return None
    else:  # sent with the call's other writes, in one round trip (server.storage.prepared.deferred.defer)
        await defer(session, _INSERT_RECORD, values, expect=1)
        return None
    record.seq, record.leaf_hash = seq, leaf
    record.leaf_index = record.prev_hash = record.hash = None
    return record
