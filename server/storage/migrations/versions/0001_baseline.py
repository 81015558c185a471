"""Baseline: Mandate's tables, the audit chain head and the append-only audit triggers

Every table of Mandate 0.1 with its indexes, the audit chain head row, and the triggers (and, on PostgreSQL, their
plpgsql functions) that keep the audit log append-only in the database (docs/audit.md, "What the database refuses";
docs/database.md).

Written out, not derived from the models at run time: a later change to a model needs a revision of its own
(``tests/storage/test_migrations.py`` fails until there is one). A table that already exists is left as it is, so a
database made before the migrations (by ``create_schema`` at start) is adopted: :mod:`server.storage.adopt` first
brings its audit table to the Merkle log's shape, then this revision adds what is missing and replaces the triggers.

Revision ID: 0001
Revises:
Created: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY = "audit_records is append-only"
POSITION_ONLY = "audit_records: only the leaf_index may be set, once, by the sequencer"
UNPLACED = "audit_records: a new record carries its leaf hash and no position"


def _create_approvals() -> None:
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tool", sa.String(length=100), nullable=False),
        sa.Column("arguments", sa.Text(), nullable=False),
        sa.Column("arguments_digest", sa.String(length=64), nullable=False),
        sa.Column("arguments_redacted", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("customer_id", sa.String(length=40), nullable=True),
        sa.Column("requester_key", sa.Text(), nullable=False),
        sa.Column("requester_subject", sa.String(length=400), nullable=False),
        sa.Column("requester_client_id", sa.String(length=400), nullable=False),
        sa.Column("requester_issuer", sa.String(length=400), nullable=False),
        sa.Column("requester_scopes", sa.Text(), nullable=False),
        sa.Column("requester_tenant", sa.String(length=100), nullable=True),
        sa.Column("requester_actor", sa.String(length=400), nullable=True),
        sa.Column("requester_token_id", sa.String(length=200), nullable=True),
        sa.Column("requester_claims", sa.Text(), nullable=False),
        sa.Column("rule_id", sa.String(length=200), nullable=True),
        sa.Column("waived_rules", sa.Text(), nullable=False),
        sa.Column("reason_code", sa.String(length=100), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("policy_version", sa.String(length=100), nullable=True),
        sa.Column("request_audit_id", sa.String(length=40), nullable=False),
        sa.Column("seal", sa.String(length=80), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by_key", sa.Text(), nullable=True),
        sa.Column("decided_by_subject", sa.String(length=400), nullable=True),
        sa.Column("decided_by_client_id", sa.String(length=400), nullable=True),
        sa.Column("decision_comment", sa.Text(), nullable=True),
        sa.Column("decision_audit_id", sa.String(length=40), nullable=True),
        sa.Column("executed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("execution_audit_id", sa.String(length=40), nullable=True),
        sa.Column("outcome_code", sa.String(length=100), nullable=True),
        sa.Column("outcome_message", sa.Text(), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_approvals_created_at"), "approvals", ["created_at"], unique=False)
    op.create_index(op.f("ix_approvals_requester_tenant"), "approvals", ["requester_tenant"], unique=False)
    op.create_index(
        "ix_approvals_requester_tool_digest", "approvals", ["requester_key", "tool", "arguments_digest"], unique=False
    )
    op.create_index(op.f("ix_approvals_status"), "approvals", ["status"], unique=False)


def _create_audit_head() -> None:
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def _create_audit_records() -> None:
    op.create_table(
        "audit_records",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), autoincrement=True, nullable=False),
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
    op.create_index(op.f("ix_audit_records_approval_id"), "audit_records", ["approval_id"], unique=False)
    op.create_index(op.f("ix_audit_records_at"), "audit_records", ["at"], unique=False)
    op.create_index(op.f("ix_audit_records_client_id"), "audit_records", ["client_id"], unique=False)
    op.create_index(op.f("ix_audit_records_customer_id"), "audit_records", ["customer_id"], unique=False)
    op.create_index(op.f("ix_audit_records_decision"), "audit_records", ["decision"], unique=False)
    op.create_index(
        "ix_audit_records_pending",
        "audit_records",
        ["seq"],
        unique=False,
        postgresql_where=sa.text("leaf_index IS NULL"),
        sqlite_where=sa.text("leaf_index IS NULL"),
    )
    op.create_index(op.f("ix_audit_records_subject"), "audit_records", ["subject"], unique=False)
    op.create_index(op.f("ix_audit_records_tool"), "audit_records", ["tool"], unique=False)
    op.create_index(op.f("ix_audit_records_trace_id"), "audit_records", ["trace_id"], unique=False)


def _create_audit_tree_heads() -> None:
    op.create_table(
        "audit_tree_heads",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root_hash", sa.String(length=64), nullable=False),
        sa.Column("frontier", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("instance", sa.String(length=100), nullable=False),
        sa.Column("signed", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("size"),
    )


def _create_audit_tree_nodes() -> None:
    op.create_table(
        "audit_tree_nodes",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx"),
    )


def _create_console_sessions() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("login_state", sa.String(length=64), nullable=True),
        sa.Column("login_verifier", sa.String(length=128), nullable=True),
        sa.Column("return_to", sa.Text(), nullable=True),
        sa.Column("access_token", sa.Text(), nullable=True),
        sa.Column("subject", sa.String(length=400), nullable=True),
        sa.Column("flash", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_console_sessions_expires_at"), "console_sessions", ["expires_at"], unique=False)


def _create_customers() -> None:
    op.create_table(
        "customers",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("phone", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_customers_email"), "customers", ["email"], unique=False)
    op.create_index(op.f("ix_customers_tenant"), "customers", ["tenant"], unique=False)


def _create_effect_intents() -> None:
    op.create_table(
        "effect_intents",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tool", sa.String(length=100), nullable=False),
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("provider_name", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("audit_id", sa.String(length=40), nullable=False),
        sa.Column("provider_key", sa.String(length=200), nullable=False),
        sa.Column("arguments", sa.Text(), nullable=False),
        sa.Column("arguments_digest", sa.String(length=64), nullable=False),
        sa.Column("plan", sa.Text(), nullable=False),
        sa.Column("principal", sa.Text(), nullable=False),
        sa.Column("principal_key", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=True),
        sa.Column("approval_id", sa.String(length=40), nullable=True),
        sa.Column("call_key", sa.String(length=200), nullable=True),
        sa.Column("call_key_id", sa.String(length=64), nullable=True),
        sa.Column("transport", sa.String(length=20), nullable=False),
        sa.Column("request_id", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reconcile_token", sa.String(length=64), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=20), nullable=True),
        sa.Column("outcome_audit_id", sa.String(length=40), nullable=True),
        sa.Column("provider_object_id", sa.String(length=100), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=8), nullable=True),
        sa.Column("provider_status", sa.String(length=20), nullable=True),
        sa.Column("error_code", sa.String(length=100), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("audit_id"),
    )
    op.create_index(op.f("ix_effect_intents_approval_id"), "effect_intents", ["approval_id"], unique=False)
    op.create_index(op.f("ix_effect_intents_customer_id"), "effect_intents", ["customer_id"], unique=False)
    op.create_index(op.f("ix_effect_intents_status"), "effect_intents", ["status"], unique=False)
    op.create_index("ix_effect_intents_status_lease", "effect_intents", ["status", "lease_until"], unique=False)


def _create_guard_counters() -> None:
    op.create_table(
        "guard_counters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("holder", sa.String(length=400), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", "holder", "window_start", name="uq_guard_counter"),
    )
    op.create_index(op.f("ix_guard_counters_expires_at"), "guard_counters", ["expires_at"], unique=False)


def _create_idempotency_keys() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("principal_key", sa.Text(), nullable=False),
        sa.Column("tool", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("arguments_digest", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("claim_token", sa.String(length=64), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("audit_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_idempotency_keys_expires_at"), "idempotency_keys", ["expires_at"], unique=False)


def _create_instance_heartbeats() -> None:
    op.create_table(
        "instance_heartbeats",
        sa.Column("instance", sa.String(length=100), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("instance"),
    )


def _create_ledger_buckets() -> None:
    op.create_table(
        "ledger_buckets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("budget", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=300), nullable=False),
        sa.Column("unit", sa.String(length=8), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("spent", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("budget", "holder", "unit", "period", name="uq_ledger_bucket"),
    )


def _create_ledger_entries() -> None:
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("budget", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=300), nullable=False),
        sa.Column("unit", sa.String(length=8), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tool", sa.String(length=100), nullable=False),
        sa.Column("audit_id", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_ledger_entries_audit_id"), "ledger_entries", ["audit_id"], unique=False)
    op.create_index("ix_ledger_entries_holder_at", "ledger_entries", ["budget", "holder", "unit", "at"], unique=False)


def _create_ledger_window_totals() -> None:
    op.create_table(
        "ledger_window_totals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("budget", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=300), nullable=False),
        sa.Column("unit", sa.String(length=8), nullable=False),
        sa.Column("slot", sa.String(length=16), nullable=False),
        sa.Column("spent", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("budget", "holder", "unit", "slot", name="uq_ledger_window_total"),
    )


def _create_remediations() -> None:
    op.create_table(
        "remediations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("effect_kind", sa.String(length=40), nullable=False),
        sa.Column("effect_id", sa.String(length=40), nullable=False),
        sa.Column("compensates_audit_id", sa.String(length=40), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=400), nullable=False),
        sa.Column("audit_id", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("effect_kind", "effect_id", "compensates_audit_id", name="uq_remediation_effect"),
    )
    op.create_index(op.f("ix_remediations_audit_id"), "remediations", ["audit_id"], unique=False)
    op.create_index(
        op.f("ix_remediations_compensates_audit_id"), "remediations", ["compensates_audit_id"], unique=False
    )


def _create_suspensions() -> None:
    op.create_table(
        "suspensions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("value", sa.String(length=400), nullable=False),
        sa.Column("issuer", sa.String(length=400), nullable=True),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("source", sa.String(length=120), nullable=False),
        sa.Column("suspended_by", sa.String(length=400), nullable=False),
        sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("audit_id", sa.String(length=40), nullable=True),
        sa.Column("resumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resumed_by", sa.String(length=400), nullable=True),
        sa.Column("resume_reason", sa.String(length=1000), nullable=True),
        sa.Column("resume_audit_id", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_suspensions_active", "suspensions", ["resumed_at", "kind", "value"], unique=False)


def _create_webhook_outbox() -> None:
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("event_type", sa.String(length=60), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("given_up_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_webhook_outbox_next_attempt_at"), "webhook_outbox", ["next_attempt_at"], unique=False)


def _create_account_changes() -> None:
    op.create_table(
        "account_changes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("field_name", sa.String(length=40), nullable=False),
        sa.Column("old_value", sa.String(length=320), nullable=False),
        sa.Column("new_value", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=400), nullable=False),
        sa.Column("audit_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_account_changes_audit_id"), "account_changes", ["audit_id"], unique=False)
    op.create_index(op.f("ix_account_changes_customer_id"), "account_changes", ["customer_id"], unique=False)


def _create_email_change_requests() -> None:
    op.create_table(
        "email_change_requests",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("new_email", sa.String(length=320), nullable=False),
        sa.Column("code_hash", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=400), nullable=False),
        sa.Column("audit_id", sa.String(length=40), nullable=False),
        sa.Column("change_id", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_email_change_requests_customer_id"), "email_change_requests", ["customer_id"], unique=False
    )


def _create_orders() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column(
            "status",
            sa.Enum("PENDING", "PROCESSING", "SHIPPED", "DELIVERED", "CANCELLED", name="orderstatus"),
            nullable=False,
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("refunded_minor", sa.BigInteger(), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_reason", sa.String(length=500), nullable=True),
        sa.Column("cancel_audit_id", sa.String(length=40), nullable=True),
        sa.Column("cancelled_from", sa.String(length=20), nullable=True),
        sa.Column("payment_ref", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_orders_customer_placed", "orders", ["customer_id", "placed_at"], unique=False)
    op.create_index(op.f("ix_orders_payment_ref"), "orders", ["payment_ref"], unique=False)
    op.create_index(op.f("ix_orders_tenant"), "orders", ["tenant"], unique=False)


def _create_order_lines() -> None:
    op.create_table(
        "order_lines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=False),
        sa.Column("sku", sa.String(length=40), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_price_minor", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_order_lines_order_id"), "order_lines", ["order_id"], unique=False)


def _create_refunds() -> None:
    op.create_table(
        "refunds",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=400), nullable=False),
        sa.Column("audit_id", sa.String(length=40), nullable=False),
        sa.Column("provider_refund_id", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_refunds_audit_id"), "refunds", ["audit_id"], unique=False)
    op.create_index(op.f("ix_refunds_customer_id"), "refunds", ["customer_id"], unique=False)
    op.create_index(op.f("ix_refunds_order_id"), "refunds", ["order_id"], unique=False)
    op.create_index(op.f("ix_refunds_provider_refund_id"), "refunds", ["provider_refund_id"], unique=False)


TABLES: tuple[tuple[str, Callable[[], None]], ...] = (
    ("approvals", _create_approvals),
    ("audit_head", _create_audit_head),
    ("audit_records", _create_audit_records),
    ("audit_tree_heads", _create_audit_tree_heads),
    ("audit_tree_nodes", _create_audit_tree_nodes),
    ("console_sessions", _create_console_sessions),
    ("customers", _create_customers),
    ("effect_intents", _create_effect_intents),
    ("guard_counters", _create_guard_counters),
    ("idempotency_keys", _create_idempotency_keys),
    ("instance_heartbeats", _create_instance_heartbeats),
    ("ledger_buckets", _create_ledger_buckets),
    ("ledger_entries", _create_ledger_entries),
    ("ledger_window_totals", _create_ledger_window_totals),
    ("remediations", _create_remediations),
    ("suspensions", _create_suspensions),
    ("webhook_outbox", _create_webhook_outbox),
    ("account_changes", _create_account_changes),
    ("email_change_requests", _create_email_change_requests),
    ("orders", _create_orders),
    ("order_lines", _create_order_lines),
    ("refunds", _create_refunds),
)
"""Every table, each created after the tables its foreign keys name."""

AUDIT_RECORD_COLUMNS_BUT_POSITION = (
    "seq", "id", "at", "instance", "kind", "subject", "client_id", "issuer", "scopes", "token_id", "tenant", "actor",
    "transport", "client_address", "client_name", "client_version", "origin", "user_agent", "tool", "customer_id",
    "arguments", "arguments_digest", "decision", "reason_code", "reason", "rule_id", "policy_version", "outcome",
    "result_summary", "latency_us", "idempotency_key", "approval_id", "request_id", "trace_id", "leaf_hash",
    "prev_hash", "hash",
)  # fmt: skip
"""What the sequencer's one UPDATE must leave as it is: both engines' triggers name each column (a revision that adds
one re-creates them); PostgreSQL's function, called when the WHEN clause finds a change, compares the whole row."""

_CHANGED = " OR ".join(f"NEW.{name} IS NOT OLD.{name}" for name in AUDIT_RECORD_COLUMNS_BUT_POSITION)
_ROW_CHANGED = (
    f"({', '.join(f'OLD.{name}' for name in AUDIT_RECORD_COLUMNS_BUT_POSITION)}) IS DISTINCT FROM "
    f"({', '.join(f'NEW.{name}' for name in AUDIT_RECORD_COLUMNS_BUT_POSITION)})"
)

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
    "audit_tree_nodes_no_update": """
        CREATE TRIGGER audit_tree_nodes_no_update BEFORE UPDATE ON audit_tree_nodes
        BEGIN SELECT RAISE(ABORT, 'audit_tree_nodes is append-only: UPDATE refused'); END""",
    "audit_tree_nodes_no_delete": """
        CREATE TRIGGER audit_tree_nodes_no_delete BEFORE DELETE ON audit_tree_nodes
        BEGIN SELECT RAISE(ABORT, 'audit_tree_nodes is append-only: DELETE refused'); END""",
    "audit_tree_heads_no_update": """
        CREATE TRIGGER audit_tree_heads_no_update BEFORE UPDATE ON audit_tree_heads
        BEGIN SELECT RAISE(ABORT, 'audit_tree_heads is append-only: UPDATE refused'); END""",
    "audit_tree_heads_no_delete": """
        CREATE TRIGGER audit_tree_heads_no_delete BEFORE DELETE ON audit_tree_heads
        BEGIN SELECT RAISE(ABORT, 'audit_tree_heads is append-only: DELETE refused'); END""",
    "audit_head_no_delete": """
        CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
        BEGIN SELECT RAISE(ABORT, 'audit_head cannot be deleted'); END""",
    "audit_head_forward_only": """
        CREATE TRIGGER audit_head_forward_only BEFORE UPDATE ON audit_head
        WHEN NEW.seq <= OLD.seq OR NEW.id <> OLD.id
        BEGIN SELECT RAISE(ABORT, 'audit_head only moves forward'); END""",
}

POSTGRES_FUNCTIONS = (
    f"""
    CREATE OR REPLACE FUNCTION mandate_audit_insert_unplaced() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.leaf_index IS NOT NULL OR (NEW.leaf_hash IS NULL AND NEW.hash IS NULL) THEN
            RAISE EXCEPTION '{UNPLACED}' USING ERRCODE = '23514';
        END IF;
        RETURN NEW;
    END $$""",
    f"""
    CREATE OR REPLACE FUNCTION mandate_audit_set_position_once() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF OLD.leaf_index IS NOT NULL OR NEW.leaf_index IS NULL
           OR to_jsonb(NEW) - 'leaf_index' IS DISTINCT FROM to_jsonb(OLD) - 'leaf_index' THEN
            RAISE EXCEPTION '{POSITION_ONLY}: UPDATE refused' USING ERRCODE = '42501';
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

POSTGRES_TRIGGERS: dict[str, str] = {
    # The two row triggers on the append path carry a WHEN clause: the executor evaluates it in place and calls the
    # function (which checks again, and refuses) only for a row that breaks the rule, so an append and the
    # sequencer's placement of a record cost no PL/pgSQL call.
    "audit_records_insert_unplaced": "BEFORE INSERT ON audit_records FOR EACH ROW "
    "WHEN (NEW.leaf_index IS NOT NULL OR (NEW.leaf_hash IS NULL AND NEW.hash IS NULL)) "
    "EXECUTE FUNCTION mandate_audit_insert_unplaced()",
    "audit_records_set_position_once": "BEFORE UPDATE ON audit_records FOR EACH ROW "
    f"WHEN (OLD.leaf_index IS NOT NULL OR NEW.leaf_index IS NULL OR {_ROW_CHANGED}) "
    "EXECUTE FUNCTION mandate_audit_set_position_once()",
    "audit_records_no_delete": "BEFORE DELETE ON audit_records FOR EACH ROW "
    "EXECUTE FUNCTION mandate_audit_append_only()",
    "audit_records_no_truncate": "BEFORE TRUNCATE ON audit_records FOR EACH STATEMENT "
    "EXECUTE FUNCTION mandate_audit_append_only()",
    "audit_tree_nodes_append_only": "BEFORE UPDATE OR DELETE ON audit_tree_nodes FOR EACH ROW "
    "EXECUTE FUNCTION mandate_audit_append_only()",
    "audit_tree_nodes_no_truncate": "BEFORE TRUNCATE ON audit_tree_nodes FOR EACH STATEMENT "
    "EXECUTE FUNCTION mandate_audit_append_only()",
    "audit_tree_heads_append_only": "BEFORE UPDATE OR DELETE ON audit_tree_heads FOR EACH ROW "
    "EXECUTE FUNCTION mandate_audit_append_only()",
    "audit_tree_heads_no_truncate": "BEFORE TRUNCATE ON audit_tree_heads FOR EACH STATEMENT "
    "EXECUTE FUNCTION mandate_audit_append_only()",
    "audit_head_guard": "BEFORE UPDATE OR DELETE ON audit_head FOR EACH ROW "
    "EXECUTE FUNCTION mandate_audit_head_guard()",
    "audit_head_no_truncate": "BEFORE TRUNCATE ON audit_head FOR EACH STATEMENT "
    "EXECUTE FUNCTION mandate_audit_append_only()",
}


def _create_triggers(dialect: str) -> None:
    """Create the append-only triggers, replacing any of the same name (an adopted database has the old ones)."""
    if dialect == "sqlite":
        for name, statement in SQLITE_TRIGGERS.items():
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
            op.execute(statement)
        return
    for statement in POSTGRES_FUNCTIONS:
        op.execute(statement)
    for name, body in POSTGRES_TRIGGERS.items():
        op.execute(f"CREATE OR REPLACE TRIGGER {name} {body}")


def upgrade() -> None:
    connection = op.get_bind()
    existing = set(sa.inspect(connection).get_table_names())
    for name, create in TABLES:
        if name not in existing:
            create()
    op.execute(
        sa.text(
            "INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :genesis) ON CONFLICT (id) DO NOTHING"
        ).bindparams(genesis="0" * 64)
    )
    _create_triggers(connection.dialect.name)


def downgrade() -> None:
    raise NotImplementedError("Mandate's migrations go forward only: restore a backup to go back (docs/database.md)")
