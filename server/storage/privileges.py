"""The server's restricted PostgreSQL role: what it may do to each table, and granting exactly that
(``mandate db grant-writer ROLE``; docs/database.md, "Owner and writer").

The migrations run as the owner of the schema. The server runs as a *writer*: a role that owns nothing, so it cannot
``ALTER`` a table, drop or disable a trigger, or replace a trigger's function (PostgreSQL allows those to the owner
only), and whose table privileges are the least the code needs:

- the audit log is append-only: ``SELECT`` and ``INSERT``, plus ``UPDATE`` of the one column the sequencer writes,
  ``audit_records.leaf_index`` (a column privilege: an ``UPDATE`` naming any other column is refused before the
  trigger runs, and the trigger refuses a second setting of the position); the Merkle tree's nodes and heads and the
  frozen legacy head are never updated, deleted or truncated by the writer;
- records that are only ever added (ledger entries, refunds, account changes, remediations, order lines): ``SELECT``
  and ``INSERT``;
- rows whose state moves (approvals, effects, idempotency keys, ledger buckets and rolling totals, orders,
  suspensions, webhook deliveries, email changes, customers): ``UPDATE`` too;
- rows the code purges (expired idempotency keys, guard counters and console sessions, a stopped instance's
  heartbeat): ``DELETE`` too.

Sequences get ``USAGE`` (``nextval`` for new rows; not ``setval``). ``TRUNCATE``, ``REFERENCES``, ``TRIGGER`` and
``CREATE`` in the schema are never granted. :data:`WRITER_PRIVILEGES` covers every table the migrations create
(``tests/storage/test_privileges.py`` checks it), so a new table cannot be forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from server.storage.database import Database

_READ_ADD = "SELECT, INSERT"
_READ_ADD_CHANGE = "SELECT, INSERT, UPDATE"
_READ_ADD_CHANGE_PURGE = "SELECT, INSERT, UPDATE, DELETE"

WRITER_PRIVILEGES: dict[str, str] = {
    "alembic_version": "SELECT",  # the start checks the revision
    # the audit log (append-only; the sequencer sets each record's position once)
    "audit_records": "SELECT, INSERT, UPDATE (leaf_index)",
    "audit_tree_nodes": _READ_ADD,
    "audit_tree_heads": _READ_ADD,
    "audit_head": "SELECT",
    # added, never changed
    "ledger_entries": _READ_ADD,
    "refunds": _READ_ADD,
    "account_changes": _READ_ADD,
    "remediations": _READ_ADD,
    "order_lines": _READ_ADD,
    # state that moves
    "approvals": _READ_ADD_CHANGE,
    "effect_intents": _READ_ADD_CHANGE,
    "ledger_buckets": _READ_ADD_CHANGE,
    "ledger_window_totals": _READ_ADD_CHANGE,
    "suspensions": _READ_ADD_CHANGE,
    "webhook_outbox": _READ_ADD_CHANGE,
    "customers": _READ_ADD_CHANGE,
    "orders": _READ_ADD_CHANGE,
    "email_change_requests": _READ_ADD_CHANGE,
    # purged when expired
    "idempotency_keys": _READ_ADD_CHANGE_PURGE,
    "guard_counters": _READ_ADD_CHANGE_PURGE,
    "console_sessions": _READ_ADD_CHANGE_PURGE,
    "instance_heartbeats": _READ_ADD_CHANGE_PURGE,
}
"""Table -> the privileges the server's role gets on it (SQL ``GRANT`` syntax)."""


class GrantRefused(RuntimeError):
    """The role cannot be made the restricted writer (it does not exist, or it could bypass the restrictions)."""


@dataclass(frozen=True)
class Granted:
    role: str
    schema: str
    tables: list[str]
    left_out: list[str]
    """Tables in the schema that are not Mandate's: the role got nothing on them."""
    warnings: list[str]
    """What the role can still do through PUBLIC or another role's grants that the writer should not."""


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


async def _refusal(connection: AsyncConnection, role: str, schema: str) -> str | None:
    """Why ``role`` would not be restricted by the grants, or None."""
    row = (
        await connection.execute(
            text("SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = :role"), {"role": role}
        )
    ).first()
    if row is None:
        return f"role {role} does not exist: create it first (CREATE ROLE {role} LOGIN PASSWORD '...')"
    if row.rolsuper:
        return f"role {role} is a superuser, which no privilege restricts: use a role without SUPERUSER"
    owners = (
        await connection.execute(
            text(
                "SELECT DISTINCT pg_get_userbyid(c.relowner) AS owner FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :schema AND c.relkind IN ('r', 'p') "
                "UNION SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = :schema"
            ),
            {"schema": schema},
        )
    ).scalars()
    for owner in owners:
        if owner == role:
            return f"role {role} owns the schema {schema} or its tables, so it could alter them: use another role"
        member = await connection.execute(
            text("SELECT pg_has_role(:role, :owner, 'USAGE')"), {"role": role, "owner": owner}
        )
        if member.scalar():
            return f"role {role} has the privileges of the owner {owner} (a member of it): use a role outside it"
    return None


async def grant_writer(db: Database, role: str) -> Granted:
    """Give ``role`` exactly :data:`WRITER_PRIVILEGES` on the current schema (revoking anything else it had there);
    idempotent, so it can be run again after every ``mandate db upgrade``."""
    if db.is_sqlite:
        raise GrantRefused("SQLite has no roles: the writer role is for PostgreSQL (docs/database.md)")
    async with db.engine.begin() as connection:
        schema = str((await connection.execute(text("SELECT current_schema()"))).scalar())
        refusal = await _refusal(connection, role, schema)
        if refusal is not None:
            raise GrantRefused(refusal)
        present = set(
            (
                await connection.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = :schema"), {"schema": schema}
                )
            ).scalars()
        )
        missing = sorted(set(WRITER_PRIVILEGES) - present)
        if missing:
            raise GrantRefused(
                f"the schema {schema} lacks {', '.join(missing)}: run `mandate db upgrade` first (docs/database.md)"
            )
        who, where = _quoted(role), _quoted(schema)
        await connection.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA {where} FROM {who}"))
        await connection.execute(text(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {where} FROM {who}"))
        await connection.execute(text(f"REVOKE ALL ON SCHEMA {where} FROM {who}"))
        await connection.execute(text(f"GRANT USAGE ON SCHEMA {where} TO {who}"))
        for table, privileges in WRITER_PRIVILEGES.items():
            await connection.execute(text(f"GRANT {privileges} ON TABLE {where}.{_quoted(table)} TO {who}"))
        await connection.execute(text(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {where} TO {who}"))
        warnings = await _still_allowed(connection, role, schema)
    return Granted(role, schema, sorted(WRITER_PRIVILEGES), sorted(present - set(WRITER_PRIVILEGES)), warnings)


async def _still_allowed(connection: AsyncConnection, role: str, schema: str) -> list[str]:
    """Privileges the role holds anyway (granted to PUBLIC or to a role it belongs to) that break the restriction."""
    found: list[str] = []
    names = {"role": role, "schema": schema}
    if (await connection.execute(text("SELECT has_schema_privilege(:role, :schema, 'CREATE')"), names)).scalar():
        found.append(f"{role} may CREATE in schema {schema} (REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC)")
    for table in ("audit_records", "audit_tree_nodes", "audit_tree_heads", "audit_head"):
        for privilege in ("DELETE", "TRUNCATE", "TRIGGER"):
            query = text("SELECT has_table_privilege(:role, :table, :privilege)")
            qualified = f"{_quoted(schema)}.{_quoted(table)}"
            if (await connection.execute(query, {**names, "table": qualified, "privilege": privilege})).scalar():
                found.append(f"{role} may {privilege} {table} through another grant (PUBLIC or a role it is in)")
    return found


def required() -> list[tuple[str, str, str | None]]:
    """:data:`WRITER_PRIVILEGES` as (table, privilege, column or None) triples."""
    triples: list[tuple[str, str, str | None]] = []
    for table, privileges in WRITER_PRIVILEGES.items():
        for item in privileges.split(", "):
            name, _, column = item.partition(" (")
            triples.append((table, name, column.rstrip(")") or None))
    return triples


def lacking(connection: Connection) -> list[str]:
    """``PRIVILEGE on table[.column]`` for each privilege the server needs that the connected role lacks (an owner
    lacks none). One query: the start runs it on PostgreSQL."""
    checks = " UNION ALL ".join(
        f"SELECT {index} AS i WHERE NOT "
        + (
            f"has_column_privilege(:t{index}, :c{index}, :p{index})"
            if column
            else f"has_table_privilege(:t{index}, :p{index})"
        )
        for index, (_table, _privilege, column) in enumerate(required())
    )
    parameters: dict[str, str] = {}
    for index, (table, privilege, column) in enumerate(required()):
        parameters[f"t{index}"] = table
        parameters[f"p{index}"] = privilege
        if column:
            parameters[f"c{index}"] = column
    missing = [int(row[0]) for row in connection.execute(text(checks), parameters)]
    needed = required()
    return [f"{needed[i][1]} on {needed[i][0]}" + (f".{needed[i][2]}" if needed[i][2] else "") for i in sorted(missing)]
