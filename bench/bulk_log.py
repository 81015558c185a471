"""Writing a large audit log fast, for the verify and proof benchmarks (docs/audit.md; issue 15).

One million realistic records (:func:`bench.bench_audit.record`), each with its real leaf hash
(``SHA-256(0x00 || canonical record)``, RFC 9162 section 2.1.1), written without positions as ``chain.append``
would, so the real sequencer then integrates them. What makes it fast:

- the canonical JSON of every record is the first record's, with its varying fields (identifiers and digits only,
  so nothing in them needs escaping) substituted into a template; a sample of rows is checked against
  :func:`server.audit.chain.leaf_hash_of` so the template can never drift from the real canonical form;
- SQLite gets one ``executemany`` in one transaction on the stdlib driver, with ``seq`` given explicitly (it has no
  identity column); PostgreSQL gets ``COPY ... FROM STDIN``. The append-only triggers still run on every row.

Not a test, and not the server's code path: only a way to reach a large log in seconds.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import make_url

from bench.bench_audit import record
from server.audit import chain

START = datetime(2025, 1, 1, tzinfo=UTC)
VARYING = ("id", "subject", "client_id", "token_id", "customer_id", "idempotency_key", "request_id", "trace_id", "at")
COLUMNS = (*chain.LEAF_FIELDS, "leaf_hash")


def _fields(index: int, at: datetime) -> dict[str, str]:
    """The varying fields of record ``index`` as they appear in its canonical JSON (no escaping needed)."""
    return {
        "id": f"aud_{index:032x}",
        "subject": f"agent:refunds-{index % 17}",
        "client_id": f"refunds-agent-{index % 17}",
        "token_id": f"jti-{index:020d}",
        "customer_id": f"cus_{1000 + index % 500}",
        "idempotency_key": f"idem-{index:016d}",
        "request_id": str(index),
        "trace_id": f"{index:032x}",
        "at": chain.canonical_time(at),
    }


def _template() -> str:
    """The canonical JSON of a record with ``{name}`` where each varying field goes."""
    values = chain.record_values(record(0))
    body = {name: values[name] for name in chain.LEAF_FIELDS}
    for name in VARYING:
        body[name] = f"@@{name}@@"
    text = chain.canonical_json(body).decode().replace("{", "{{").replace("}", "}}")
    for name in VARYING:
        text = text.replace(f"@@{name}@@", f"{{{name}}}")
    return text


def rows(count: int) -> Iterator[tuple[Any, ...]]:
    """``(seq, *LEAF_FIELDS values, leaf_hash)`` for records 0 to ``count - 1``; ``at`` as a datetime."""
    template = _template()
    base = chain.record_values(record(0))
    fixed = [base[name] for name in chain.LEAF_FIELDS]
    slots = {name: chain.LEAF_FIELDS.index(name) for name in VARYING}
    sha256 = hashlib.sha256
    for index in range(count):
        at = START + timedelta(milliseconds=index)
        fields = _fields(index, at)
        leaf = sha256(b"\x00" + template.format_map(fields).encode()).hexdigest()
        values = list(fixed)
        for name, slot in slots.items():
            values[slot] = fields[name]
        values[slots["at"]] = at
        if index % 100_000 == 0:  # the template is the canonical form, or the bench stops
            real = chain.leaf_hash_of(dict(zip(chain.LEAF_FIELDS, values, strict=True))).hex()
            if real != leaf:
                raise AssertionError("the bulk template no longer matches the canonical record form")
        yield (index + 1, *values, leaf)


def write_sqlite(url: str, count: int) -> None:
    """Append ``count`` records to a fresh SQLite log (the schema must exist and hold no records)."""
    path = make_url(url).database or ""
    connection = sqlite3.connect(path)
    try:
        # A bulk load into a scratch file: a large page cache (ten indexes grow at once) and no fsync per page.
        connection.execute("PRAGMA cache_size = -400000")
        connection.execute("PRAGMA synchronous = OFF")
        columns = ", ".join(("seq", *COLUMNS))
        marks = ", ".join("?" * (len(COLUMNS) + 1))
        at = 1 + chain.LEAF_FIELDS.index("at")
        stored = (
            (*row[:at], row[at].replace(tzinfo=None).isoformat(" ", timespec="microseconds"), *row[at + 1 :])
            for row in rows(count)
        )
        with connection:
            connection.executemany(f"INSERT INTO audit_records ({columns}) VALUES ({marks})", stored)  # noqa: S608
    finally:
        connection.close()


async def write_postgres(connection: Any, count: int) -> None:
    """Append ``count`` records through ``COPY`` on a psycopg async connection (the server assigns ``seq``)."""
    cursor = connection.cursor()
    async with cursor.copy(f"COPY audit_records ({', '.join(COLUMNS)}) FROM STDIN") as copy:
        for row in rows(count):
            await copy.write_row(row[1:])
