"""The MCP protocol surface: a low-level SDK ``Server`` whose tools/list and tools/call go through the Enforcer.

Why the low-level ``Server`` and not ``MCPServer``: Mandate owns the three things ``MCPServer`` would decide for it
— which tools a caller sees (per principal), how arguments are validated (strictly: ``MCPServer`` coerces ``"12"``
to 12), and what a refusal looks like — and ``MCPServer``'s middleware hook is provisional in SDK 2.3. The
low-level handlers are the stable seam (MCP specification 2025-11-25 and 2026-07-28, "Tools").
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server

from server.auth.errors import InvalidToken
from server.auth.principal import Principal
from server.enforcement import CallInfo, Enforcer, refusal_result
from server.outcomes import Refusal
from server.request_context import current_origin, current_principal

logger = logging.getLogger(__name__)

SERVER_NAME = "mandate"
INSTRUCTIONS = (
    "Mandate publishes customer-service tools within the authority your access token grants. A refused call says "
    "why and what would allow it; an action above your limits may wait for human approval and says how to check on "
    'it. Amounts are decimal strings such as "12.50".'
)


class CredentialSource(Protocol):
    """Where the caller of the current request comes from."""

    async def principal(self) -> Principal:
        """The verified caller; raises InvalidToken when there is none."""
        ...


class HttpCredentials:
    """Over HTTP, the bearer middleware has verified the token and set the principal for this request."""

    async def principal(self) -> Principal:
        principal = current_principal.get()
        if principal is None:
            raise InvalidToken("authentication required")
        return principal


def _call_info(ctx: ServerRequestContext[Any, Any]) -> CallInfo:
    origin = current_origin.get()
    name = version = None
    params = ctx.session.client_params
    if params is not None:
        name, version = params.client_info.name, params.client_info.version
    return CallInfo(
        transport=origin.transport if origin else "stdio",
        client_address=origin.client_address if origin else None,
        client_name=name,
        client_version=version,
        request_id=str(ctx.request_id) if ctx.request_id is not None else None,
    )


def build_mcp_server(enforcer: Enforcer, credentials: CredentialSource, version: str) -> Server[Any]:
    async def on_list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        try:
            principal = await credentials.principal()
        except InvalidToken as exc:
            logger.warning("tools/list refused: %s", exc.description)
            await enforcer.record_refusal(None, _call_info(ctx), None, "invalid_token", exc.description, "auth")
            return types.ListToolsResult(tools=[])
        return types.ListToolsResult(tools=await enforcer.list_tools(principal, _call_info(ctx)))

    async def on_call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        try:
            principal = await credentials.principal()
        except InvalidToken as exc:
            logger.warning("tools/call refused: %s", exc.description)
            info = _call_info(ctx)
            audit_id = await enforcer.record_refusal(None, info, params.name, "invalid_token", exc.description, "auth")
            return refusal_result(
                Refusal(
                    status="denied",
                    code="authentication_required",
                    message=f"Authentication required: {exc.description}. No tool runs without a valid token.",
                    audit_id=audit_id,
                )
            )
        return await enforcer.call_tool(principal, params.name, params.arguments, _call_info(ctx))

    return Server(
        SERVER_NAME,
        version=version,
        instructions=INSTRUCTIONS,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )
