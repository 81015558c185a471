"""Account changes: a customer's account email changes only once the new address is confirmed.

``account_email_change`` does not change the address: it records a pending request, mails an 8-digit code to the new
address (proving the customer controls it) and tells the old address that a change was asked for.
``account_email_confirm`` takes the code the customer reads back; the right code within its lifetime changes the
address (kept in the change history, the old address told again), a wrong one counts an attempt, and after the
configured number of wrong codes the request is locked. The code is stored only as an scrypt hash (RFC 7914), is a
sensitive argument (never in audit records or results) and is never logged (server/mail).

Addresses are plain ASCII (RFC 5321 mailbox syntax, no quoted or internationalised forms): a lookalike letter from
another script or an invisible character (zero-width space, bidi control) is refused before anything happens.

The policy may limit how many changes an agent asks for (scopes/policy.toml); ``customer_facts`` gives its rules
the customer, read in the call's transaction (another tenant's customer is not found).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, Field
from sqlmodel import col, select

from scopes.requirement import all_of
from server.toolkit import Facts, MailUnavailable, NotFound, OutgoingMail, StrictArgs, ToolContext, ToolError, tool
from tools.compensations import restore_previous_email
from tools.customers import CustomerId, mask_email
from tools.store.access import get_customer
from tools.store.models import AccountChange, Customer, EmailChangeRequest

CODE_DIGITS = 8
DEFAULT_CODE_TTL = timedelta(minutes=15)
DEFAULT_ATTEMPTS = 5

Email = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})+$",
        max_length=254,
        description="the new email address",
    ),
]
RequestId = Annotated[str, Field(pattern=r"^ecr_[0-9a-f]{20}$", description="the id account_email_change returned")]
Code = Annotated[str, Field(pattern=rf"^[0-9]{{{CODE_DIGITS}}}$", description="the code mailed to the new address")]


class AccountEmailChangeArgs(StrictArgs):
    customer_id: CustomerId
    new_email: Email


class AccountEmailChangeRequested(BaseModel):
    request_id: str = Field(description="pass it with the code to account_email_confirm")
    customer_id: str
    status: Literal["pending_confirmation"] = "pending_confirmation"
    email: str = Field(description="the new address, masked")
    expires_at: datetime
    message: str


class AccountEmailConfirmArgs(StrictArgs):
    request_id: RequestId
    code: Code


class AccountEmailConfirmation(BaseModel):
    request_id: str
    customer_id: str
    status: Literal["confirmed", "wrong_code", "locked"]
    change_id: str | None = None
    email: str = Field(description="the new address, masked")
    attempts_left: int
    message: str


class CustomerFacts(Facts):
    """What the policy may know about the customer a call acts on (``facts.<field>``)."""

    customer_id: str
    tenant: str

    def not_found(self) -> NotFound:
        return NotFound("customer", self.customer_id)


async def customer_facts(args: AccountEmailChangeArgs, ctx: ToolContext) -> CustomerFacts:
    customer = await get_customer(ctx, args.customer_id)
    return CustomerFacts(customer_id=customer.id, tenant=customer.tenant)


def code_hash(request_id: str, code: str) -> str:
    return hashlib.scrypt(code.encode(), salt=request_id.encode(), n=2**14, r=8, p=1, dklen=32).hex()


async def _send(ctx: ToolContext, *mails: OutgoingMail) -> None:
    if ctx.mail is None or not ctx.mail.configured:
        raise ToolError(
            "mail_unavailable",
            "An email change must be confirmed from the new address, and no mail sender is configured; nothing was "
            "changed.",
        )
    try:
        for mail in mails:
            await ctx.mail.send(mail)
    except MailUnavailable:
        raise ToolError(
            "mail_unavailable", "The confirmation email could not be sent, so nothing was changed. Try again later."
        ) from None


def _limits(ctx: ToolContext) -> tuple[timedelta, int]:
    if ctx.mail is None:
        return DEFAULT_CODE_TTL, DEFAULT_ATTEMPTS
    return timedelta(seconds=ctx.mail.settings.code_ttl_seconds), ctx.mail.settings.code_attempts


@tool(requires=all_of("accounts:write"), idempotent=True, sensitive=("new_email",), facts=customer_facts)
async def account_email_change(args: AccountEmailChangeArgs, ctx: ToolContext) -> AccountEmailChangeRequested:
    """Ask to change the email address on a customer's account: a code is mailed to the new address, and the
    change happens only when account_email_confirm is called with it."""
    customer = await get_customer(ctx, args.customer_id)
    if customer.email.lower() == args.new_email.lower():
        raise ToolError("no_change", f"The account already uses that email address ({mask_email(customer.email)}).")
    ttl, _ = _limits(ctx)
    earlier = await ctx.session.exec(
        select(EmailChangeRequest).where(
            EmailChangeRequest.customer_id == customer.id, col(EmailChangeRequest.status) == "pending"
        )
    )
    for pending in earlier:
        pending.status, pending.decided_at = "superseded", ctx.now
        ctx.session.add(pending)
    request_id = f"ecr_{uuid.uuid4().hex[:20]}"
    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    request = EmailChangeRequest(
        id=request_id,
        customer_id=customer.id,
        tenant=customer.tenant,
        new_email=args.new_email,
        code_hash=code_hash(request_id, code),
        status="pending",
        created_at=ctx.now,
        expires_at=ctx.now + ttl,
        created_by=ctx.principal.key,
        audit_id=ctx.audit_id,
    )
    ctx.session.add(request)
    await ctx.session.flush()
    minutes = int(ttl.total_seconds() // 60)
    await _send(
        ctx,
        OutgoingMail(
            to=args.new_email,
            subject="Confirm your new email address",
            body=f"Hello {customer.name},\n\nYour confirmation code is {code}. Give it to the support agent to make "
            f"this address the one on your account. It is valid for {minutes} minutes.\n\nIf you did not ask for "
            "this, ignore this message: nothing changes without the code.\n",
        ),
        OutgoingMail(
            to=customer.email,
            subject="A change of the email address on your account was requested",
            body=f"Hello {customer.name},\n\nSomeone asked to change the email address on your account to "
            f"{mask_email(args.new_email)}. It changes only if the code sent to that address is confirmed.\n\n"
            "If this was not you, contact us: your current address stays in place.\n",
        ),
    )
    return AccountEmailChangeRequested(
        request_id=request_id,
        customer_id=customer.id,
        email=mask_email(args.new_email),
        expires_at=request.expires_at,
        message=f"A code was sent to {mask_email(args.new_email)}; the address changes once the customer reads "
        "it back and account_email_confirm is called with it.",
    )


@tool(
    requires=all_of("accounts:write"),
    idempotent=True,
    sensitive=("code",),
    compensation=restore_previous_email,  # the change happens here, so it is undone from here (mandate remediate)
)
async def account_email_confirm(args: AccountEmailConfirmArgs, ctx: ToolContext) -> AccountEmailConfirmation:
    """Confirm a requested email change with the code the customer received at the new address."""
    query = select(EmailChangeRequest).where(EmailChangeRequest.id == args.request_id).with_for_update()
    request = (await ctx.session.exec(query)).first()
    if request is None or (ctx.principal.tenant is not None and ctx.principal.tenant != request.tenant):
        raise NotFound("email change request", args.request_id)
    ctx.customer_id = request.customer_id
    _, attempts = _limits(ctx)
    if request.status != "pending":
        raise ToolError(
            f"request_{request.status}",
            f"This email change request is {request.status}; nothing was changed. Ask for a new code with "
            "account_email_change if the customer still wants the change.",
        )
    if ctx.now >= request.expires_at:
        raise ToolError("request_expired", "The code has expired; nothing was changed. Ask for a new one.")
    masked = mask_email(request.new_email)
    if not hmac.compare_digest(code_hash(request.id, args.code), request.code_hash):
        request.attempts += 1
        left = max(attempts - request.attempts, 0)
        if left == 0:
            request.status, request.decided_at = "locked", ctx.now
        ctx.session.add(request)
        message = "The code is not right; nothing was changed. " + (
            f"{left} attempts left." if left else "The request is now locked: ask for a new code."
        )
        status: Literal["wrong_code", "locked"] = "wrong_code" if left else "locked"
        return AccountEmailConfirmation(
            request_id=request.id,
            customer_id=request.customer_id,
            status=status,
            email=masked,
            attempts_left=left,
            message=message,
        )
    customer = await ctx.session.get(Customer, request.customer_id)
    if customer is None:
        raise NotFound("customer", request.customer_id)
    change = AccountChange(
        id=f"acc_{uuid.uuid4().hex[:20]}",
        customer_id=customer.id,
        field_name="email",
        old_value=customer.email,
        new_value=request.new_email,
        created_at=ctx.now,
        created_by=ctx.principal.key,
        audit_id=ctx.audit_id,
    )
    old_email = customer.email
    customer.email = request.new_email
    request.status, request.decided_at, request.change_id = "confirmed", ctx.now, change.id
    ctx.session.add_all([customer, change, request])
    await ctx.session.flush()
    await _send(
        ctx,
        OutgoingMail(
            to=old_email,
            subject="The email address on your account was changed",
            body=f"Hello {customer.name},\n\nThe email address on your account is now {masked}; this address "
            "no longer receives account messages. If this was not you, contact us at once.\n",
        ),
    )
    return AccountEmailConfirmation(
        request_id=request.id,
        customer_id=customer.id,
        status="confirmed",
        change_id=change.id,
        email=masked,
        attempts_left=max(attempts - request.attempts, 0),
        message=f"The account's email address is now {masked}.",
    )
