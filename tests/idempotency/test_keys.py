"""Idempotency keys through the real call path (docs/approvals.md, "Idempotency keys"): a retry with the same key and
arguments gets the first answer again and never a second effect, whoever retries from wherever, on SQLite and
PostgreSQL alike. Every test checks the database (refunds, ledger, audit trail, stored keys) besides the answers.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any

import anyio
import mcp_types as types
import psycopg
import pytest
from mcp.client import Client
from sqlalchemy import event, update
from sqlmodel import col, func, select

from scopes.policy import parse_policy
from scopes.policy.policy import DEFAULT_POLICY
from server import idempotency
from server.approvals import Approval
from server.audit.models import AuditRecord
from server.audit.redaction import arguments_digest
from server.idempotency import IdempotencyRecord
from server.ledger import LedgerEntry
from server.policy_runtime import StaticPolicy
from tests.conftest import POSTGRES_URL, Harness
from tests.idempotency.processes import race
from tests.mail import code_sent_to, outbox
from tools.store.models import AccountChange, Customer, Order, OrderStatus, Refund

pytestmark = pytest.mark.anyio

META = "io.mandate/idempotency"
KEY = "refund-attempt-0001"
REFUND = {"order_id": "ord_5001", "amount": "5.00", "currency": "EUR", "reason": "damaged in transit"}
BIG_REFUND = {"order_id": "ord_5002", "amount": "150.00", "currency": "EUR", "reason": "monitor arrived broken"}
CANCEL = {"order_id": "ord_5001", "reason": "customer changed their mind"}


def _keyed(arguments: dict[str, Any], key: str = KEY) -> dict[str, Any]:
    return {**arguments, "idempotency_key": key}


async def _call(
    harness: Harness, agent: str, tool: str, arguments: dict[str, Any], **token: Any
) -> types.CallToolResult:
    async with harness.client(agent, **token) as client:
        return await client.call_tool(tool, arguments)


def _body(result: types.CallToolResult) -> dict[str, Any]:
    body: dict[str, Any] | None = result.structured_content
    assert body is not None, result.content
    return body


def _replay_meta(result: types.CallToolResult) -> dict[str, Any] | None:
    meta: dict[str, Any] | None = (result.meta or {}).get(META)
    return meta


def _succeeded(result: types.CallToolResult) -> dict[str, Any]:
    """The body of a first (not replayed) successful answer."""
    assert not result.is_error, result.content
    assert _replay_meta(result) is None
    return _body(result)


def _replayed(result: types.CallToolResult, first: dict[str, Any]) -> dict[str, Any]:
    """The replay meta of an answer that repeats ``first`` exactly."""
    meta = _replay_meta(result)
    assert meta is not None, result
    assert meta["replayed"] is True
    assert _body(result) == first
    return meta


def _refused(result: types.CallToolResult, code: str) -> dict[str, Any]:
    assert result.is_error, result.content
    body = _body(result)
    assert body["code"] == code, body
    return body


async def _count(harness: Harness, model: Any) -> int:
    async with harness.mandate.db.session() as session:
        return int((await session.exec(select(func.count()).select_from(model))).one())


async def _refunds(harness: Harness) -> list[Refund]:
    async with harness.mandate.db.session() as session:
        return list((await session.exec(select(Refund).order_by(col(Refund.created_at)))).all())


async def _ledger(harness: Harness) -> list[LedgerEntry]:
    async with harness.mandate.db.session() as session:
        return list((await session.exec(select(LedgerEntry))).all())


async def _keys(harness: Harness) -> list[IdempotencyRecord]:
    async with harness.mandate.db.session() as session:
        return list((await session.exec(select(IdempotencyRecord))).all())


async def _records(harness: Harness, tool: str) -> list[AuditRecord]:
    query = select(AuditRecord).where(AuditRecord.tool == tool).order_by(col(AuditRecord.seq))
    async with harness.mandate.db.session() as session:
        return list((await session.exec(query)).all())


async def _outcomes(harness: Harness, tool: str = "refund_create") -> list[tuple[str, str | None]]:
    return [(record.outcome, record.reason_code) for record in await _records(harness, tool)]


async def _order(harness: Harness, order_id: str) -> Order:
    async with harness.mandate.db.session() as session:
        order = await session.get(Order, order_id)
    assert order is not None
    return order


async def _set_status(harness: Harness, order_id: str, status: OrderStatus) -> None:
    async def work(session: Any) -> None:
        await session.exec(update(Order).where(col(Order.id) == order_id).values(status=status))

    await harness.mandate.db.run_in_transaction(work)


def _move_clock(harness: Harness, by: timedelta) -> None:
    later = harness.mandate.enforcer.clock() + by
    harness.mandate.enforcer.clock = lambda: later


# --- the same request again -----------------------------------------------------------------------------------


async def test_the_same_key_and_arguments_again_refund_once_and_the_retry_gets_the_first_answer(
    harness: Harness,
) -> None:
    first = _succeeded(await _call(harness, "refunds", "refund_create", _keyed(REFUND)))
    # a retry after a lost answer: a new connection and a new token of the same agent
    again = await _call(harness, "refunds", "refund_create", _keyed(REFUND))
    meta = _replayed(again, first)

    [refund] = await _refunds(harness)
    assert (first["refund_id"], refund.amount_minor) == (refund.id, 500)
    assert (await _order(harness, "ord_5001")).refunded_minor == 500
    ledger = await _ledger(harness)
    assert len(ledger) == 2 and {entry.audit_id for entry in ledger} == {refund.audit_id}  # spent once

    succeeded, replayed = await _records(harness, "refund_create")
    assert (succeeded.outcome, succeeded.id, succeeded.idempotency_key) == ("succeeded", refund.audit_id, KEY)
    assert (replayed.decision, replayed.outcome, replayed.reason_code) == ("allow", "replayed", "idempotent_replay")
    assert replayed.idempotency_key == KEY
    assert meta == {"replayed": True, "key": KEY, "original_audit_id": refund.audit_id, "audit_id": replayed.id}
    assert '"replay_of":"' + refund.audit_id in replayed.result_summary

    third = await _call(harness, "refunds", "refund_create", _keyed(REFUND))
    assert _replayed(third, first)["original_audit_id"] == refund.audit_id
    assert len(await _refunds(harness)) == 1
    [stored] = await _keys(harness)
    assert (stored.status, stored.tool, stored.key, stored.audit_id) == (
        "completed",
        "refund_create",
        KEY,
        refund.audit_id,
    )


async def test_the_same_arguments_in_another_order_are_the_same_request(harness: Harness) -> None:
    first = _succeeded(await _call(harness, "refunds", "refund_create", _keyed(REFUND)))
    shuffled = dict(reversed(list(_keyed(REFUND).items())))
    _replayed(await _call(harness, "refunds", "refund_create", shuffled), first)
    assert len(await _refunds(harness)) == 1


@pytest.mark.parametrize(
    "change",
    [{"amount": "6.00"}, {"order_id": "ord_5008"}, {"reason": "a different reason"}],
    ids=["amount", "order", "reason"],
)
async def test_the_same_key_with_different_arguments_is_refused_and_nothing_runs(
    harness: Harness, change: dict[str, str]
) -> None:
    first = _succeeded(await _call(harness, "refunds", "refund_create", _keyed(REFUND)))
    reused = _refused(
        await _call(harness, "refunds", "refund_create", _keyed({**REFUND, **change})), "idempotency_key_reused"
    )
    assert reused["status"] == "denied"

    [refund] = await _refunds(harness)
    assert refund.id == first["refund_id"]
    assert [(await _order(harness, o)).refunded_minor for o in ("ord_5001", "ord_5008")] == [500, 0]
    assert len(await _ledger(harness)) == 2
    record = (await _records(harness, "refund_create"))[-1]
    assert (record.id, record.decision, record.outcome) == (reused["audit_id"], "deny", "refused")
    # the refused attempt did not overwrite the stored answer: the original request still replays it
    _replayed(await _call(harness, "refunds", "refund_create", _keyed(REFUND)), first)


# --- whose key --------------------------------------------------------------------------------------------------


async def test_keys_belong_to_one_principal_so_agents_sharing_a_key_each_get_their_own_refund(
    harness: Harness,
) -> None:
    agents: list[dict[str, str]] = [
        {},  # agent:refunds through refunds-agent
        {"subject": "agent:refunds-night"},  # another subject, the same client
        {"client_id": "refunds-agent-2"},  # the same subject through another client
    ]
    firsts: list[dict[str, Any]] = []
    for index, who in enumerate(agents):  # the same key, with amounts that would clash if the key were shared
        arguments = _keyed({**REFUND, "amount": f"{5 + index}.00"})
        firsts.append(_succeeded(await _call(harness, "refunds", "refund_create", arguments, **who)))
    assert [first["amount"] for first in firsts] == ["5.00", "6.00", "7.00"]

    refunds = await _refunds(harness)
    assert sorted(refund.amount_minor for refund in refunds) == [500, 600, 700]
    assert len({refund.created_by for refund in refunds}) == 3
    assert len({row.principal_key for row in await _keys(harness)}) == 3
    for index, who in enumerate(agents):  # each retry gets its own agent's answer, never another's
        arguments = _keyed({**REFUND, "amount": f"{5 + index}.00"})
        _replayed(await _call(harness, "refunds", "refund_create", arguments, **who), firsts[index])
    assert len(await _refunds(harness)) == 3


async def test_keys_belong_to_one_tool_so_the_same_key_on_another_tool_runs_it(harness: Harness) -> None:
    refunded = _succeeded(await _call(harness, "senior", "refund_create", _keyed(REFUND)))
    cancelled = _succeeded(await _call(harness, "senior", "order_cancel", _keyed({**CANCEL, "order_id": "ord_5008"})))
    assert (refunded["order_id"], cancelled["status"]) == ("ord_5001", "cancelled")
    assert len(await _refunds(harness)) == 1
    assert (await _order(harness, "ord_5008")).status == OrderStatus.CANCELLED
    assert sorted(row.tool for row in await _keys(harness)) == ["order_cancel", "refund_create"]


# --- what is stored, what is not -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "invalid",
    [{"amount": 12.5}, {"amount": "5.001"}, {"currency": "eur"}, {"unexpected": "field"}],
    ids=["number-amount", "too-many-decimals", "lowercase-currency", "unknown-field"],
)
async def test_a_call_that_fails_validation_stores_nothing_and_the_key_then_works(
    harness: Harness, invalid: dict[str, Any]
) -> None:
    rejected = await _call(harness, "refunds", "refund_create", _keyed({**REFUND, **invalid}))
    _refused(rejected, "invalid_arguments")
    assert await _keys(harness) == []
    assert await _refunds(harness) == []

    first = _succeeded(await _call(harness, "refunds", "refund_create", _keyed(REFUND)))
    [refund] = await _refunds(harness)
    assert refund.id == first["refund_id"]
    assert await _outcomes(harness) == [("invalid_arguments", "invalid_arguments"), ("succeeded", "allowed")]


@pytest.mark.parametrize("key", ["short", "k" * 201, 12345678], ids=["too-short", "too-long", "not-a-string"])
async def test_an_idempotency_key_of_the_wrong_length_or_type_is_refused_and_nothing_happens(
    harness: Harness, key: Any
) -> None:
    rejected = await _call(harness, "refunds", "refund_create", _keyed(REFUND, key))
    _refused(rejected, "invalid_arguments")
    assert (await _refunds(harness), await _keys(harness), await _ledger(harness)) == ([], [], [])


async def test_keys_of_eight_and_of_two_hundred_characters_are_accepted(harness: Harness) -> None:
    for key in ("k" * 8, "k" * 200):
        first = _succeeded(await _call(harness, "refunds", "refund_create", _keyed(REFUND, key)))
        _replayed(await _call(harness, "refunds", "refund_create", _keyed(REFUND, key)), first)
    assert len(await _refunds(harness)) == 2


async def test_a_call_refused_for_a_missing_scope_stores_nothing_and_the_same_agent_may_then_use_the_key(
    harness: Harness,
) -> None:
    narrow = await _call(harness, "refunds", "refund_create", _keyed(REFUND), scopes=("orders:read",))
    _refused(narrow, "insufficient_scope")
    assert await _keys(harness) == []
    # the same principal (issuer, client, subject) with a token that holds the scope
    first = _succeeded(await _call(harness, "refunds", "refund_create", _keyed(REFUND)))
    assert [refund.id for refund in await _refunds(harness)] == [first["refund_id"]]


async def test_a_policy_deny_releases_the_key_so_the_same_agent_may_retry_once_it_is_allowed(harness: Harness) -> None:
    arguments = _keyed({**REFUND, "amount": "60.00"})
    capped = {"authorization_details": [{"type": "refund", "max_amount": {"value": "50.00", "currency": "EUR"}}]}
    denied = await _call(harness, "refunds", "refund_create", arguments, extra_claims=capped)
    assert _refused(denied, "token_limit_exceeded")["status"] == "denied"
    assert await _keys(harness) == []
    assert (await _refunds(harness), await _ledger(harness)) == ([], [])

    # the same agent with a token without that cap retries the same request: it runs, it is no replay of the deny
    first = _succeeded(await _call(harness, "refunds", "refund_create", arguments))
    [refund] = await _refunds(harness)
    assert (refund.id, refund.amount_minor) == (first["refund_id"], 6000)
    deny, success = await _records(harness, "refund_create")
    assert (deny.outcome, deny.reason_code, deny.idempotency_key) == ("refused", "token_limit_exceeded", KEY)
    assert (success.outcome, success.idempotency_key) == ("succeeded", KEY)


async def test_a_deny_on_the_orders_state_releases_the_key_and_the_retry_runs_once_the_state_allows(
    harness: Harness,
) -> None:
    await _set_status(harness, "ord_5001", OrderStatus.SHIPPED)
    denied = await _call(harness, "senior", "order_cancel", _keyed(CANCEL))
    assert _refused(denied, "order_not_cancellable")["rule"] == "order-cancel-open-only"
    assert await _keys(harness) == []

    await _set_status(harness, "ord_5001", OrderStatus.PENDING)
    first = _succeeded(await _call(harness, "senior", "order_cancel", _keyed(CANCEL)))
    assert (first["order_id"], first["status"]) == ("ord_5001", "cancelled")
    assert (await _order(harness, "ord_5001")).status == OrderStatus.CANCELLED
    _replayed(await _call(harness, "senior", "order_cancel", _keyed(CANCEL)), first)
    assert await _outcomes(harness, "order_cancel") == [
        ("refused", "order_not_cancellable"),
        ("succeeded", "allowed"),
        ("replayed", "idempotent_replay"),
    ]


async def test_a_refund_over_what_is_left_is_a_policy_deny_so_the_key_is_free_for_a_corrected_amount(
    harness: Harness,
) -> None:
    denied = await _call(harness, "refunds", "refund_create", _keyed({**REFUND, "amount": "158.01"}))
    assert _refused(denied, "exceeds_refundable")["rule"] == "refund-within-refundable"
    assert await _keys(harness) == []
    first = _succeeded(await _call(harness, "refunds", "refund_create", _keyed(REFUND)))
    assert [refund.id for refund in await _refunds(harness)] == [first["refund_id"]]


async def test_a_tool_refusal_is_stored_and_the_retry_gets_it_again_without_running_the_tool(harness: Harness) -> None:
    unchanged = {"customer_id": "cus_1001", "new_email": "ada@example.com"}  # already the account's address
    refused = await _call(harness, "senior", "account_email_change", _keyed(unchanged))
    body = _refused(refused, "no_change")
    assert body["status"] == "failed"

    # meanwhile the address changes, so running the first request now would change it back
    moved = _succeeded(
        await _call(
            harness,
            "senior",
            "account_email_change",
            _keyed({**unchanged, "new_email": "ada@example.org"}, "email-change-0002"),
        )
    )
    assert moved["request_id"].startswith("ecr_")
    code = code_sent_to(outbox(harness.mandate.settings.data_dir), "ada@example.org")
    confirmed = _succeeded(
        await _call(harness, "senior", "account_email_confirm", {"request_id": moved["request_id"], "code": code})
    )
    assert confirmed["status"] == "confirmed"

    again = await _call(harness, "senior", "account_email_change", _keyed(unchanged))
    assert again.is_error
    meta = _replayed(again, body)
    assert meta["original_audit_id"] == body["audit_id"]
    async with harness.mandate.db.session() as session:
        customer = await session.get(Customer, "cus_1001")
        changes = (await session.exec(select(AccountChange))).all()
    assert customer is not None and customer.email == "ada@example.org"
    assert [change.new_value for change in changes] == ["ada@example.org"]
    assert await _outcomes(harness, "account_email_change") == [
        ("failed", "no_change"),
        ("succeeded", "allowed"),
        ("replayed", "idempotent_replay"),
    ]


@pytest.mark.parametrize(
    ("change", "code"),
    [({"amount": "0.00"}, "invalid_amount"), ({"order_id": "ord_9999"}, "not_found")],
    ids=["zero-amount", "no-such-order"],
)
async def test_a_refund_the_tool_refuses_is_stored_and_replayed(
    harness: Harness, change: dict[str, str], code: str
) -> None:
    arguments = _keyed({**REFUND, **change})
    body = _refused(await _call(harness, "refunds", "refund_create", arguments), code)
    [stored] = await _keys(harness)
    assert (stored.status, stored.audit_id) == ("completed", body["audit_id"])
    again = await _call(harness, "refunds", "refund_create", arguments)
    assert again.is_error and _replayed(again, body)["original_audit_id"] == body["audit_id"]
    assert (await _refunds(harness), await _ledger(harness)) == ([], [])
    assert await _outcomes(harness) == [("failed", code), ("replayed", "idempotent_replay")]


async def test_every_audit_record_of_a_call_with_a_key_names_the_key(harness: Harness) -> None:
    assert isinstance(
        await _claim_as_another_request(harness, {**REFUND, "amount": "7.00"}, "busy-key-0001"), idempotency.Claimed
    )
    calls = [
        (_keyed(REFUND), "succeeded"),
        (_keyed(REFUND), "replayed"),
        (_keyed({**REFUND, "amount": "6.00"}), "refused"),  # reused with other arguments
        (_keyed({**REFUND, "amount": "7.00"}, "busy-key-0001"), "refused"),  # in progress
        (_keyed({**REFUND, "amount": "0.00"}, "zero-key-0001"), "failed"),  # the tool refuses
        (_keyed({**REFUND, "amount": "158.01"}, "over-key-0001"), "refused"),  # the policy denies
    ]
    for arguments, _ in calls:
        await _call(harness, "refunds", "refund_create", arguments)
    records = await _records(harness, "refund_create")
    assert [(r.outcome, r.idempotency_key) for r in records] == [(o, a["idempotency_key"]) for a, o in calls]
    assert [r.reason_code for r in records][2:4] == ["idempotency_key_reused", "idempotency_in_progress"]


async def test_a_stored_answer_never_crosses_tenants_of_one_principal(harness: Harness) -> None:
    """Tenancy applies where data is read: a token of another tenant must not read the answer by replaying it."""
    first = _succeeded(await _call(harness, "refunds", "refund_create", _keyed(REFUND), tenant="acme"))
    assert first["order_id"] == "ord_5001"  # an acme order
    other = await _call(harness, "refunds", "refund_create", _keyed(REFUND), tenant="globex")
    assert _replay_meta(other) is None
    assert "refund_id" not in _refused(other, "not_found")
    assert len(await _refunds(harness)) == 1
    _replayed(await _call(harness, "refunds", "refund_create", _keyed(REFUND), tenant="acme"), first)


OWN_ORGANISATION_ONLY = b"""
[[rules]]
id = "own-organisation-only"
kind = "require"
tools = ["refund_create"]
require = [{ path = "facts.tenant", eq = { path = "principal.claims.org" } }]
code = "foreign_order"
message = "This order belongs to another organisation."
otherwise = "not_found"
"""


async def test_a_concealed_refusal_and_a_real_not_found_answer_a_retry_alike(harness: Harness) -> None:
    """A refusal that looks like "not found" must stay indistinguishable from one when the caller retries it."""
    policy = parse_policy(DEFAULT_POLICY.read_bytes() + OWN_ORGANISATION_ONLY, "default + own-organisation-only")
    harness.mandate.enforcer.policies = StaticPolicy(policy)
    globex = {"extra_claims": {"org": "globex"}}
    retries: dict[str, dict[str, Any] | None] = {}
    for order_id in ("ord_5001", "ord_9999"):  # acme's order (concealed by the rule), and no order at all
        arguments = _keyed({**REFUND, "order_id": order_id}, f"probe-{order_id}")
        first = _refused(await _call(harness, "refunds", "refund_create", arguments, **globex), "not_found")
        again = await _call(harness, "refunds", "refund_create", arguments, **globex)
        assert _body(again) == first
        retries[order_id] = _replay_meta(again)
    assert retries["ord_5001"] is not None and retries["ord_9999"] is not None
    assert retries["ord_5001"].keys() == retries["ord_9999"].keys()
    assert await _refunds(harness) == []
    assert len(await _keys(harness)) == 2


# --- approvals ------------------------------------------------------------------------------------------------


async def _decide(harness: Harness, approval_id: str, decision: str) -> dict[str, Any]:
    arguments = {"approval_id": approval_id, "decision": decision, "comment": "checked with the customer"}
    return _succeeded(await _call(harness, "supervisor", "approval_decide", arguments))


async def test_a_pending_approval_is_stored_and_the_retry_follows_it_to_the_executed_refund(harness: Harness) -> None:
    pending = _succeeded(await _call(harness, "refunds", "refund_create", _keyed(BIG_REFUND)))
    assert pending["status"] == "pending_approval"
    approval_id = pending["approval_id"]

    waiting = await _call(harness, "refunds", "refund_create", _keyed(BIG_REFUND))
    assert _replayed(waiting, pending)["original_audit_id"] == pending["audit_id"]
    assert await _count(harness, Approval) == 1
    assert await _refunds(harness) == []
    assert await _outcomes(harness) == [("pending_approval", "cap_exceeded"), ("replayed", "idempotent_replay")]

    decided = await _decide(harness, approval_id, "approve")
    assert decided["status"] == "executed"
    [refund] = await _refunds(harness)
    run = next(r for r in await _records(harness, "refund_create") if r.id == refund.audit_id)
    assert (run.transport, run.approval_id, run.idempotency_key) == ("approval", approval_id, KEY)

    done = await _call(harness, "refunds", "refund_create", _keyed(BIG_REFUND))
    assert not done.is_error
    result = _body(done)
    assert (result["refund_id"], result["amount"], result["order_id"]) == (refund.id, "150.00", "ord_5002")
    assert result == decided["outcome"]["result"]
    meta = _replay_meta(done)
    assert meta is not None and meta["replayed"] is True and meta["original_audit_id"] == pending["audit_id"]
    _replayed(await _call(harness, "refunds", "refund_create", _keyed(BIG_REFUND)), result)
    assert len(await _refunds(harness)) == 1
    assert await _count(harness, Approval) == 1
    assert (await _order(harness, "ord_5002")).refunded_minor == 15000


async def test_the_retry_of_a_rejected_approval_is_told_it_was_rejected_and_nothing_runs(harness: Harness) -> None:
    pending = _succeeded(await _call(harness, "refunds", "refund_create", _keyed(BIG_REFUND)))
    assert (await _decide(harness, pending["approval_id"], "reject"))["status"] == "rejected"
    rejected = _refused(await _call(harness, "refunds", "refund_create", _keyed(BIG_REFUND)), "approval_rejected")
    assert rejected["details"] == {"approval_id": pending["approval_id"]}
    assert "checked with the customer" in rejected["message"]
    assert await _refunds(harness) == []
    assert await _count(harness, Approval) == 1


async def test_an_approvers_retry_with_its_key_gets_the_decision_again_and_nothing_runs_twice(
    harness: Harness,
) -> None:
    pending = _succeeded(await _call(harness, "refunds", "refund_create", BIG_REFUND))
    arguments = _keyed({"approval_id": pending["approval_id"], "decision": "approve"}, "decision-0001")
    decided = _succeeded(await _call(harness, "supervisor", "approval_decide", arguments))
    assert decided["status"] == "executed"
    # without the key the same decision is refused as final; with it, the retry reads the first answer
    again = await _call(harness, "supervisor", "approval_decide", arguments)
    _replayed(again, decided)
    assert len(await _refunds(harness)) == 1
    assert await _outcomes(harness, "approval_decide") == [("succeeded", "allowed"), ("replayed", "idempotent_replay")]
    unkeyed = {key: value for key, value in arguments.items() if key != "idempotency_key"}
    _refused(await _call(harness, "supervisor", "approval_decide", unkeyed), "approval_already_decided")
    assert len(await _refunds(harness)) == 1


# --- while the first call runs, and after ------------------------------------------------------------------------


async def _claim_as_another_request(
    harness: Harness, arguments: dict[str, Any], key: str = KEY
) -> idempotency.ClaimOutcome:
    """Claim ``key`` for agent:refunds as a request still running (or one whose process died) would have."""
    enforcer = harness.mandate.enforcer
    principal = await harness.mandate.verifier.verify(harness.token("refunds"))  # no tenant: keys are its own
    return await idempotency.claim(
        harness.mandate.db,
        principal_key=principal.key,
        tool="refund_create",
        key=key,
        arguments_digest=arguments_digest(arguments),
        now=enforcer.clock(),
        ttl=timedelta(seconds=enforcer.keys.ttl_seconds),
        lease=timedelta(seconds=enforcer.keys.lease_seconds),
    )


async def test_a_duplicate_while_the_first_call_runs_is_told_to_retry_and_a_dead_claim_is_taken_over_after_its_lease(
    harness: Harness,
) -> None:
    assert isinstance(await _claim_as_another_request(harness, REFUND), idempotency.Claimed)
    busy = _refused(await _call(harness, "refunds", "refund_create", _keyed(REFUND)), "idempotency_in_progress")
    assert busy["details"]["retryable"] is True
    assert 1 <= busy["details"]["retry_after_seconds"] <= 5
    # different arguments under a key in use are refused as reused, running or not
    _refused(
        await _call(harness, "refunds", "refund_create", _keyed({**REFUND, "amount": "6.00"})), "idempotency_key_reused"
    )
    assert await _refunds(harness) == []

    _move_clock(harness, timedelta(seconds=harness.mandate.enforcer.keys.lease_seconds + 1))
    first = _succeeded(await _call(harness, "refunds", "refund_create", _keyed(REFUND)))
    assert [refund.id for refund in await _refunds(harness)] == [first["refund_id"]]
    _replayed(await _call(harness, "refunds", "refund_create", _keyed(REFUND)), first)


async def test_after_its_retention_a_key_is_free_again_and_the_same_request_runs_anew(harness: Harness) -> None:
    first = _succeeded(await _call(harness, "refunds", "refund_create", _keyed(REFUND)))
    _move_clock(harness, timedelta(seconds=harness.mandate.enforcer.keys.ttl_seconds + 1))
    second = _succeeded(await _call(harness, "refunds", "refund_create", _keyed(REFUND)))
    assert second["refund_id"] != first["refund_id"]
    assert len(await _refunds(harness)) == 2
    [stored] = await _keys(harness)  # the expired row was taken over, not duplicated
    assert stored.audit_id == (await _refunds(harness))[-1].audit_id


# --- concurrent duplicates ---------------------------------------------------------------------------------------


def _check_race(answers: list[types.CallToolResult]) -> tuple[dict[str, Any], int, int]:
    """One first answer; every other answer its replay or a retryable "in progress". Returns (first, replays, busy)."""
    firsts = [a for a in answers if not a.is_error and _replay_meta(a) is None]
    assert len(firsts) == 1, answers
    first = _body(firsts[0])
    replays = busy = 0
    for answer in answers:
        if answer is firsts[0]:
            continue
        if answer.is_error:
            details = _refused(answer, "idempotency_in_progress")["details"]
            assert details["retryable"] is True and details["retry_after_seconds"] >= 1
            busy += 1
        else:
            _replayed(answer, first)
            replays += 1
    return first, replays, busy


async def test_concurrent_duplicates_in_one_process_make_one_refund(harness: Harness) -> None:
    answers: list[types.CallToolResult] = []
    go = anyio.Event()

    async def call(client: Client) -> None:
        await go.wait()
        answers.append(await client.call_tool("refund_create", _keyed(REFUND)))

    with anyio.fail_after(30):
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(harness.client("refunds")) for _ in range(8)]
            async with anyio.create_task_group() as group:
                for client in clients:
                    group.start_soon(call, client)
                go.set()
    assert len(answers) == 8
    first, replays, busy = _check_race(answers)

    [refund] = await _refunds(harness)
    assert refund.id == first["refund_id"]
    assert (await _order(harness, "ord_5001")).refunded_minor == 500
    assert {entry.audit_id for entry in await _ledger(harness)} == {refund.audit_id}
    outcomes = await _outcomes(harness)
    assert outcomes.count(("succeeded", "allowed")) == 1
    assert outcomes.count(("replayed", "idempotent_replay")) == replays
    assert outcomes.count(("refused", "idempotency_in_progress")) == busy
    _replayed(await _call(harness, "refunds", "refund_create", _keyed(REFUND)), first)  # settled: a replay now


def _from_worker(answer: dict[str, Any]) -> types.CallToolResult:
    """A worker's answer (no _meta) as a result; a replay is told apart from the first by its audit record only."""
    return types.CallToolResult(content=[], structured_content=answer["body"], is_error=answer["is_error"])


async def test_duplicates_racing_from_several_processes_make_one_refund(harness: Harness) -> None:
    call = {"tool": "refund_create", "arguments": _keyed(REFUND)}
    jobs = [[{**call, "token": harness.token("refunds")} for _ in range(3)] for _ in range(4)]
    answers = [_from_worker(answer) for job in await race(harness, jobs) for answer in job]
    assert len(answers) == 12

    [refund] = await _refunds(harness)
    successes = [_body(a) for a in answers if not a.is_error]
    assert successes and all(body == successes[0] for body in successes)
    assert successes[0]["refund_id"] == refund.id
    for answer in answers:
        if answer.is_error:
            assert _refused(answer, "idempotency_in_progress")["details"]["retryable"] is True
    assert (await _order(harness, "ord_5001")).refunded_minor == 500
    assert {entry.audit_id for entry in await _ledger(harness)} == {refund.audit_id}
    outcomes = await _outcomes(harness)
    assert outcomes.count(("succeeded", "allowed")) == 1
    assert outcomes.count(("replayed", "idempotent_replay")) == len(successes) - 1
    assert outcomes.count(("refused", "idempotency_in_progress")) == 12 - len(successes)


async def test_the_same_key_with_different_arguments_racing_from_several_processes_makes_one_refund(
    harness: Harness,
) -> None:
    amounts = ["5.00", "6.00", "7.00", "8.00"]  # one per process, each process sending its own request three times
    jobs = [
        [
            {
                "tool": "refund_create",
                "arguments": _keyed({**REFUND, "amount": amount}),
                "token": harness.token("refunds"),
            }
            for _ in range(3)
        ]
        for amount in amounts
    ]
    answers = await race(harness, jobs)

    [refund] = await _refunds(harness)
    winner = amounts.index(f"{refund.amount_minor / 100:.2f}")
    for index, job in enumerate(answers):
        results = [_from_worker(answer) for answer in job]
        if index != winner:  # a key taken with other arguments: refused, whether that request is finished or not
            for result in results:
                _refused(result, "idempotency_key_reused")
            continue
        for result in results:
            if result.is_error:
                assert _refused(result, "idempotency_in_progress")["details"]["retryable"] is True
            else:
                assert _body(result)["refund_id"] == refund.id
        assert any(not result.is_error for result in results)
    assert (await _order(harness, "ord_5001")).refunded_minor == refund.amount_minor
    assert {entry.audit_id for entry in await _ledger(harness)} == {refund.audit_id}
    outcomes = await _outcomes(harness)
    assert outcomes.count(("succeeded", "allowed")) == 1
    assert outcomes.count(("refused", "idempotency_key_reused")) == 9


async def test_a_stored_answer_never_reaches_another_principal_whose_names_join_to_the_same_string(
    harness: Harness,
) -> None:
    globex_refund = {"order_id": "ord_5007", "amount": "5.00", "currency": "USD", "reason": "tablet scratched"}
    acme_agent = {"tenant": "acme"}  # agent:refunds, limited to tenant acme: globex's ord_5007 is not found for it
    _refused(await _call(harness, "refunds", "refund_create", globex_refund, **acme_agent), "not_found")
    # another principal, without a tenant, whose subject ends in "|acme"
    _succeeded(await _call(harness, "refunds", "refund_create", _keyed(globex_refund), subject="agent:refunds|acme"))
    leaked = await _call(harness, "refunds", "refund_create", _keyed(globex_refund), **acme_agent)
    assert _replay_meta(leaked) is None
    _refused(leaked, "not_found")


@pytest.mark.skipif(not POSTGRES_URL, reason="the claim's statements interleave only on PostgreSQL")
async def test_a_duplicate_meeting_a_claim_released_mid_way_runs_or_is_told_to_retry(harness: Harness) -> None:
    mandate = harness.mandate
    first = await _claim_as_another_request(harness, REFUND)  # running; about to be denied and released
    assert isinstance(first, idempotency.Claimed)
    url = mandate.settings.effective_database_url.replace("postgresql+psycopg://", "postgresql://")
    released: list[bool] = []

    def release_now(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not released and "FROM idempotency_keys" in statement and "FOR UPDATE" in statement:
            released.append(True)  # the release commits after the duplicate's INSERT saw the row, before its SELECT
            with psycopg.connect(url, autocommit=True) as other:
                other.execute("DELETE FROM idempotency_keys WHERE id = %s", (first.id,))

    event.listen(mandate.db.engine.sync_engine, "before_cursor_execute", release_now)
    try:
        duplicate = await _call(harness, "refunds", "refund_create", _keyed(REFUND))
    finally:
        event.remove(mandate.db.engine.sync_engine, "before_cursor_execute", release_now)
    assert released
    assert not duplicate.is_error or _body(duplicate)["code"] == "idempotency_in_progress"
