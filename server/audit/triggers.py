"""The triggers that keep the audit log append-only in the database itself (docs/audit.md, "What the database
refuses"): their names, tables and messages. The migrations create them (the baseline,
``server/storage/migrations/versions/0001_baseline.py``; a later revision replaces one when it changes), never a
start, so the server can run as a role that does not own them (docs/database.md).

- ``audit_records``: ``DELETE`` (and ``TRUNCATE`` on PostgreSQL, which skips row triggers) is refused. A new record
  must arrive without a log position and with its leaf hash (or, for the legacy chain only, its link hash). The one
  ``UPDATE`` allowed is the sequencer's: ``leaf_index`` from NULL to a value, every other column unchanged; setting
  it again, clearing it, or changing anything else is refused.
- ``audit_tree_nodes`` and ``audit_tree_heads``: written once, never updated or deleted.
- ``audit_head`` (the legacy chain's frozen head): never deleted, only ever moved forward.

They stop mistakes and anyone who can only write rows; the owner of the tables can still drop them and rewrite the
tables, which is what the Merkle tree, the signed tree heads kept outside the database and ``mandate audit verify``
are for.
"""

from __future__ import annotations

APPEND_ONLY_MESSAGE = "audit_records is append-only"
POSITION_MESSAGE = "audit_records: only the leaf_index may be set, once, by the sequencer"

SQLITE_TRIGGERS: dict[str, str] = {
    "audit_records_set_position_once": "audit_records",
    "audit_records_no_delete": "audit_records",
    "audit_records_insert_unplaced": "audit_records",
    "audit_tree_nodes_no_update": "audit_tree_nodes",
    "audit_tree_nodes_no_delete": "audit_tree_nodes",
    "audit_tree_heads_no_update": "audit_tree_heads",
    "audit_tree_heads_no_delete": "audit_tree_heads",
    "audit_head_no_delete": "audit_head",
    "audit_head_forward_only": "audit_head",
}
"""SQLite: trigger name -> its table."""

POSTGRES_TRIGGERS: dict[str, tuple[str, str]] = {
    "audit_records_insert_unplaced": ("audit_records", "mandate_audit_insert_unplaced"),
    "audit_records_set_position_once": ("audit_records", "mandate_audit_set_position_once"),
    "audit_records_no_delete": ("audit_records", "mandate_audit_append_only"),
    "audit_records_no_truncate": ("audit_records", "mandate_audit_append_only"),
    "audit_tree_nodes_append_only": ("audit_tree_nodes", "mandate_audit_append_only"),
    "audit_tree_nodes_no_truncate": ("audit_tree_nodes", "mandate_audit_append_only"),
    "audit_tree_heads_append_only": ("audit_tree_heads", "mandate_audit_append_only"),
    "audit_tree_heads_no_truncate": ("audit_tree_heads", "mandate_audit_append_only"),
    "audit_head_guard": ("audit_head", "mandate_audit_head_guard"),
    "audit_head_no_truncate": ("audit_head", "mandate_audit_append_only"),
}
"""PostgreSQL: trigger name -> (its table, the plpgsql function it runs)."""

LEGACY_SQLITE_TRIGGERS = ("audit_records_no_update", "audit_records_extend_head", "audit_records_move_head")
"""The linear chain's triggers, dropped by the migration (:mod:`server.audit.migration`)."""

LEGACY_POSTGRES_TRIGGERS = (
    ("audit_records_extend_head", "audit_records"),
    ("audit_records_append_only", "audit_records"),
)
