"""The floor under Mandate's durable write: the same transaction a tools/call commits, through the plain driver.

A tools/call through Mandate commits one transaction: the ledger bucket (created if missing, read locked, the
conditional add), a ledger entry, the audit chain head (read locked), the audit record (with its SHA-256 link) and
the head moved forward. This measures that transaction with the standard library's ``sqlite3`` (and with plain
``psycopg`` on PostgreSQL), on a schema Mandate created, with rows copied from a real call: what the write costs
without SQLAlchemy's and aiosqlite's machinery. ``python -m bench.experiments`` prints it next to the real path.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.catalog_tools import TRIVIAL_ARGUMENTS, TRIVIAL_TOOL


async def prepare(
    workdir: Path, database_url: str | None = None
) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A Mandate database with one real call in it; returns its URL and the call's audit, bucket and entry rows."""
    from mcp.client import Client

    from bench.mandate_site import bench_settings, mint_token, open_bench_mandate
    from server.app import build_server
    from server.stdio import EnvironmentCredentials

    settings = bench_settings(workdir, tools=50, database_url=database_url)
    mandate = await open_bench_mandate(settings)
    try:
        server = build_server(mandate, EnvironmentCredentials(mint_token(settings), mandate.verifier))
        async with Client(server, mode="legacy") as client:
            for _ in range(3):
                await client.call_tool(TRIVIAL_TOOL, TRIVIAL_ARGUMENTS)
        from sqlalchemy import text

        async with mandate.db.engine.connect() as connection:
            audit = (
                (
                    await connection.execute(
                        text("SELECT * FROM audit_records WHERE kind = 'call' ORDER BY seq DESC LIMIT 1")
                    )
                )
                .mappings()
                .one()
            )
            bucket = (await connection.execute(text("SELECT * FROM ledger_buckets LIMIT 1"))).mappings().one()
            entry = (await connection.execute(text("SELECT * FROM ledger_entries LIMIT 1"))).mappings().one()
        return str(mandate.db.url.render_as_string(hide_password=False)), dict(audit), dict(bucket), dict(entry)
    finally:
        await mandate.aclose()


def _statements(placeholder: str, audit_columns: list[str], entry_columns: list[str]) -> dict[str, str]:
    # Column names come from Mandate's own schema (a row it wrote), never from input: no injection here.
    p = placeholder
    key = f"budget = {p} AND holder = {p} AND unit = {p} AND period = {p}"
    audit_values = ", ".join([p] * len(audit_columns))
    entry_values = ", ".join([p] * len(entry_columns))
    return {
        "bucket_upsert": (
            "INSERT INTO ledger_buckets (budget, holder, unit, period, spent, updated_at) "  # noqa: S608
            f"VALUES ({p}, {p}, {p}, {p}, 0, {p}) ON CONFLICT (budget, holder, unit, period) DO NOTHING"
        ),
        "bucket_read": f"SELECT spent FROM ledger_buckets WHERE {key}",  # noqa: S608
        "bucket_add": (
            f"UPDATE ledger_buckets SET spent = spent + {p}, updated_at = {p} "  # noqa: S608
            f"WHERE {key} AND spent + {p} <= {p}"
        ),
        "entry": f"INSERT INTO ledger_entries ({', '.join(entry_columns)}) VALUES ({entry_values})",  # noqa: S608
        "head": "SELECT seq, hash FROM audit_head WHERE id = 1",
        "record": f"INSERT INTO audit_records ({', '.join(audit_columns)}) VALUES ({audit_values})",  # noqa: S608
        # a no-op where the schema's trigger already moved the head with the insert
        "move": f"UPDATE audit_head SET seq = {p}, hash = {p} WHERE id = 1 AND seq < {p}",  # noqa: S608
    }


def _transaction(
    cursor: Any, sql: dict[str, str], audit: dict[str, Any], bucket: dict[str, Any], entry: dict[str, Any], lock: str
) -> None:
    from server.audit.chain import row_hash

    now = datetime.now(UTC)
    key = (bucket["budget"], bucket["holder"], bucket["unit"], bucket["period"])
    cursor.execute(sql["bucket_upsert"], (*key, now))
    cursor.execute(sql["bucket_read"] + lock, key)
    cursor.fetchone()
    cursor.execute(sql["bucket_add"], (1, now, *key, 1, 10**15))
    audit_id = f"aud_{uuid.uuid4().hex}"
    values = {**entry, "at": now, "audit_id": audit_id}
    values.pop("id", None)
    cursor.execute(sql["entry"], tuple(values.values()))
    cursor.execute(sql["head"] + lock)
    seq, prev_hash = cursor.fetchone()
    record = {**audit, "seq": seq + 1, "id": audit_id, "at": now, "prev_hash": prev_hash}
    record["hash"] = row_hash(record)
    cursor.execute(sql["record"], tuple(record.values()))
    cursor.execute(sql["move"], (record["seq"], record["hash"], record["seq"]))


def sqlite_floor(path: str, audit: dict[str, Any], bucket: dict[str, Any], entry: dict[str, Any], count: int) -> float:
    """Microseconds per transaction with the standard library's sqlite3 (WAL, synchronous=NORMAL, BEGIN IMMEDIATE)."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA foreign_keys=ON")
    entry_columns = [c for c in entry if c != "id"]
    sql = _statements("?", list(audit), entry_columns)
    audit = {k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in audit.items()}
    cursor = connection.cursor()
    started = time.perf_counter()
    for _ in range(count):
        cursor.execute("BEGIN IMMEDIATE")
        _transaction(cursor, sql, audit, bucket, entry, "")
        cursor.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed / count * 1e6


def postgres_floor(url: str, audit: dict[str, Any], bucket: dict[str, Any], entry: dict[str, Any], count: int) -> float:
    """Microseconds per transaction with plain psycopg (READ COMMITTED, FOR UPDATE locks, synchronous commit)."""
    import psycopg

    from bench.pg import _plain

    entry_columns = [c for c in entry if c != "id"]
    sql = _statements("%s", list(audit), entry_columns)
    with psycopg.connect(_plain(url).replace("postgresql+psycopg://", "postgresql://")) as connection:
        cursor = connection.cursor()
        started = time.perf_counter()
        for _ in range(count):
            _transaction(cursor, sql, audit, bucket, entry, " FOR UPDATE")
            connection.commit()
        elapsed = time.perf_counter() - started
    return elapsed / count * 1e6
