"""Customer look-up: a customer's profile, with email and phone masked unless the caller holds ``customers:pii``."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field
from sqlmodel import select

from scopes.requirement import all_of
from server.toolkit import StrictArgs, ToolContext, ToolError, tool
from tools.store.access import get_customer
from tools.store.models import Customer

CustomerId = Annotated[str, Field(pattern=r"^cus_[0-9A-Za-z]{1,36}$", description="a customer id such as cus_1001")]


class CustomerLookupArgs(StrictArgs):
    customer_id: CustomerId | None = None
    email: Annotated[str, Field(max_length=320, description="the customer's exact email address")] | None = None


class CustomerPublic(BaseModel):
    id: str
    name: str
    email: str
    phone: str
    pii_masked: bool
    member_since: str


def mask_email(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def mask_phone(phone: str) -> str:
    digits = [ch for ch in phone if ch.isdigit()]
    return f"***{''.join(digits[-2:])}" if digits else "***"


@tool(requires=all_of("customers:read"), read_only=True, sensitive=("email",))
async def customer_lookup(args: CustomerLookupArgs, ctx: ToolContext) -> CustomerPublic:
    """Look up one customer by id or by exact email. Email and phone are masked unless you may see personal data."""
    if (args.customer_id is None) == (args.email is None):
        raise ToolError("invalid_arguments", "Give exactly one of customer_id or email.")
    if args.customer_id is not None:
        customer = await get_customer(ctx, args.customer_id)
    else:
        query = select(Customer).where(Customer.email == args.email)
        if ctx.principal.tenant is not None:  # only the caller's tenant: another tenant's customers do not exist here
            query = query.where(Customer.tenant == ctx.principal.tenant)
        found = (await ctx.session.exec(query.limit(2))).all()
        if not found:
            raise ToolError("not_found", "No customer with that email address was found.")
        if len(found) > 1:
            raise ToolError(
                "ambiguous_email",
                "More than one customer has that email address; look the customer up by id instead.",
            )
        customer = await get_customer(ctx, found[0].id)
    show_pii = ctx.principal.has_scope("customers:pii")
    return CustomerPublic(
        id=customer.id,
        name=customer.name,
        email=customer.email if show_pii else mask_email(customer.email),
        phone=customer.phone if show_pii else mask_phone(customer.phone),
        pii_masked=not show_pii,
        member_since=customer.created_at.date().isoformat(),
    )
