"""Account changes: change a customer's account email, keeping the old value in the change history.

The policy may limit how many changes an agent makes (scopes/policy.toml); ``customer_facts`` gives its rules the
customer, read in the call's transaction (another tenant's customer is not found).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, Field

from scopes.requirement import all_of
from server.toolkit import Facts, NotFound, StrictArgs, ToolContext, ToolError, tool
from tools.compensations import restore_previous_email
from tools.customers import CustomerId, mask_email
from tools.store.access import get_customer
from tools.store.models import AccountChange

Email = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})+$",
        max_length=254,
        description="the new email address",
    ),
]


class AccountEmailChangeArgs(StrictArgs):
    customer_id: CustomerId
    new_email: Email


class AccountEmailChanged(BaseModel):
    change_id: str
    customer_id: str
    email: str = Field(description="the new address, masked")


class CustomerFacts(Facts):
    """What the policy may know about the customer a call acts on (``facts.<field>``)."""

    customer_id: str
    tenant: str

    def not_found(self) -> NotFound:
        return NotFound("customer", self.customer_id)


async def customer_facts(args: AccountEmailChangeArgs, ctx: ToolContext) -> CustomerFacts:
    customer = await get_customer(ctx, args.customer_id)
    return CustomerFacts(customer_id=customer.id, tenant=customer.tenant)


@tool(
    requires=all_of("accounts:write"),
    idempotent=True,
    sensitive=("new_email",),
    facts=customer_facts,
    compensation=restore_previous_email,
)
async def account_email_change(args: AccountEmailChangeArgs, ctx: ToolContext) -> AccountEmailChanged:
    """Change the email address on a customer's account."""
    customer = await get_customer(ctx, args.customer_id)
    if customer.email.lower() == args.new_email.lower():
        raise ToolError("no_change", f"The account already uses that email address ({mask_email(customer.email)}).")
    change = AccountChange(
        id=f"acc_{uuid.uuid4().hex[:20]}",
        customer_id=customer.id,
        field_name="email",
        old_value=customer.email,
        new_value=args.new_email,
        created_at=ctx.now,
        created_by=ctx.principal.key,
        audit_id=ctx.audit_id,
    )
    customer.email = args.new_email
    ctx.session.add(customer)
    ctx.session.add(change)
    await ctx.session.flush()
    return AccountEmailChanged(change_id=change.id, customer_id=customer.id, email=mask_email(args.new_email))
