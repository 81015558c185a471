"""The triggers that keep the audit log append-only in the database itself (docs/audit.md, "What the database
refuses").

- ``audit_records``: ``DELETE`` (and ``TRUNCATE`` on PostgreSQL, which skips row triggers) is refused. A new record
  must arrive without a log position and with its leaf hash (or, for the legacy chain only, its link hash). The one
  ``UPDATE`` allowed is the sequencer's: ``leaf_index`` from NULL to a value, every other column unchanged; setting
  it again, clearing it, or changing anything else is refused.
- ``audit_tree_nodes`` and ``audit_tree_heads``: written once, never updated or deleted.
- ``audit_head`` (the legacy chain's frozen head): never deleted, only ever moved forward.

They are created idempotently (``CREATE TRIGGER IF NOT EXISTS`` on SQLite, ``CREATE OR REPLACE`` on PostgreSQL), so
every start re-creates any that were dropped. They stop mistakes and anyone who can only write rows; someone who can
drop triggers can still rewrite the tables, which is what the Merkle tree, the signed tree heads kept outside the
database and ``mandate audit verify`` are for.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from server.audit.models import AuditRecord

APPEND_ONLY_MESSAGE = "audit_records is append-only"
POSITION_MESSAGE = "audit_records: only the leaf_index may be set, once, by the sequencer"

_UNCHANGED = [name for name in AuditRecord.model_fields if name != "leaf_index"]


def _sqlite_changed() -> str:
    return " OR ".join(f"NEW.{name} IS NOT OLD.{name}" for name in _UNCHANGED)


def _postgres_changed() -> str:
    old = ", ".join(f"OLD.{name}" for name in _UNCHANGED)
    new = ", ".join(f"NEW.{name}" for name in _UNCHANGED)
    return f"({old}) IS DISTINCT FROM ({new})"


SQLITE_TRIGGERS: dict[str, str] = {
    "audit_records_set_position_once": f"""
        CREATE TRIGGER IF NOT EXISTS audit_records_set_position_once BEFORE UPDATE ON audit_records
        WHEN OLD.leaf_index IS NOT NULL OR NEW.leaf_index IS NULL OR {_sqlite_changed()}
        BEGIN SELECT RAISE(ABORT, '{POSITION_MESSAGE}: UPDATE refused'); END""",
    "audit_records_no_delete": f"""
        CREATE TRIGGER IF NOT EXISTS audit_records_no_delete BEFORE DELETE ON audit_records
        BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}: DELETE refused'); END""",
    "audit_records_insert_unplaced": """
        CREATE TRIGGER IF NOT EXISTS audit_records_insert_unplaced BEFORE INSERT ON audit_records
        WHEN NEW.leaf_index IS NOT NULL OR (NEW.leaf_hash IS NULL AND NEW.hash IS NULL)
        BEGIN SELECT RAISE(ABORT, 'audit_records: a new record carries its leaf hash and no position'); END""",
    "audit_tree_nodes_no_update": """
        CREATE TRIGGER IF NOT EXISTS audit_tree_nodes_no_update BEFORE UPDATE ON audit_tree_nodes
        BEGIN SELECT RAISE(ABORT, 'audit_tree_nodes is append-only: UPDATE refused'); END""",
    "audit_tree_nodes_no_delete": """
        CREATE TRIGGER IF NOT EXISTS audit_tree_nodes_no_delete BEFORE DELETE ON audit_tree_nodes
        BEGIN SELECT RAISE(ABORT, 'audit_tree_nodes is append-only: DELETE refused'); END""",
    "audit_tree_heads_no_update": """
        CREATE TRIGGER IF NOT EXISTS audit_tree_heads_no_update BEFORE UPDATE ON audit_tree_heads
        BEGIN SELECT RAISE(ABORT, 'audit_tree_heads is append-only: UPDATE refused'); END""",
    "audit_tree_heads_no_delete": """
        CREATE TRIGGER IF NOT EXISTS audit_tree_heads_no_delete BEFORE DELETE ON audit_tree_heads
        BEGIN SELECT RAISE(ABORT, 'audit_tree_heads is append-only: DELETE refused'); END""",
    "audit_head_no_delete": """
        CREATE TRIGGER IF NOT EXISTS audit_head_no_delete BEFORE DELETE ON audit_head
        BEGIN SELECT RAISE(ABORT, 'audit_head cannot be deleted'); END""",
    "audit_head_forward_only": """
        CREATE TRIGGER IF NOT EXISTS audit_head_forward_only BEFORE UPDATE ON audit_head
        WHEN NEW.seq <= OLD.seq OR NEW.id <> OLD.id
        BEGIN SELECT RAISE(ABORT, 'audit_head only moves forward'); END""",
}

LEGACY_SQLITE_TRIGGERS = ("audit_records_no_update", "audit_records_extend_head", "audit_records_move_head")
"""The linear chain's triggers, dropped by the migration (:mod:`server.audit.migration`)."""

_POSTGRES_FUNCTIONS = (
    """
    CREATE OR REPLACE FUNCTION mandate_audit_insert_unplaced() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.leaf_index IS NOT NULL OR (NEW.leaf_hash IS NULL AND NEW.hash IS NULL) THEN
            RAISE EXCEPTION 'audit_records: a new record carries its leaf hash and no position'
                USING ERRCODE = '23514';
        END IF;
        RETURN NEW;
    END $$""",
    f"""
    CREATE OR REPLACE FUNCTION mandate_audit_set_position_once() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF OLD.leaf_index IS NOT NULL OR NEW.leaf_index IS NULL
           OR to_jsonb(NEW) - 'leaf_index' IS DISTINCT FROM to_jsonb(OLD) - 'leaf_index' THEN
            RAISE EXCEPTION '{POSITION_MESSAGE}: UPDATE refused' USING ERRCODE = '42501';
        END IF;
        RETURN NEW;
    END $$""",
    """
    CREATE OR REPLACE FUNCTION mandate_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = '42501';
    END $$""",
    """
    CREATE OR REPLACE FUNCTION mandate_audit_head_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'UPDATE' OR NEW.seq <= OLD.seq OR NEW.id <> OLD.id THEN
            RAISE EXCEPTION 'audit_head only moves forward: % refused', TG_OP USING ERRCODE = '42501';
        END IF;
        RETURN NEW;
    END $$""",
)

# The two row triggers on the append path carry a WHEN clause: the executor evaluates it in place, and calls the
# function (which checks again, and refuses) only for a row that breaks the rule. An append and the sequencer's
# placement of a record then cost no PL/pgSQL call at all.
POSTGRES_TRIGGERS: dict[str, tuple[str, str]] = {
    "audit_records_insert_unplaced": (
        "audit_records",
        "BEFORE INSERT ON audit_records FOR EACH ROW "
        "WHEN (NEW.leaf_index IS NOT NULL OR (NEW.leaf_hash IS NULL AND NEW.hash IS NULL)) "
        "EXECUTE FUNCTION mandate_audit_insert_unplaced()",
    ),
    "audit_records_set_position_once": (
        "audit_records",
        "BEFORE UPDATE ON audit_records FOR EACH ROW "
        f"WHEN (OLD.leaf_index IS NOT NULL OR NEW.leaf_index IS NULL OR {_postgres_changed()}) "
        "EXECUTE FUNCTION mandate_audit_set_position_once()",
    ),
    "audit_records_no_delete": (
        "audit_records",
        "BEFORE DELETE ON audit_records FOR EACH ROW EXECUTE FUNCTION mandate_audit_append_only()",
    ),
    "audit_records_no_truncate": (
        "audit_records",
        "BEFORE TRUNCATE ON audit_records FOR EACH STATEMENT EXECUTE FUNCTION mandate_audit_append_only()",
    ),
    "audit_tree_nodes_append_only": (
        "audit_tree_nodes",
        "BEFORE UPDATE OR DELETE ON audit_tree_nodes FOR EACH ROW EXECUTE FUNCTION mandate_audit_append_only()",
    ),
    "audit_tree_nodes_no_truncate": (
        "audit_tree_nodes",
        "BEFORE TRUNCATE ON audit_tree_nodes FOR EACH STATEMENT EXECUTE FUNCTION mandate_audit_append_only()",
    ),
    "audit_tree_heads_append_only": (
        "audit_tree_heads",
        "BEFORE UPDATE OR DELETE ON audit_tree_heads FOR EACH ROW EXECUTE FUNCTION mandate_audit_append_only()",
    ),
    "audit_tree_heads_no_truncate": (
        "audit_tree_heads",
        "BEFORE TRUNCATE ON audit_tree_heads FOR EACH STATEMENT EXECUTE FUNCTION mandate_audit_append_only()",
    ),
    "audit_head_guard": (
        "audit_head",
        "BEFORE UPDATE OR DELETE ON audit_head FOR EACH ROW EXECUTE FUNCTION mandate_audit_head_guard()",
    ),
    "audit_head_no_truncate": (
        "audit_head",
        "BEFORE TRUNCATE ON audit_head FOR EACH STATEMENT EXECUTE FUNCTION mandate_audit_append_only()",
    ),
}

LEGACY_POSTGRES_TRIGGERS = (
    ("audit_records_extend_head", "audit_records"),
    ("audit_records_append_only", "audit_records"),
)


async def create_audit_triggers(connection: AsyncConnection, is_sqlite: bool) -> None:
    if is_sqlite:
        for statement in SQLITE_TRIGGERS.values():
            await connection.execute(text(statement))
        return
    for statement in _POSTGRES_FUNCTIONS:
        await connection.execute(text(statement))
    for name, (_table, body) in POSTGRES_TRIGGERS.items():
        await connection.execute(text(f"CREATE OR REPLACE TRIGGER {name} {body}"))
