"""The audit records' insertion key as SQLite's rowid, and two indexes that every append paid for but few queries use

On SQLite ``seq`` was ``BIGINT PRIMARY KEY``: not an alias of the table's rowid, so every append also wrote a
separate unique index on ``seq`` and first read ``MAX(seq) + 1``. As ``INTEGER PRIMARY KEY`` it is the rowid
(SQLite documentation, "ROWID and the INTEGER PRIMARY KEY"): SQLite assigns it on insert, as ``MAX(seq) + 1`` under
the write lock the appending transaction holds (exactly what the writer did, and the records are never deleted), and
every other index of the table now keys its entries by ``seq``, so a filter's newest-first page reads its index in
order. SQLite alters a column's type only by copying the table; the records are copied as they are, in ``seq``
order, and the indexes and append-only triggers are created again on the copy. PostgreSQL's ``seq`` (an identity
column) is unchanged.

On both engines: ``ix_audit_records_trace_id`` is dropped (no query reads records by trace id: a trace's records are
found from the trace, in the tracing system), and ``ix_audit_records_approval_id`` keeps only the records that name
an approval (``WHERE approval_id IS NOT NULL``): the lineage and the console look records up by an approval's id,
which the partial index still serves, and the other appends no longer write it (docs/performance.md).

Revision ID: 0002
Revises: 0001
Created: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

POSITION_ONLY = "audit_records: only the leaf_index may be set, once, by the sequencer"
APPEND_ONLY = "audit_records is append-only"
UNPLACED = "audit_records: a new record carries its leaf hash and no position"

COLUMNS = (
    "seq", "id", "at", "instance", "kind", "subject", "client_id", "issuer", "scopes", "token_id", "tenant", "actor",
    "transport", "client_address", "client_name", "client_version", "origin", "user_agent", "tool", "customer_id",
    "arguments", "arguments_digest", "decision", "reason_code", "reason", "rule_id", "policy_version", "outcome",
    "result_summary", "latency_us", "idempotency_key", "approval_id", "request_id", "trace_id", "leaf_hash",
    "leaf_index", "prev_hash", "hash",
)  # fmt: skip
"""Every column of ``audit_records`` at this revision, in the table's order."""

_CHANGED = " OR ".join(f"NEW.{name} IS NOT OLD.{name}" for name in COLUMNS if name != "leaf_index")

SQLITE_TRIGGERS: dict[str, str] = {
    "audit_records_set_position_once": f"""
        CREATE TRIGGER audit_records_set_position_once BEFORE UPDATE ON audit_records
        WHEN OLD.leaf_index IS NOT NULL OR NEW.leaf_index IS NULL OR {_CHANGED}
        BEGIN SELECT RAISE(ABORT, '{POSITION_ONLY}: UPDATE refused'); END""",
    "audit_records_no_delete": f"""
        CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
        BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}: DELETE refused'); END""",
    "audit_records_insert_unplaced": f"""
        CREATE TRIGGER audit_records_insert_unplaced BEFORE INSERT ON audit_records
        WHEN NEW.leaf_index IS NOT NULL OR (NEW.leaf_hash IS NULL AND NEW.hash IS NULL)
        BEGIN SELECT RAISE(ABORT, '{UNPLACED}'); END""",
}
"""The append-only triggers of ``audit_records`` as revision 0001 created them (dropped with the old table)."""


def _copy_table(name: str) -> None:
    op.create_table(
        name,
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("instance", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("subject", sa.String(length=400), nullable=True),
        sa.Column("client_id", sa.String(length=400), nullable=True),
        sa.Column("issuer", sa.String(length=400), nullable=True),
        sa.Column("scopes", sa.Text(), nullable=True),
        sa.Column("token_id", sa.String(length=200), nullable=True),
        sa.Column("tenant", sa.String(length=100), nullable=True),
        sa.Column("actor", sa.String(length=400), nullable=True),
        sa.Column("transport", sa.String(length=20), nullable=False),
        sa.Column("client_address", sa.String(length=100), nullable=True),
        sa.Column("client_name", sa.String(length=200), nullable=True),
        sa.Column("client_version", sa.String(length=100), nullable=True),
        sa.Column("origin", sa.String(length=200), nullable=True),
        sa.Column("user_agent", sa.String(length=300), nullable=True),
        sa.Column("tool", sa.String(length=100), nullable=True),
        sa.Column("customer_id", sa.String(length=40), nullable=True),
        sa.Column("arguments", sa.Text(), nullable=False),
        sa.Column("arguments_digest", sa.String(length=64), nullable=True),
        sa.Column("decision", sa.String(length=20), nullable=False),
        sa.Column("reason_code", sa.String(length=100), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("rule_id", sa.String(length=200), nullable=True),
        sa.Column("policy_version", sa.String(length=100), nullable=True),
        sa.Column("outcome", sa.String(length=30), nullable=False),
        sa.Column("result_summary", sa.Text(), nullable=False),
        sa.Column("latency_us", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("approval_id", sa.String(length=40), nullable=True),
        sa.Column("request_id", sa.String(length=100), nullable=True),
        sa.Column("trace_id", sa.String(length=32), nullable=True),
        sa.Column("leaf_hash", sa.String(length=64), nullable=True),
        sa.Column("leaf_index", sa.BigInteger(), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=True),
        sa.Column("hash", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
        sa.UniqueConstraint("leaf_index"),
    )


def _filter_indexes() -> None:
    """The indexes of ``audit_records`` besides its key and unique columns, as this revision leaves them."""
    op.create_index("ix_audit_records_at", "audit_records", ["at"], unique=False)
    op.create_index("ix_audit_records_client_id", "audit_records", ["client_id"], unique=False)
    op.create_index("ix_audit_records_customer_id", "audit_records", ["customer_id"], unique=False)
    op.create_index("ix_audit_records_decision", "audit_records", ["decision"], unique=False)
    op.create_index("ix_audit_records_subject", "audit_records", ["subject"], unique=False)
    op.create_index("ix_audit_records_tool", "audit_records", ["tool"], unique=False)
    op.create_index(
        "ix_audit_records_pending",
        "audit_records",
        ["seq"],
        unique=False,
        postgresql_where=sa.text("leaf_index IS NULL"),
        sqlite_where=sa.text("leaf_index IS NULL"),
    )
    _approval_index()


def _approval_index() -> None:
    op.create_index(
        "ix_audit_records_approval_id",
        "audit_records",
        ["approval_id"],
        unique=False,
        postgresql_where=sa.text("approval_id IS NOT NULL"),
        sqlite_where=sa.text("approval_id IS NOT NULL"),
    )


def _upgrade_sqlite() -> None:
    for trigger in SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.execute("DROP INDEX IF EXISTS ix_audit_records_trace_id")
    _copy_table("audit_records_copy")
    names = ", ".join(COLUMNS)
    op.execute(f"INSERT INTO audit_records_copy ({names}) SELECT {names} FROM audit_records ORDER BY seq")  # noqa: S608
    op.drop_table("audit_records")  # its indexes with it
    op.rename_table("audit_records_copy", "audit_records")
    _filter_indexes()
    for statement in SQLITE_TRIGGERS.values():
        op.execute(statement)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _upgrade_sqlite()
        return
    # IF EXISTS: a database adopted from before the migrations may have had its table without them
    op.execute("DROP INDEX IF EXISTS ix_audit_records_trace_id")
    op.execute("DROP INDEX IF EXISTS ix_audit_records_approval_id")
    _approval_index()


def downgrade() -> None:
    raise NotImplementedError("Mandate's migrations go forward only: restore a backup to go back (docs/database.md)")
