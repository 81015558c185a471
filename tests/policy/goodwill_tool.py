"""A second tool that spends from the refunds budget, for the tests of a cap shared by two tools.

``fail_after_spending`` makes it fail after the ledger reservation, to show the reservation rolls back with it.
"""

from __future__ import annotations

import uuid

from pydantic import BaseModel

from scopes.requirement import all_of
from server.toolkit import Facts, NotFound, StrictArgs, ToolContext, ToolError, tool
from tools.customers import CustomerId
from tools.refunds import Amount, Currency
from tools.store.access import get_customer


class GoodwillArgs(StrictArgs):
    customer_id: CustomerId
    amount: Amount
    currency: Currency
    fail_after_spending: bool = False


class GoodwillCredit(BaseModel):
    credit_id: str
    customer_id: str
    amount: str
    currency: str


class GoodwillFacts(Facts):
    customer_id: str
    tenant: str

    def not_found(self) -> NotFound:
        return NotFound("customer", self.customer_id)


async def goodwill_facts(args: GoodwillArgs, ctx: ToolContext) -> GoodwillFacts:
    customer = await get_customer(ctx, args.customer_id)
    return GoodwillFacts(customer_id=customer.id, tenant=customer.tenant)


@tool(requires=all_of("refunds:create"), facts=goodwill_facts, money={"amount": "currency"})
async def goodwill_credit(args: GoodwillArgs, ctx: ToolContext) -> GoodwillCredit:
    """Give a customer a goodwill credit; it counts against the same daily budget as refunds."""
    if args.fail_after_spending:
        raise ToolError("credit_system_down", "The credit system did not answer; nothing was credited.")
    return GoodwillCredit(
        credit_id=f"gw_{uuid.uuid4().hex[:12]}",
        customer_id=args.customer_id,
        amount=args.amount,
        currency=args.currency,
    )
