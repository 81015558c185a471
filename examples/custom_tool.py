"""A custom scoped tool in a few lines: when will my order arrive?

Serve it beside the built-in tools (no other change needed):

    MANDATE_TOOL_MODULES=tools,examples/custom_tool.py uv run mandate dev

or run this file to see it listed for a token with ``orders:read`` and hidden from one without:

    uv run python examples/custom_tool.py

The tool reads through a statement built once (``Statement``, a SQLAlchemy Core statement) and ``ctx.fetch_one``,
in the call's own transaction: the toolkit's fast path, which the built-in refund uses too. ``ctx.session`` (the
SQLModel ORM) works as well, at some more cost per call (docs/performance.md).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, Field
from sqlalchemy import bindparam, select

from scopes.requirement import all_of
from server.toolkit import NotFound, Statement, StrictArgs, ToolContext, tool
from tools.store.access import ORDERS

TRANSIT_DAYS = {"pending": 5, "processing": 4, "shipped": 2}
ORDER_STATUS = Statement(select(ORDERS.c.status, ORDERS.c.tenant).where(ORDERS.c.id == bindparam("order_id")))


class ShippingEtaArgs(StrictArgs):
    order_id: Annotated[str, Field(pattern=r"^ord_[0-9A-Za-z]{1,36}$")]


class ShippingEta(BaseModel):
    order_id: str
    status: str
    estimated_delivery: str | None = Field(description="ISO date, or null when nothing is on its way")


@tool(requires=all_of("orders:read"), read_only=True)
async def shipping_eta(args: ShippingEtaArgs, ctx: ToolContext) -> ShippingEta:
    """Estimate when an order will be delivered, from its status."""
    row = await ctx.fetch_one(ORDER_STATUS, order_id=args.order_id)
    if row is None or ctx.principal.tenant not in (None, row.tenant):  # another tenant's order is not found
        raise NotFound("order", args.order_id)
    days = TRANSIT_DAYS.get(row.status)
    eta = (ctx.now + timedelta(days=days)).date().isoformat() if days is not None else None
    return ShippingEta(order_id=args.order_id, status=row.status, estimated_delivery=eta)


async def main() -> list[list[str]]:
    """List the tools for two tokens, in process, against a throw-away store; return both lists."""
    import tempfile
    from datetime import UTC, datetime
    from pathlib import Path

    from mcp.client import Client

    from server.app import build_server, open_mandate
    from server.auth.dev_issuer import DevIssuer
    from server.config import Settings
    from server.stdio import EnvironmentCredentials
    from tools.store.seed import seed_demo_store

    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(data_dir=Path(scratch), dev_issuer=True, tool_modules=["tools", __file__])
        mandate = await open_mandate(settings, local_dev_jwks=True)
        try:
            now = datetime.now(UTC)
            await mandate.db.run_in_transaction(lambda session: seed_demo_store(session, now))
            issuer = DevIssuer.load_or_create(settings.data_dir, settings.dev_issuer_url)
            seen: list[list[str]] = []
            for scopes in (["orders:read"], ["customers:read"]):
                token = issuer.mint(subject="demo", client_id="demo", scopes=scopes, audience=settings.audience)
                server = build_server(mandate, EnvironmentCredentials(token, mandate.verifier))
                async with Client(server, mode="legacy") as client:
                    names = [t.name for t in (await client.list_tools()).tools]
                    print(f"{' '.join(scopes):>15}: {', '.join(names)}")
                    if "shipping_eta" in names:
                        result = await client.call_tool("shipping_eta", {"order_id": "ord_5002"})
                        print(f"{'':>15}  shipping_eta(ord_5002) -> {result.structured_content}")
                    seen.append(names)
            return seen
        finally:
            await mandate.aclose()


if __name__ == "__main__":
    import anyio

    anyio.run(main)
