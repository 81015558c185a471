"""The policy on the real call path: denials and approvals as tool results, the ledger committed with the effect,
the decision in every audit record, tenancy and ownership refusals that look exactly like "not found"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import col, func, select

from server.audit.models import AuditRecord
from server.ledger import LedgerBucket, LedgerEntry
from tests.conftest import Harness
from tests.policy.conftest import PolicyHarness
from tests.policy.support import add_orders
from tools.store.models import EmailChangeRequest, Order, OrderStatus, Refund

pytestmark = pytest.mark.anyio


def _refund(order_id: str, amount: str, currency: str = "EUR") -> dict[str, str]:
    return {"order_id": order_id, "amount": amount, "currency": currency, "reason": "arrived damaged"}


async def _record(harness: Harness, audit_id: str) -> AuditRecord:
    async with harness.mandate.db.session() as session:
        return (await session.exec(select(AuditRecord).where(AuditRecord.id == audit_id))).one()


async def _count(harness: Harness, model: Any) -> int:
    async with harness.mandate.db.session() as session:
        return int((await session.exec(select(func.count()).select_from(model))).one())


async def test_a_refund_above_the_per_call_cap_waits_for_a_human_and_nothing_is_refunded(harness: Harness) -> None:
    async with harness.client("refunds") as client:
        result = await client.call_tool("refund_create", _refund("ord_5002", "150.00"))
    assert not result.is_error, result.content
    pending = result.structured_content
    assert pending is not None and pending["status"] == "pending_approval"
    assert pending["approval_id"].startswith("apr_") and pending["rule"] == "refund-per-call-cap"
    assert "needs a human's approval" in pending["message"] and "150.00 EUR" in pending["message"]
    assert pending["check_with"] == f'call approval_status with {{"approval_id": "{pending["approval_id"]}"}}'
    assert datetime.fromisoformat(pending["expires_at"]) > datetime.now(UTC) + timedelta(hours=23)
    record = await _record(harness, pending["audit_id"])
    assert (record.decision, record.outcome) == ("approval", "pending_approval")
    assert record.approval_id == pending["approval_id"]
    assert (record.rule_id, record.reason_code) == ("refund-per-call-cap", "cap_exceeded")
    assert record.policy_version is not None and record.policy_version.startswith("2025.06.1+")
    assert await _count(harness, Refund) == 0
    assert await _count(harness, LedgerEntry) == 0


async def test_a_denial_is_an_error_result_naming_its_rule_policy_version_and_what_would_allow_it(
    harness: Harness,
) -> None:
    limited = {"authorization_details": [{"type": "refund", "max_amount": {"value": "50.00", "currency": "EUR"}}]}
    async with harness.client("refunds", extra_claims=limited) as client:
        denied = await client.call_tool("refund_create", _refund("ord_5001", "50.01"))
        allowed = await client.call_tool("refund_create", _refund("ord_5001", "50.00"))
    assert denied.is_error and not allowed.is_error
    body = denied.structured_content
    assert body is not None
    assert (body["status"], body["code"], body["rule"]) == ("denied", "token_limit_exceeded", "refund-per-call-cap")
    assert body["would_allow"] == ["amounts up to 50.00 EUR per call"]
    record = await _record(harness, body["audit_id"])
    assert (record.decision, record.outcome, record.reason_code) == ("deny", "refused", "token_limit_exceeded")
    assert record.policy_version == body["policy_version"]
    assert await _count(harness, Refund) == 1


async def test_an_allowed_call_records_its_policy_version_spends_and_shadow_rules(harness: Harness) -> None:
    async with harness.client("refunds") as client:
        result = await client.call_tool("refund_create", _refund("ord_5001", "60.00"))
    assert not result.is_error, result.content
    async with harness.mandate.db.session() as session:
        refund = (await session.exec(select(Refund))).one()
        entries = (await session.exec(select(LedgerEntry).order_by(col(LedgerEntry.budget)))).all()
    record = await _record(harness, refund.audit_id)
    assert (record.decision, record.reason_code, record.rule_id) == ("allow", "allowed", None)
    assert record.policy_version is not None and "440.00 EUR left today" in (record.reason or "")
    assert '"shadow":[{"code":"cap_exceeded","rule":"refund-per-call-cap-trial-50","would":"deny"}]' in (
        record.result_summary
    )
    assert [(e.budget, e.amount, e.unit, e.audit_id) for e in entries] == [
        ("agent_refunds_daily", 6000, "EUR", record.id),
        ("customer_refunds_30d", 6000, "EUR", record.id),
    ]


DAILY_100 = """
    version = "daily-100"
    timezone = "Europe/Amsterdam"
    [budgets.agent_refunds_daily]
    per = "principal"
    window = "day"
    limit = { EUR = "100.00", USD = "100.00" }
    [[rules]]
    id = "refund-agent-daily"
    kind = "budget"
    tools = ["refund_create"]
    budget = "agent_refunds_daily"
    amount = "args.amount"
"""


async def test_the_daily_budget_adds_up_across_calls_and_refuses_the_call_that_would_cross_it(
    policy_harness: PolicyHarness,
) -> None:
    harness = await policy_harness(DAILY_100)
    async with harness.client("refunds") as client:
        first = await client.call_tool("refund_create", _refund("ord_5001", "40.00"))
        second = await client.call_tool("refund_create", _refund("ord_5002", "40.00"))
        over = await client.call_tool("refund_create", _refund("ord_5003", "20.01"))
        dollars = await client.call_tool("refund_create", _refund("ord_5004", "70.00", "USD"))
        exact = await client.call_tool("refund_create", _refund("ord_5003", "20.00"))
    assert not first.is_error and not second.is_error and not dollars.is_error and not exact.is_error
    assert over.is_error and over.structured_content is not None
    assert over.structured_content["code"] == "budget_exceeded"
    assert over.structured_content["would_allow"][0].startswith("20.00 EUR left today")
    async with harness.mandate.db.session() as session:
        buckets = {b.unit: b.spent for b in (await session.exec(select(LedgerBucket))).all()}
        refunded = (await session.exec(select(func.sum(Refund.amount_minor)).where(Refund.currency == "EUR"))).one()
    assert buckets == {"EUR": 10000, "USD": 7000}
    assert refunded == 10000


async def test_three_cancellations_a_day_and_the_day_ends_at_midnight_in_amsterdam(harness: Harness) -> None:
    late_evening = datetime(2025, 6, 2, 21, 59, 30, tzinfo=UTC)  # 23:59:30 in Amsterdam
    async with harness.mandate.db.session() as session, session.begin():
        orders = await add_orders(session, 5, prefix="c", placed_at=late_evening - timedelta(hours=1))
    enforcer = harness.mandate.enforcer
    enforcer.clock = lambda: late_evening
    async with harness.client("senior") as client:
        results = [await client.call_tool("order_cancel", {"order_id": o, "reason": "duplicate"}) for o in orders[:4]]
        enforcer.clock = lambda: late_evening + timedelta(seconds=31)  # 00:00:01 the next day in Amsterdam
        next_day = await client.call_tool("order_cancel", {"order_id": orders[3], "reason": "duplicate"})
    assert [r.is_error for r in results] == [False, False, False, True]
    fourth = results[3].structured_content
    assert fourth is not None and fourth["code"] == "budget_exceeded"
    assert fourth["would_allow"] == ["none left today (resets at midnight Europe/Amsterdam, 2025-06-03T00:00:00+02:00)"]
    assert not next_day.is_error, next_day.content
    async with harness.mandate.db.session() as session:
        periods = {b.period: b.spent for b in (await session.exec(select(LedgerBucket))).all()}
    assert periods == {"2025-06-02": 3, "2025-06-03": 1}


async def test_a_cancellation_outside_48_hours_is_refused_and_the_order_stays_open(harness: Harness) -> None:
    now = datetime.now(UTC)
    async with harness.mandate.db.session() as session, session.begin():
        (old,) = await add_orders(session, 1, prefix="o", placed_at=now - timedelta(hours=48, seconds=5))
    async with harness.client("senior") as client:
        result = await client.call_tool("order_cancel", {"order_id": old, "reason": "duplicate"})
    assert result.is_error and result.structured_content is not None
    assert (result.structured_content["code"], result.structured_content["rule"]) == (
        "cancel_window_passed",
        "order-cancel-within-48h",
    )
    async with harness.mandate.db.session() as session:
        order = await session.get(Order, old)
    assert order is not None and order.status == OrderStatus.PENDING


async def test_at_most_five_email_changes_a_day(harness: Harness) -> None:
    async with harness.client("senior") as client:
        results = [
            await client.call_tool(
                "account_email_change", {"customer_id": "cus_1003", "new_email": f"a{i}@example.org"}
            )
            for i in range(6)
        ]
    assert [r.is_error for r in results] == [False] * 5 + [True]
    assert results[5].structured_content is not None and results[5].structured_content["code"] == "budget_exceeded"
    assert await _count(harness, EmailChangeRequest) == 5  # five changes asked for (each pending its code)


BROKEN_RULE = """
    version = "broken"
    [[rules]]
    id = "status-ranked"
    kind = "require"
    tools = ["order_cancel"]
    require = [{ path = "facts.status", lt = 3 }]
    code = "never"
    message = "never"
"""


async def test_a_rule_that_cannot_be_evaluated_denies_and_is_recorded_as_an_error(
    policy_harness: PolicyHarness,
) -> None:
    harness = await policy_harness(BROKEN_RULE)
    async with harness.client("senior") as client:
        result = await client.call_tool("order_cancel", {"order_id": "ord_5001", "reason": "duplicate"})
    assert result.is_error and result.structured_content is not None
    body = result.structured_content
    assert (body["status"], body["code"], body["rule"]) == ("denied", "policy_error", "status-ranked")
    assert "cannot order" not in body["message"]
    record = await _record(harness, body["audit_id"])
    assert (record.decision, record.outcome, record.reason_code) == ("error", "refused", "policy_error")
    assert "facts.status: cannot order text against number" in (record.reason or "")
    async with harness.mandate.db.session() as session:
        order = await session.get(Order, "ord_5001")
    assert order is not None and order.status == OrderStatus.PENDING


OWNERSHIP = """
    version = "ownership"
    [[rules]]
    id = "own-org-only"
    kind = "require"
    tools = ["order_cancel"]
    require = [{ path = "facts.tenant", eq = { path = "principal.claims.org" } }]
    code = "foreign_order"
    message = "This order belongs to another organisation."
    otherwise = "not_found"
"""


def _without_ids(body: dict[str, Any] | None, identifier: str) -> dict[str, Any]:
    assert body is not None
    return {k: (v.replace(identifier, "X") if isinstance(v, str) else v) for k, v in body.items() if k != "audit_id"}


async def test_an_ownership_rule_refuses_exactly_as_a_missing_order_does(policy_harness: PolicyHarness) -> None:
    harness = await policy_harness(OWNERSHIP)
    async with harness.client("senior", extra_claims={"org": "globex"}) as client:
        foreign = await client.call_tool("order_cancel", {"order_id": "ord_5001", "reason": "duplicate"})
        missing = await client.call_tool("order_cancel", {"order_id": "ord_9999", "reason": "duplicate"})
        own = await client.call_tool("order_cancel", {"order_id": "ord_5008", "reason": "duplicate"})
    assert foreign.is_error and missing.is_error and not own.is_error
    assert _without_ids(foreign.structured_content, "ord_5001") == _without_ids(missing.structured_content, "ord_9999")
    assert foreign.content[0].model_dump()["text"].replace("ord_5001", "X") == missing.content[0].model_dump()[
        "text"
    ].replace("ord_9999", "X")
    assert foreign.structured_content is not None
    record = await _record(harness, foreign.structured_content["audit_id"])
    assert (record.decision, record.rule_id, record.reason_code) == ("deny", "own-org-only", "foreign_order")


@pytest.mark.parametrize(
    ("tool", "foreign", "missing"),
    [
        ("refund_create", _refund("ord_5008", "1.00"), _refund("ord_9999", "1.00")),
        ("order_cancel", {"order_id": "ord_5008", "reason": "duplicate"}, {"order_id": "ord_9999", "reason": "dup"}),
        (
            "account_email_change",
            {"customer_id": "cus_1004", "new_email": "x@example.org"},
            {"customer_id": "cus_9999", "new_email": "x@example.org"},
        ),
    ],
)
async def test_another_tenants_record_looks_exactly_like_a_missing_one_on_policy_tools(
    harness: Harness, tool: str, foreign: dict[str, str], missing: dict[str, str]
) -> None:
    key = "order_id" if "order_id" in foreign else "customer_id"
    async with harness.client("senior", tenant="acme") as client:
        theirs = await client.call_tool(tool, foreign)
        nobodys = await client.call_tool(tool, missing)
    assert theirs.is_error and nobodys.is_error
    assert _without_ids(theirs.structured_content, foreign[key]) == _without_ids(
        nobodys.structured_content, missing[key]
    )


SHARED = """
    version = "shared"
    timezone = "Europe/Amsterdam"
    [budgets.refunds_daily]
    label = "refunds and credits by this agent today"
    per = "principal"
    window = "day"
    limit = { EUR = "100.00" }
    [[rules]]
    id = "refunds-daily"
    kind = "budget"
    tools = ["refund_create", "goodwill_credit"]
    budget = "refunds_daily"
    amount = "args.amount"
"""


def _credit(amount: str, **extra: Any) -> dict[str, Any]:
    return {"customer_id": "cus_1001", "amount": amount, "currency": "EUR", **extra}


async def test_two_tools_spending_from_one_budget_share_its_cap(policy_harness: PolicyHarness) -> None:
    harness = await policy_harness(SHARED, tool_modules=("tests.policy.goodwill_tool",))
    async with harness.client("refunds") as client:
        refund = await client.call_tool("refund_create", _refund("ord_5001", "60.00"))
        credit = await client.call_tool("goodwill_credit", _credit("40.00"))
        credit_over = await client.call_tool("goodwill_credit", _credit("0.01"))
        refund_over = await client.call_tool("refund_create", _refund("ord_5001", "0.01"))
    assert not refund.is_error and not credit.is_error, (refund.content, credit.content)
    assert credit_over.is_error and refund_over.is_error
    for over in (credit_over, refund_over):
        assert over.structured_content is not None and over.structured_content["rule"] == "refunds-daily"
        assert "refunds and credits by this agent today" in over.structured_content["message"]
    async with harness.mandate.db.session() as session:
        (bucket,) = (await session.exec(select(LedgerBucket))).all()
        tools = sorted(e.tool for e in (await session.exec(select(LedgerEntry))).all())
    assert bucket.spent == 10000
    assert tools == ["goodwill_credit", "refund_create"]


async def test_an_effect_that_fails_spends_nothing_from_the_budget(policy_harness: PolicyHarness) -> None:
    harness = await policy_harness(SHARED, tool_modules=("tests.policy.goodwill_tool",))
    async with harness.client("refunds") as client:
        failed = await client.call_tool("goodwill_credit", _credit("90.00", fail_after_spending=True))
        after = await client.call_tool("refund_create", _refund("ord_5001", "100.00"))
    assert failed.is_error and failed.structured_content is not None
    assert failed.structured_content["code"] == "credit_system_down"
    assert not after.is_error, after.content
    async with harness.mandate.db.session() as session:
        entries = (await session.exec(select(LedgerEntry))).all()
    assert [(e.tool, e.amount) for e in entries] == [("refund_create", 10000)]


async def test_explain_gives_the_decision_a_call_gets_and_changes_nothing(harness: Harness) -> None:
    principal = await harness.mandate.verifier.verify(harness.token("refunds"))
    before = (await _count(harness, AuditRecord), await _count(harness, LedgerBucket))
    explanation = await harness.mandate.enforcer.explain(principal, "refund_create", _refund("ord_5001", "150.00"))
    assert explanation.gate is not None
    decision = explanation.gate.decision
    assert (decision.effect, decision.rule_id) == ("approval", "refund-per-call-cap")
    assert (await _count(harness, AuditRecord), await _count(harness, LedgerBucket)) == before
    async with harness.client("refunds") as client:
        real = await client.call_tool("refund_create", _refund("ord_5001", "150.00"))
    assert real.structured_content is not None and real.structured_content["status"] == "pending_approval"
    refused = await harness.mandate.enforcer.explain(principal, "refund_create", _refund("ord_9999", "1.00"))
    assert refused.refusal is not None and refused.refusal.code == "not_found"


READ_APPROVAL = """
    version = "read-approval"
    [[rules]]
    id = "reads-need-a-tenant"
    kind = "require"
    tools = ["order_get"]
    require = [{ path = "principal.tenant", present = true }]
    code = "no_tenant"
    message = "Reading orders needs a token bound to a tenant."
    otherwise = "approval"
"""


async def test_a_read_only_tool_cannot_wait_for_approval_so_it_is_refused(policy_harness: PolicyHarness) -> None:
    harness = await policy_harness(READ_APPROVAL)
    async with harness.client("support") as client:
        unbound = await client.call_tool("order_get", {"order_id": "ord_5001"})
    async with harness.client("support", tenant="acme") as client:
        bound = await client.call_tool("order_get", {"order_id": "ord_5001"})
    assert unbound.is_error and unbound.structured_content is not None
    assert (unbound.structured_content["status"], unbound.structured_content["code"]) == ("denied", "no_tenant")
    assert "cannot wait for approval" in unbound.structured_content["message"]
    assert not bound.is_error
