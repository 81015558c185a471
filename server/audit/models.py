"""The audit tables: records, the Merkle tree's stored subtrees and tree heads, and the legacy chain head
(RFC 9162 section 2.1; docs/audit.md).

One record per invocation, whatever its outcome (DESIGN.md section 6). ``seq`` is the insertion key, assigned by the
database (an identity column on PostgreSQL: ``nextval`` holds no lock to commit; on SQLite the table's rowid);
``leaf_hash`` is computed by the writer from the record's content and committed with it. ``leaf_index``, the
record's position in the log, is NULL until the sequencer (:mod:`server.audit.sequencer`) integrates the record;
the triggers allow setting it once and nothing else.

Records written by the linear hash chain before the Merkle log (``prev_hash`` and ``hash`` set, ``leaf_hash``
NULL) keep their chain; they became the first leaves of the tree (:mod:`server.audit.migration`). The
``audit_head`` row is that chain's frozen head.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Identity, Index, Integer, Text, text
from sqlmodel import Field, SQLModel

from server.storage.types import UTCDateTime

GENESIS_HASH = "0" * 64


class AuditRecord(SQLModel, table=True):
    __tablename__ = "audit_records"
    __table_args__ = (
        Index(
            "ix_audit_records_pending",
            "seq",
            postgresql_where=text("leaf_index IS NULL"),
            sqlite_where=text("leaf_index IS NULL"),
        ),
        # only the records that name an approval: looked up by it (lineage, the console), the others never are
        Index(
            "ix_audit_records_approval_id",
            "approval_id",
            postgresql_where=text("approval_id IS NOT NULL"),
            sqlite_where=text("approval_id IS NOT NULL"),
        ),
    )

    seq: int | None = Field(
        default=None,
        # SQLite: INTEGER PRIMARY KEY is the table's rowid, assigned on insert (revision 0002)
        sa_column=Column(
            BigInteger().with_variant(Integer, "sqlite"), Identity(always=False), primary_key=True, autoincrement=True
        ),
    )
    id: str = Field(unique=True, max_length=40)
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    instance: str = Field(max_length=100)
    kind: str = Field(max_length=20, description="call, list, auth, approval")
    # who
    subject: str | None = Field(default=None, index=True, max_length=400)
    client_id: str | None = Field(default=None, index=True, max_length=400)
    issuer: str | None = Field(default=None, max_length=400)
    scopes: str | None = Field(default=None, sa_column=Column(Text))
    token_id: str | None = Field(default=None, max_length=200)
    tenant: str | None = Field(default=None, max_length=100)
    actor: str | None = Field(default=None, max_length=400)
    # from where
    transport: str = Field(max_length=20)
    client_address: str | None = Field(default=None, max_length=100)
    client_name: str | None = Field(default=None, max_length=200)
    client_version: str | None = Field(default=None, max_length=100)
    origin: str | None = Field(default=None, max_length=200, description="the HTTP Origin header (RFC 6454)")
    user_agent: str | None = Field(default=None, max_length=300, description="the HTTP User-Agent header")
    # what
    tool: str | None = Field(default=None, index=True, max_length=100)
    customer_id: str | None = Field(default=None, index=True, max_length=40)
    arguments: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    arguments_digest: str | None = Field(default=None, max_length=64)
    # how it was decided and how it ended
    decision: str = Field(index=True, max_length=20, description="allow, deny, approval, error")
    reason_code: str | None = Field(default=None, max_length=100)
    reason: str | None = Field(default=None, sa_column=Column(Text))
    rule_id: str | None = Field(default=None, max_length=200)
    policy_version: str | None = Field(default=None, max_length=100)
    outcome: str = Field(
        max_length=30, description="succeeded, failed, refused, invalid_arguments, pending_approval, replayed, listed"
    )
    result_summary: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    latency_us: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    idempotency_key: str | None = Field(default=None, max_length=200)
    approval_id: str | None = Field(default=None, max_length=40)
    request_id: str | None = Field(default=None, max_length=100)
    trace_id: str | None = Field(default=None, max_length=32)
    # the log
    leaf_hash: str | None = Field(default=None, max_length=64, description="SHA-256(0x00 || canonical record), hex")
    leaf_index: int | None = Field(
        default=None, sa_column=Column(BigInteger, nullable=True, unique=True, index=False), description="set once"
    )
    # the legacy linear chain (records written before the Merkle log only)
    prev_hash: str | None = Field(default=None, max_length=64)
    hash: str | None = Field(default=None, max_length=64)


class AuditHead(SQLModel, table=True):
    """The legacy chain's last position and hash: one row, id 1; frozen since the Merkle log took over."""

    __tablename__ = "audit_head"

    id: int = Field(primary_key=True)
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    hash: str = Field(max_length=64)


class AuditTreeNode(SQLModel, table=True):
    """A perfect subtree of the log of level >= 1 (level 0 is a record's ``leaf_hash``): it covers leaves
    ``idx * 2**level`` to ``(idx + 1) * 2**level``. Written once, when its last leaf is integrated."""

    __tablename__ = "audit_tree_nodes"

    level: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    idx: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hash: str = Field(max_length=64)


class AuditTreeHead(SQLModel, table=True):
    """The tree after one integration batch: its size, root, compact range (to append to), and signed form."""

    __tablename__ = "audit_tree_heads"

    size: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    root_hash: str = Field(max_length=64)
    frontier: str = Field(default="", sa_column=Column(Text, nullable=False))
    """The hex hashes of the perfect subtrees covering ``[0, size)``, largest first, comma-separated."""
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    instance: str = Field(max_length=100)
    signed: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    """The signed tree head document (JSON), when the sequencer had the signing key."""
