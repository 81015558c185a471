"""Writing, reading and claiming intents (:mod:`server.effects.models`), and the answers an intent gives.

An intent is an :class:`~server.effects.models.Intent` of plain values, inserted, read and locked with prepared
statements on the transaction's own driver connection (:mod:`server.storage.prepared`), as the call path's other
rows are: the ORM's unit of work cost an external refund more than its decision did (docs/performance.md).

- :func:`new_intent` builds the row the decision's transaction inserts (:func:`insert_started`).
- :func:`in_doubt_answer` is what an agent is told while an intent is unresolved: a retryable tool error naming the
  intent, with ``retry_after_seconds``; the same answer is stored with the agent's idempotency key, so a retry gets
  it (brought up to date by :func:`refresh`) and, once resolved, the final answer instead.
- :func:`claim_due` takes up to ``limit`` intents past their lease for one reconciler: ``SELECT ... FOR UPDATE SKIP
  LOCKED`` on PostgreSQL (two replicas never take the same row), the database write lock on SQLite; the lease is
  moved on and a token set in the same transaction, so no other reconciler takes them until that lease ends.
"""

from __future__ import annotations

import json
import math
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import mcp_types as types
from sqlalchemy import bindparam, insert, select, update
from sqlmodel import col
from sqlmodel import select as select_rows
from sqlmodel.ext.asyncio.session import AsyncSession

from server.audit.redaction import arguments_digest, canonical_json
from server.auth.principal import Principal
from server.callpath.answers import Refusal
from server.callpath.record import refusal_result
from server.effects.models import COLUMNS, COMPLETED, STARTED, TABLE, EffectIntent, Intent
from server.storage.database import Database
from server.storage.prepared import Prepared, defer, run
from server.toolkit import EffectCall

IN_DOUBT = "effect_in_doubt"
EFFECT_META = "io.mandate/effect"
"""``_meta`` key of an answer about an external effect: ``{"intent_id", "provider", "status", "object_id"}``."""

META_INTENT = "mandate_intent"
META_AUDIT = "mandate_audit"
META_TOOL = "mandate_tool"

_INSERT = Prepared(insert(TABLE))
_BY_ID = select(*COLUMNS).where(TABLE.c.id == bindparam("intent_id"))
_READ = Prepared(_BY_ID)
_READ_LOCKED = Prepared(_BY_ID.with_for_update())


def new_intent_id() -> str:
    return f"int_{uuid.uuid4().hex}"


def provider_key(audit_id: str) -> str:
    """The idempotency key the provider gets: derived from the audit id, so every replay sends the same one."""
    return f"mandate-{audit_id}"


def metadata(intent_id: str, audit_id: str, tool: str) -> dict[str, str]:
    return {META_INTENT: intent_id, META_AUDIT: audit_id, META_TOOL: tool}


def effect_call(intent: Intent) -> EffectCall:
    """What the tool's ``call`` and ``find`` are given about ``intent``: its ids, key and metadata."""
    return EffectCall(
        intent_id=intent.id,
        audit_id=intent.audit_id,
        tool=intent.tool,
        idempotency_key=intent.provider_key,
        metadata=metadata(intent.id, intent.audit_id, intent.tool),
    )


def principal_json(principal: Principal) -> str:
    return canonical_json(
        {
            "subject": principal.subject,
            "client_id": principal.client_id,
            "scopes": sorted(principal.scopes),
            "issuer": principal.issuer,
            "expires_at": principal.expires_at.isoformat(),
            "token_id": principal.token_id,
            "tenant": principal.tenant,
            "actor": principal.actor,
            "authorization_details": list(principal.authorization_details),
            "claims": dict(principal.claims),
        }
    )


def principal_of(intent: Intent) -> Principal:
    """The requester as its verified token described it when it asked (never the token)."""
    data: Any = json.loads(intent.principal)
    details = data.get("authorization_details")
    claims = data.get("claims")
    return Principal(
        subject=data["subject"],
        client_id=data["client_id"],
        scopes=frozenset(data.get("scopes") or ()),
        issuer=data["issuer"],
        audience=(),
        expires_at=datetime.fromisoformat(data["expires_at"]),
        token_id=data.get("token_id"),
        tenant=data.get("tenant"),
        actor=data.get("actor"),
        authorization_details=tuple(details) if isinstance(details, list) else (),
        claims=claims if isinstance(claims, dict) else {},
    )


def new_intent(
    *,
    intent_id: str,
    audit_id: str,
    tool: str,
    provider: str,
    provider_name: str,
    arguments: Mapping[str, Any],
    plan: str,
    principal: Principal,
    principal_key: str,
    customer_id: str | None,
    approval_id: str | None,
    call_key: str | None,
    call_key_id: str | None,
    transport: str,
    request_id: str | None,
    now: datetime,
    lease_until: datetime,
) -> Intent:
    """A ``started`` intent, created at ``now`` (the call's time, as its other rows are dated) and leased until
    ``lease_until``, which the caller takes from the clock as the intent is written, not from the call's start: the
    time a call queued for the database and decided must not eat into the provider call's bound."""
    return Intent(
        id=intent_id,
        tool=tool,
        provider=provider,
        provider_name=provider_name,
        status=STARTED,
        audit_id=audit_id,
        provider_key=provider_key(audit_id),
        arguments=json.dumps(dict(arguments), sort_keys=True, separators=(",", ":")),
        arguments_digest=arguments_digest(arguments),
        plan=plan,
        principal=principal_json(principal),
        principal_key=principal_key,
        customer_id=customer_id,
        approval_id=approval_id,
        call_key=call_key,
        call_key_id=call_key_id,
        transport=transport,
        request_id=request_id,
        created_at=now,
        lease_until=lease_until,
    )


SETTLE_SHARE = 0.2
"""The last part of a lease in which no provider call may still run: a request the client has given up on can still
reach the provider while the network or the provider holds it, and the reconciler must not look before it lands."""


def call_seconds_left(intent: Intent, now: datetime, lease_seconds: float) -> float:
    """How long the provider call for ``intent`` may run from ``now``: until its lease ends, less the settling part
    (:data:`SETTLE_SHARE`). Measured from the intent's own ``lease_until``, so a call that started late (its
    transaction waited on the database) gets less time, never more; zero or less means: do not send it."""
    return (intent.lease_until - now).total_seconds() - SETTLE_SHARE * lease_seconds


def stored_arguments(intent: Intent) -> dict[str, Any]:
    arguments: Any = json.loads(intent.arguments)
    return arguments if isinstance(arguments, dict) else {}


def retry_after(intent: Intent, now: datetime, interval: float) -> int:
    """Seconds until a retry can expect the final answer: the lease, plus one round of the reconciler."""
    left = (intent.lease_until - now).total_seconds()
    return max(1, math.ceil(max(0.0, left) + interval))


def in_doubt_answer(
    intent: Intent, now: datetime, interval: float, audit_id: str | None = None
) -> types.CallToolResult:
    wait = retry_after(intent, now, interval)
    keyed = (
        "Retry this call with the same idempotency_key"
        if intent.call_key is not None
        else "Do not ask again with different arguments or a new key; check later"
    )
    refusal = Refusal(
        status="failed",
        code=IN_DOUBT,
        message=f"The request was sent to the {intent.provider_name} {intent.provider} provider, but its outcome is "
        f"not known yet, so it is neither confirmed nor refused. It will happen at most once and will be confirmed "
        f"or released automatically. {keyed} in {wait} s to get the final answer.",
        details={
            "retryable": True,
            "retry_after_seconds": wait,
            "intent_id": intent.id,
            "provider": intent.provider_name,
        },
        audit_id=audit_id or intent.audit_id,
    )
    answer = refusal_result(refusal)
    return answer.model_copy(update={"meta": {EFFECT_META: {"intent_id": intent.id, "status": "in_doubt"}}})


def is_in_doubt(answer: types.CallToolResult) -> str | None:
    """The intent id an answer is the in-doubt answer of, or None."""
    content = answer.structured_content or {}
    details = content.get("details")
    if content.get("code") != IN_DOUBT or not isinstance(details, dict):
        return None
    intent_id = details.get("intent_id")
    return intent_id if isinstance(intent_id, str) else None


async def insert_started(session: AsyncSession, intent: Intent) -> None:
    """Write ``intent`` in the decision's transaction (on PostgreSQL with the call's other writes, in one round
    trip: :func:`server.storage.prepared.deferred.defer`)."""
    await defer(session, _INSERT, intent.values(), expect=1)


async def get(session: AsyncSession, intent_id: str) -> Intent | None:
    row = (await run(session, _READ, {"intent_id": intent_id})).first()
    return None if row is None else Intent.from_row(row)


async def get_locked(session: AsyncSession, intent_id: str) -> Intent | None:
    """The intent, its row locked until the transaction ends (``FOR UPDATE`` on PostgreSQL; on SQLite the
    transaction already holds the database's write lock)."""
    row = (await run(session, _READ_LOCKED, {"intent_id": intent_id})).first()
    return None if row is None else Intent.from_row(row)


async def refresh(db: Database, answer: types.CallToolResult, now: datetime, interval: float) -> types.CallToolResult:
    """A stored in-doubt answer brought up to date: the final answer once resolved, else a fresh retry time."""
    intent_id = is_in_doubt(answer)
    if intent_id is None:
        return answer
    async with db.session() as session:
        intent = await get(session, intent_id)
    if intent is None:
        return answer
    if intent.status != STARTED and intent.answer:
        return types.CallToolResult.model_validate_json(intent.answer)
    return in_doubt_answer(intent, now, interval)


async def claim_due(db: Database, now: datetime, *, lease: timedelta, limit: int) -> list[Intent]:
    """Take up intents started and past their lease, for this reconciler only (see the module docstring)."""
    token = secrets.token_hex(16)

    async def work(session: AsyncSession) -> list[Intent]:
        connection = await session.connection()
        due = (
            select(TABLE.c.id)
            .where(TABLE.c.status == STARTED, TABLE.c.lease_until <= now)
            .order_by(TABLE.c.lease_until)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = [str(row[0]) for row in (await connection.execute(due)).all()]
        if not ids:
            return []
        await connection.execute(
            update(TABLE)
            .where(TABLE.c.id.in_(ids), TABLE.c.status == STARTED)
            .values(lease_until=now + lease, reconcile_token=token, attempts=TABLE.c.attempts + 1)
        )
        rows = (await connection.execute(select(*COLUMNS).where(TABLE.c.id.in_(ids)))).all()
        taken = [Intent.from_row(row) for row in rows]
        return [intent for intent in taken if intent.reconcile_token == token]

    return await db.run_in_transaction(work)


_RENEW = Prepared(
    update(TABLE)
    .where(
        TABLE.c.id == bindparam("k_id"),
        TABLE.c.status == STARTED,
        TABLE.c.reconcile_token == bindparam("k_token"),
    )
    .values(lease_until=bindparam("k_until", type_=TABLE.c.lease_until.type))
)


async def renew_claim(db: Database, intent: Intent, now: datetime, *, lease: timedelta) -> Intent | None:
    """Hold a claim :func:`claim_due` made for one more ``lease`` from ``now``, if it is still this reconciler's
    (the intent still ``started`` and its token unchanged); ``None`` when another reconciler has taken it up since,
    or it was resolved. A round resolves its intents a few at a time, so the last ones of a slow round would
    otherwise be worked on after their claim ran out, beside a reconciler that took them up meanwhile."""
    until = now + lease

    async def work(session: AsyncSession) -> int:
        params = {"k_id": intent.id, "k_token": intent.reconcile_token, "k_until": until}
        return (await run(session, _RENEW, params)).rowcount

    if intent.reconcile_token is None or await db.run_in_transaction(work) != 1:
        return None
    return replace(intent, lease_until=until)


_LATEST_COMPLETED = Prepared(
    select(*COLUMNS)
    .where(
        TABLE.c.status == COMPLETED,
        TABLE.c.tool == bindparam("tool"),
        TABLE.c.provider_name == bindparam("provider_name"),
        TABLE.c.created_at < bindparam("before", type_=TABLE.c.created_at.type),
    )
    .order_by(TABLE.c.lease_until.desc())
    .limit(1)
)


async def latest_completed_before(db: Database, intent: Intent) -> Intent | None:
    """The latest intent of ``intent``'s tool that was written before it and completed at its provider (by lease:
    the status and lease index serves the query), or ``None``: an object that provider is known to have made with
    the payments key of ``intent``'s time, or of an earlier one."""
    params = {"tool": intent.tool, "provider_name": intent.provider_name, "before": intent.created_at}
    async with db.session() as session:
        row = (await run(session, _LATEST_COMPLETED, params)).first()
    return None if row is None else Intent.from_row(row)


async def note_error(db: Database, intent_id: str, message: str) -> None:
    """Keep why the outcome is still unknown (best effort: the intent stays in doubt either way)."""

    async def work(session: AsyncSession) -> None:
        connection = await session.connection()
        await connection.execute(
            update(TABLE).where(TABLE.c.id == intent_id, TABLE.c.status == STARTED).values(last_error=message[:2000])
        )

    await db.run_in_transaction(work)


async def listing(
    db: Database, *, in_doubt: bool, now: datetime, status: str | None = None, limit: int = 200
) -> Sequence[EffectIntent]:
    """Intents newest first: all, of one status, or (``in_doubt``) every one still started, past its lease or not."""
    query = select_rows(EffectIntent)
    if in_doubt:
        query = query.where(EffectIntent.status == STARTED)
    elif status is not None:
        query = query.where(EffectIntent.status == status)
    query = query.order_by(col(EffectIntent.created_at).desc()).limit(limit)
    async with db.session() as session:
        return list((await session.exec(query)).all())
