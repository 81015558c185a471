"""The audit area: the ``audit_search`` tool for agents holding ``audit:read``, and the store's side of lineage.

``audit_search`` pages through the audit trail newest first with the filters of ``mandate audit export`` and an
opaque cursor (:mod:`server.audit.query`). A caller whose token names a tenant sees only that tenant's records.

Lineage (:mod:`server.audit.lineage`) needs to know which rows of the demo store are effects and where they keep
the ``audit_id`` of their cause: refunds and account changes store it, a cancelled order its ``cancel_audit_id``
(one cancelled before that column existed is matched to the succeeded ``order_cancel`` record of its customer whose
arguments name it). :func:`effect_sources` hands the same tables to ``mandate audit verify``.

``audit_receipt`` redeems the receipt handle of a successful call (``_meta`` ``io.mandate/receipt``) for a receipt
(:mod:`server.audit.receipt`), under ``audit:read``, for any record of the caller's tenant.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scopes.money import Money
from scopes.requirement import all_of
from server.audit.chain import RECORDS
from server.audit.lineage import Effect
from server.audit.query import (
    AuditFilter,
    AuditRow,
    BadQuery,
    decode_cursor,
    encode_cursor,
    fetch_rows,
    page_newest_first,
    parse_time,
    select_records,
)
from server.audit.receipt import ReceiptError, build_receipt
from server.audit.render import export_object
from server.audit.tree import TreeError
from server.audit.verify import EffectSource
from server.toolkit import StrictArgs, ToolContext, ToolError, tool
from tools.customers import CustomerId
from tools.store.models import AccountChange, Order, OrderStatus, Refund, Remediation

Timestamp = Annotated[
    str,
    Field(
        pattern=r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?)?$",
        description="RFC 3339 date or date-time; UTC when it has no offset",
        examples=["2025-01-31T09:00:00Z"],
    ),
]


class AuditSearchArgs(StrictArgs):
    principal: Annotated[str, Field(pattern=r"^\S{1,400}$", description="a sub or a client_id")] | None = None
    tool: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")] | None = None
    decision: Literal["allow", "deny", "approval", "error"] | None = None
    outcome: (
        Literal["succeeded", "failed", "refused", "invalid_arguments", "pending_approval", "replayed", "listed"] | None
    ) = None
    customer_id: CustomerId | None = None
    since: Timestamp | None = Field(default=None, description="records at or after this time")
    until: Timestamp | None = Field(default=None, description="records before this time")
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    cursor: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,200}$")] | None = Field(
        default=None, description="next_cursor from the previous page, with the same filters"
    )


class AuditEntry(BaseModel):
    seq: int
    id: str
    at: str
    kind: str
    subject: str | None
    client_id: str | None
    issuer: str | None
    scopes: list[str]
    token_id: str | None
    tenant: str | None
    actor: str | None
    transport: str
    client_address: str | None
    client_name: str | None
    client_version: str | None
    tool: str | None
    customer_id: str | None
    arguments: Any = Field(description="the arguments with sensitive values redacted")
    arguments_digest: str | None
    decision: str
    reason_code: str | None
    reason: str | None
    rule_id: str | None
    policy_version: str | None
    outcome: str
    result_summary: Any
    latency_us: int
    idempotency_key: str | None
    approval_id: str | None
    request_id: str | None
    trace_id: str | None
    leaf_hash: str | None = Field(description="SHA-256(0x00 || canonical record), hex; null for a legacy record")
    leaf_index: int | None = Field(description="the record's position in the Merkle log; null until integrated")
    prev_hash: str | None = Field(description="legacy chain records only")
    hash: str | None = Field(description="legacy chain records only")


class AuditPage(BaseModel):
    items: list[AuditEntry] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last page")


def _filter_of(args: AuditSearchArgs, tenant: str | None) -> AuditFilter:
    try:
        return AuditFilter(
            principal=args.principal,
            tool=args.tool,
            decision=args.decision,
            outcome=args.outcome,
            customer_id=args.customer_id,
            tenant=tenant,
            since=parse_time(args.since) if args.since else None,
            until=parse_time(args.until) if args.until else None,
        )
    except BadQuery as exc:
        raise ToolError("invalid_arguments", str(exc)) from None


@tool(requires=all_of("audit:read"), read_only=True)
async def audit_search(args: AuditSearchArgs, ctx: ToolContext) -> AuditPage:
    """Search the audit trail of tool invocations, newest first: by principal (sub or client_id), tool, decision,
    outcome, customer and time. Pass next_cursor back as cursor, with the same filters, for the next page."""
    audit_filter = _filter_of(args, ctx.principal.tenant)
    try:
        before = decode_cursor(args.cursor, audit_filter) if args.cursor else None
    except BadQuery as exc:
        raise ToolError("invalid_cursor", f"{exc}.") from None
    rows, next_seq = await page_newest_first(ctx.session, audit_filter, limit=args.limit, before_seq=before)
    return AuditPage(
        items=[AuditEntry.model_validate(export_object(row)) for row in rows],
        next_cursor=encode_cursor(next_seq, audit_filter) if next_seq is not None else None,
    )


class ReceiptArgs(StrictArgs):
    audit_id: Annotated[str, Field(pattern=r"^aud_[0-9a-f]{32}$", description="from _meta io.mandate/receipt")]


class SignedTreeHead(BaseModel):
    format: str
    size: int
    root_hash: str
    timestamp: str
    instance: str
    key_id: str
    signature: str


class AuditReceipt(BaseModel):
    """A record with its inclusion proof and a signed tree head; `mandate audit verify-proof FILE --key PUB` checks
    it offline."""

    format: str
    record: dict[str, Any] = Field(description="the fields the record's leaf hash covers")
    leaf_index: int
    inclusion_proof: list[str] = Field(description="RFC 9162 section 2.1.3 audit path, hex SHA-256 hashes")
    tree_head: SignedTreeHead


@tool(requires=all_of("audit:read"), read_only=True)
async def audit_receipt(args: ReceiptArgs, ctx: ToolContext) -> AuditReceipt:
    """Redeem a receipt handle (the audit_id in a successful call's _meta "io.mandate/receipt") for a receipt: the
    audit record, its position in the log, its inclusion proof and a signed tree head, verifiable offline. Any record
    of your tenant. Available about a second after the call."""
    connection = await ctx.session.connection()
    row = (await connection.execute(select_records(AuditFilter()).where(RECORDS.c.id == args.audit_id))).first()
    record = dict(row._mapping) if row is not None else None
    tenant = ctx.principal.tenant
    if record is None or (tenant is not None and record["tenant"] != tenant):
        raise ToolError("not_found", "No audit record with this id is visible to you.")
    try:
        receipt = await build_receipt(connection, args.audit_id)
    except (ReceiptError, TreeError) as exc:
        raise ToolError("not_yet_integrated", f"{exc}.") from None
    return AuditReceipt.model_validate(receipt)


# --- lineage: the store's effects and the records that caused them ---------------------------------------------


def _refund_effect(refund: Refund) -> Effect:
    amount = Money.from_minor(refund.amount_minor, refund.currency).formatted
    return Effect(
        "refund",
        refund.id,
        refund.audit_id,
        f"refund {refund.id}: {amount} {refund.currency} on order {refund.order_id}",
        {"order_id": refund.order_id, "customer_id": refund.customer_id, "amount": amount, "currency": refund.currency},
    )


def _change_effect(change: AccountChange) -> Effect:
    return Effect(
        "account_change",
        change.id,
        change.audit_id,
        f"account change {change.id}: {change.field_name} of customer {change.customer_id}",
        {"customer_id": change.customer_id, "field": change.field_name},
    )


def _remediation_effect(remediation: Remediation) -> Effect:
    return Effect(
        "remediation",
        remediation.id,
        remediation.audit_id,
        f"remediation {remediation.id}: {remediation.action} of {remediation.effect_kind} {remediation.effect_id}",
        {
            "effect_kind": remediation.effect_kind,
            "effect_id": remediation.effect_id,
            "compensates_audit_id": remediation.compensates_audit_id,
        },
    )


def _cancel_effect(order_id: str, customer_id: str, audit_id: str | None) -> Effect:
    return Effect(
        "order_cancellation",
        order_id,
        audit_id,
        f"cancellation of order {order_id}",
        {"order_id": order_id, "customer_id": customer_id},
    )


def _names_order(row: AuditRow, order_id: str) -> bool:
    try:
        arguments = json.loads(str(row["arguments"]))
    except ValueError:
        return False
    return isinstance(arguments, dict) and arguments.get("order_id") == order_id


def effect_sources() -> list[EffectSource]:
    """The store's effect tables and the column naming each row's audit record, for ``mandate audit verify``.

    Orders count from the release that records ``cancel_audit_id``; a cancellation from before it is traced by
    :func:`order_effects` through its record's arguments instead."""
    refunds = Refund.__table__  # type: ignore[attr-defined]
    changes = AccountChange.__table__  # type: ignore[attr-defined]
    orders = Order.__table__  # type: ignore[attr-defined]
    return [
        EffectSource("refund", refunds, "id", "audit_id"),
        EffectSource("account change", changes, "id", "audit_id"),
        EffectSource("order cancellation", orders, "id", "cancel_audit_id", only=orders.c.cancel_audit_id.is_not(None)),
    ]


async def refund_effect(session: AsyncSession, refund_id: str) -> Effect | None:
    refund = await session.get(Refund, refund_id)
    return _refund_effect(refund) if refund is not None else None


async def account_change_effect(session: AsyncSession, change_id: str) -> Effect | None:
    change = await session.get(AccountChange, change_id)
    return _change_effect(change) if change is not None else None


async def order_effects(session: AsyncSession, order_id: str) -> list[Effect] | None:
    """The order's cancellation (when it was cancelled) and its refunds; ``None`` when there is no such order."""
    order = await session.get(Order, order_id)
    if order is None:
        return None
    effects: list[Effect] = []
    if order.status == OrderStatus.CANCELLED and order.cancel_audit_id:
        effects.append(_cancel_effect(order.id, order.customer_id, order.cancel_audit_id))
    elif order.status == OrderStatus.CANCELLED:  # cancelled before orders named their audit record
        query = (
            select_records(AuditFilter(tool="order_cancel", outcome="succeeded", customer_id=order.customer_id))
            .where(RECORDS.c.at == order.cancelled_at)
            .order_by(RECORDS.c.seq)
        )
        causes = [row for row in await fetch_rows(session, query) if _names_order(row, order_id)]
        if not causes:  # times differ (a store clock elsewhere): fall back to the arguments alone
            query = select_records(AuditFilter(tool="order_cancel", outcome="succeeded", customer_id=order.customer_id))
            causes = [row for row in await fetch_rows(session, query) if _names_order(row, order_id)]
        effects.append(_cancel_effect(order.id, order.customer_id, str(causes[0]["id"]) if causes else None))
    query_refunds = select(Refund).where(Refund.order_id == order_id).order_by(col(Refund.created_at))
    refunds = (await session.exec(query_refunds)).all()
    effects.extend(_refund_effect(refund) for refund in refunds)
    return effects


async def effects_of(session: AsyncSession, records: Sequence[AuditRow]) -> list[Effect]:
    """The effects the given records caused: refunds, account changes and order cancellations."""
    # An external effect's rows name the record of its decision (outcome "started"), whose intent then completed.
    ids = [str(row["id"]) for row in records if row["outcome"] in ("succeeded", "started")]
    if not ids:
        return []
    effects: list[Effect] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        refunds = (await session.exec(select(Refund).where(col(Refund.audit_id).in_(chunk)))).all()
        changes = (await session.exec(select(AccountChange).where(col(AccountChange.audit_id).in_(chunk)))).all()
        remediations = (await session.exec(select(Remediation).where(col(Remediation.audit_id).in_(chunk)))).all()
        effects.extend(_refund_effect(refund) for refund in refunds)
        effects.extend(_change_effect(change) for change in changes)
        effects.extend(_remediation_effect(remediation) for remediation in remediations)
    for row in records:
        if row["tool"] == "order_cancel" and row["outcome"] == "succeeded":
            arguments = json.loads(str(row["arguments"]))
            effects.append(_cancel_effect(str(arguments.get("order_id")), str(row["customer_id"]), str(row["id"])))
    order = {str(row["id"]): int(row["seq"]) for row in records}
    return sorted(effects, key=lambda effect: order.get(effect.audit_id or "", 0))
