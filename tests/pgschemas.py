"""Migrated PostgreSQL schemas for the PostgreSQL pass, each migrated once and handed to test after test.

Running the migrations (``server/storage/migrations``) in a new schema costs about a second of PostgreSQL's time
(some 60 DDL statements: tables, indexes, triggers), and the PostgreSQL pass has some 500 tests that each want a
fresh database; creating and dropping a schema per test also fills the shared server's catalogs with dead rows.
So each worker keeps its migrated schemas: when a test is done with one, :meth:`SchemaPool.release` puts it back
exactly as the migrations left it, and the next test gets it.

A schema goes back only when putting it back is certain to give a fresh one, else it is dropped and the next test
gets a newly migrated schema:

- its definition must be the one the migrations built: a fingerprint of everything the schema's catalogs say
  (tables, columns and their defaults, constraints, indexes, triggers and whether they are enabled, functions,
  sequences' definitions, rules, row-level security, owners and privileges) must equal the one taken right after
  migrating (a test that disables a trigger, revokes a grant or adds a table changes it);
- nobody may still hold the audit sequencer's advisory locks for it (PostgreSQL documentation, "Advisory Locks";
  the key is the schema's name, ``server/audit/sequencer.py``): a process of the test that has not let go yet;
- the reset (below) must get its locks within ``lock_timeout``: a connection the test left in a transaction;
- it has been reused fewer than :data:`MAX_USES` times and the reset deleted at most :data:`MAX_DELETED_ROWS`
  rows: the shared server may run without autovacuum, and deleted rows stay in the tables' files until a vacuum.

The reset is one transaction with ``session_replication_role = replica`` (no trigger fires, so the append-only
guards do not refuse it and foreign keys do not order it): delete every row of every table, copy back the rows the
migrations wrote (``COPY``, byte for byte: the chain head, the revision) and set each sequence back to where the
migrations left it. Superuser only (``session_replication_role``); any failure means the schema is dropped instead.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

logger = logging.getLogger(__name__)

MAX_USES = 40
MAX_DELETED_ROWS = 20_000
LOCK_TIMEOUT = "10s"

FINGERPRINT = """
SELECT md5(coalesce(string_agg(line, E'\\n' ORDER BY line), '')) FROM (
    SELECT concat_ws(' ', 'schema', n.nspowner::regrole, n.nspacl::text) AS line
    FROM pg_namespace n WHERE n.oid = current_schema()::regnamespace
    UNION ALL
    SELECT concat_ws(' ', 'relation', c.relname, c.relkind, c.relpersistence, c.relowner::regrole, c.relacl::text,
                     array_to_string(c.reloptions, ','), c.relrowsecurity, c.relforcerowsecurity, c.relreplident)
    FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace
    UNION ALL
    SELECT concat_ws(' ', 'column', c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
                     a.attnotnull, a.attisdropped, a.attidentity, a.attgenerated, a.attcollation,
                     pg_get_expr(d.adbin, d.adrelid), a.attacl::text)
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relnamespace = current_schema()::regnamespace AND a.attnum > 0
    UNION ALL
    SELECT concat_ws(' ', 'constraint', conrelid::regclass, contypid::regtype, conname, pg_get_constraintdef(oid),
                     convalidated, condeferrable, condeferred)
    FROM pg_constraint WHERE connamespace = current_schema()::regnamespace
    UNION ALL
    SELECT concat_ws(' ', 'index', pg_get_indexdef(i.indexrelid), i.indisvalid, i.indisready)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relnamespace = current_schema()::regnamespace
    UNION ALL
    SELECT concat_ws(' ', 'trigger', pg_get_triggerdef(t.oid), t.tgenabled)
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relnamespace = current_schema()::regnamespace
    UNION ALL
    SELECT concat_ws(' ', 'rule', r.rulename, r.ev_enabled, pg_get_ruledef(r.oid))
    FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class WHERE c.relnamespace = current_schema()::regnamespace
    UNION ALL
    SELECT concat_ws(' ', 'policy', p.polname, p.polrelid::regclass, p.polcmd, p.polpermissive, p.polroles::text,
                     pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
    FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid WHERE c.relnamespace = current_schema()::regnamespace
    UNION ALL
    SELECT concat_ws(' ', 'function', p.oid::regprocedure, p.proowner::regrole, p.proacl::text,
                     md5(pg_get_functiondef(p.oid)))
    FROM pg_proc p WHERE p.pronamespace = current_schema()::regnamespace AND p.prokind IN ('f', 'p')
    UNION ALL
    SELECT concat_ws(' ', 'sequence', s.seqrelid::regclass, s.seqtypid::regtype, s.seqstart, s.seqincrement,
                     s.seqmax, s.seqmin, s.seqcache, s.seqcycle)
    FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid WHERE c.relnamespace = current_schema()::regnamespace
    UNION ALL
    SELECT concat_ws(' ', 'type', t.typname, t.typtype, t.typowner::regrole, t.typacl::text,
                     (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e
                      WHERE e.enumtypid = t.oid))
    FROM pg_type t WHERE t.typnamespace = current_schema()::regnamespace
    UNION ALL
    SELECT concat_ws(' ', 'default privileges', d.defaclrole::regrole, d.defaclobjtype, d.defaclacl::text)
    FROM pg_default_acl d WHERE d.defaclnamespace = current_schema()::regnamespace
) AS definition
"""
"""One hash of the current schema's whole definition (as :func:`pg_get_triggerdef` and the others print it)."""

_SEQUENCER_LOCKS_HELD = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND objsubid = 2 AND objid = hashtext(current_schema())::oid
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
"""Advisory locks keyed by this schema (the sequencer's two-``int4`` keys), held by any session."""


@dataclass
class _Fresh:
    """What a schema held right after the migrations built it."""

    fingerprint: str
    tables: list[str]
    rows: dict[str, bytes]
    """``COPY ... TO STDOUT`` of each table the migrations wrote rows into."""
    sequences: dict[str, tuple[int, bool]]
    uses: int = 0


class SchemaPool:
    """One worker's migrated schemas (see the module docstring). ``migrate(url)`` runs the migrations on a URL."""

    def __init__(self, server_url: str, schema_url: Callable[[str], str], migrate: Callable[[str], None]) -> None:
        self._server = server_url
        self._schema_url = schema_url
        self._migrate = migrate
        self._fresh: dict[str, _Fresh] = {}
        self._free: list[str] = []

    def acquire(self, prefix: str) -> str:
        """A migrated schema with nothing in it but what the migrations wrote: its name."""
        if self._free:
            schema = self._free.pop()
            self._fresh[schema].uses += 1
            return schema
        schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self._server, autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            self._migrate(self._schema_url(schema))
            self._fresh[schema] = self._snapshot(schema)
        except BaseException:
            self._drop(schema)
            raise
        self._fresh[schema].uses = 1
        return schema

    def release(self, schema: str) -> None:
        """Put the schema back for the next test when it can be made fresh again, else drop it."""
        fresh = self._fresh[schema]
        reason = None if fresh.uses < MAX_USES else "used often enough"
        if reason is None:
            try:
                reason = self._reset(schema, fresh)
            except psycopg.Error as exc:
                reason = f"the reset failed: {type(exc).__name__}: {str(exc).strip()}"
        if reason is None:
            self._free.append(schema)
            return
        logger.info("dropping test schema %s: %s", schema, reason)
        del self._fresh[schema]
        self._drop(schema)

    def close(self) -> None:
        """Drop every schema still kept (at the end of the worker's session)."""
        for schema in self._free:
            with contextlib.suppress(psycopg.Error):
                self._drop(schema)
        self._free.clear()
        self._fresh.clear()

    def _connect(self, schema: str) -> psycopg.Connection[tuple[object, ...]]:
        connection = psycopg.connect(self._server)
        connection.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        return connection

    def _snapshot(self, schema: str) -> _Fresh:
        with self._connect(schema) as connection:
            [(fingerprint,)] = connection.execute(FINGERPRINT).fetchall()
            tables = [
                str(name)
                for (name,) in connection.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
                )
            ]
            rows: dict[str, bytes] = {}
            with connection.cursor() as cursor:
                for table in tables:
                    with cursor.copy(sql.SQL("COPY {} TO STDOUT").format(sql.Identifier(table))) as copy:
                        data = b"".join(bytes(chunk) for chunk in copy)
                    if data:
                        rows[table] = data
            sequences = {
                str(name): self._sequence_state(connection, str(name))
                for (name,) in connection.execute(
                    "SELECT relname FROM pg_class WHERE relkind = 'S' AND relnamespace = current_schema()::regnamespace"
                )
            }
        return _Fresh(str(fingerprint), tables, rows, sequences)

    @staticmethod
    def _sequence_state(connection: psycopg.Connection[tuple[object, ...]], name: str) -> tuple[int, bool]:
        query = sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(name))
        [(last_value, is_called)] = connection.execute(query).fetchall()
        return int(str(last_value)), bool(is_called)

    def _reset(self, schema: str, fresh: _Fresh) -> str | None:
        """Make the schema what the migrations left (one transaction); why not, when it cannot be."""
        with self._connect(schema) as connection:
            connection.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
            [(fingerprint,)] = connection.execute(FINGERPRINT).fetchall()
            if fingerprint != fresh.fingerprint:
                return "the test changed its definition"
            [(held,)] = connection.execute(_SEQUENCER_LOCKS_HELD).fetchall()
            if held:
                return "a session still holds its sequencer's advisory lock"
            connection.execute("SET LOCAL session_replication_role = replica")
            deleted = 0
            with connection.cursor() as cursor:
                for table in fresh.tables:
                    cursor.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
                    deleted += max(cursor.rowcount, 0)
                if deleted > MAX_DELETED_ROWS:
                    connection.rollback()
                    return f"the test wrote {deleted} rows"
                for table, data in fresh.rows.items():
                    with cursor.copy(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(table))) as copy:
                        copy.write(data)
                for name, (last_value, is_called) in fresh.sequences.items():
                    cursor.execute("SELECT setval(quote_ident(%s)::regclass, %s, %s)", (name, last_value, is_called))
            connection.commit()
        return None

    def _drop(self, schema: str) -> None:
        with psycopg.connect(self._server, autocommit=True) as connection:
            connection.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
