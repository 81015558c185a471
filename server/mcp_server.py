"""The MCP protocol surface: a low-level SDK ``Server`` whose tools/list and tools/call go through the Enforcer.

Why the low-level ``Server`` and not ``MCPServer``: Mandate owns the three things ``MCPServer`` would decide for it
— which tools a caller sees (per principal), how arguments are validated (strictly: ``MCPServer`` coerces ``"12"``
to 12), and what a refusal looks like — and ``MCPServer``'s middleware hook is provisional in SDK 2.3. The
low-level handlers are the stable seam (MCP specification 2025-11-25 and 2026-07-28, "Tools").
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, cast

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import X_MCP_HEADER_KEY

from server.auth.errors import InvalidToken
from server.auth.principal import Principal
from server.callpath.answers import Refusal
from server.callpath.enforcer import Enforcer
from server.callpath.record import CallInfo, refusal_result
from server.catalog import ToolCatalog
from server.display import escape_text
from server.observability.tracing import continued_from_meta
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
    name, version = (origin.client_name, origin.client_version) if origin else (None, None)
    params = ctx.session.client_params
    if params is not None:  # a stateful session's initialize, or a 2026-07-28 request's own _meta
        name, version = params.client_info.name, params.client_info.version
    return CallInfo(
        transport=origin.transport if origin else "stdio",
        client_address=origin.client_address if origin else None,
        client_name=name,
        client_version=version,
        origin=origin.origin if origin else None,
        user_agent=origin.user_agent if origin else None,
        request_id=str(ctx.request_id) if ctx.request_id is not None else None,
    )


def _connection(ctx: ServerRequestContext[Any, Any]) -> Any:
    """The live connection of a request: SDK 2.3 builds a ``ServerSession`` per request over the connection, whose
    ``send_tool_list_changed`` sends on the standalone channel (best effort, never raising). The SDK has no public
    accessor for it yet, hence the private attribute, with the session itself as the fallback."""
    return getattr(ctx.session, "_connection", ctx.session)


_EMPTY_LISTING = types.ListToolsResult(tools=[]).model_dump(by_alias=True, mode="json", exclude_none=True)
"""What the model itself would dump besides the tools (the result type and the cache fields' defaults)."""


def listing_result(catalog: ToolCatalog, tools: list[types.Tool]) -> dict[str, Any]:
    """A tools/list result in its wire form, from the definitions' forms dumped once with the catalog.

    A tools/list result goes through several full passes over every definition in the SDK (the handler's model is
    dumped, validated against the protocol version's schema and dumped again, then wrapped and encoded); with
    1,000 tools that is megabytes each time. The handler returns the mapping the first pass would have made, which
    the SDK accepts as a result as it is (``mcp.server.runner._dump_result``): the same bytes on the wire, one pass
    fewer. The forms were built at start-up and frozen with the start-up heap, so no garbage collection walks
    them (a memo filled by the first listing would be walked by every full collection after it).
    """
    return {**_EMPTY_LISTING, "tools": catalog.wire_forms(tools)}


NO_HEADERS: dict[str, Any] = {"type": "object"}
"""What the SDK's ``Mcp-Param-*`` check is given for a tool whose input schema declares no header: the check walks
the schema it is given twice on every call (about 11 us for ``refund_create``'s), and finds nothing to check in a
schema without an ``x-mcp-header`` annotation, exactly as in this one."""


def header_schema(input_schema: dict[str, Any]) -> dict[str, Any]:
    """The schema the SDK checks a call's ``Mcp-Param-*`` headers against: the tool's own when any of it may declare
    a header (an ``x-mcp-header`` key anywhere, a property of that name included), else :data:`NO_HEADERS`."""
    return input_schema if _mentions(input_schema, X_MCP_HEADER_KEY) else NO_HEADERS


def _mentions(value: Any, key: str) -> bool:
    if isinstance(value, dict):
        return key in value or any(_mentions(item, key) for item in value.values())
    if isinstance(value, list):
        return any(_mentions(item, key) for item in value)
    return False


class MandateServer(Server[Any]):
    """The SDK server, advertising ``tools.listChanged``: a suspension changes a caller's tool list, and live
    sessions are told (:mod:`server.guards.suspension`)."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        options = notification_options or NotificationOptions(tools_changed=True)
        return super().create_initialization_options(options, experimental_capabilities, extensions)


def build_mcp_server(
    enforcer: Enforcer, credentials: CredentialSource, version: str, *, console_url: str | None = None
) -> Server[Any]:
    """``console_url``: offer clients that can take it a URL elicitation to the approval's console page
    (:mod:`server.console.elicitation`)."""
    catalog = enforcer.catalog

    async def on_list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        try:
            principal = await credentials.principal()
        except InvalidToken as exc:
            logger.warning("tools/list refused: %s", exc.description)
            await enforcer.record_refusal(None, _call_info(ctx), None, "invalid_token", exc.description, "auth")
            return types.ListToolsResult(tools=[])
        tools = await enforcer.list_tools(principal, _call_info(ctx))
        if enforcer.guards is not None:  # told with tools/list_changed when its suspension state changes
            await enforcer.guards.suspensions.watch_now(_connection(ctx), principal)
        # The SDK validates the mapping against the protocol version's ListToolsResult like any other result.
        return cast(types.ListToolsResult, listing_result(catalog, tools))

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
        if enforcer.catalog.get(params.name) is None:
            # MCP 2025-11-25 "Tools", error handling: an unknown tool is a protocol error (-32602), not a tool
            # result. The attempt is recorded like any refusal; nothing ran.
            message = f"Unknown tool: {escape_text(params.name)[:100]}"
            await enforcer.record_refusal(principal, _call_info(ctx), params.name, "unknown_tool", message, "call")
            raise MCPError(code=types.INVALID_PARAMS, message=message)
        if enforcer.guards is not None:
            await enforcer.guards.suspensions.watch_now(_connection(ctx), principal)
        info = _call_info(ctx)
        with continued_from_meta(params.meta):  # the client's trace context in _meta, when no traceparent header
            if console_url is not None:
                from server.console import elicitation

                retried = await elicitation.answer_retry(enforcer, principal, params, info)
                if retried is not None:
                    return retried
            result = await enforcer.call_tool(principal, params.name, params.arguments, info)
        if console_url is not None:
            offered = elicitation.offer(ctx, params, result, console_url)
            if offered is not None:
                return offered
        return result

    header_schemas = {entry.spec.name: header_schema(entry.definition.input_schema) for entry in catalog}

    def tool_input_schema(name: str) -> dict[str, Any] | None:
        # The SDK's 2026-07-28 entry checks a tools/call's Mcp-Param-* headers against the tool's input schema
        # before dispatch. Without this lookup it would run on_list_tools to find the schema: a whole listing, its
        # audit record and its transaction in front of every call with arguments. The catalog answers from memory;
        # who may call the tool is decided afterwards, as for any call.
        return header_schemas.get(name)

    return MandateServer(
        SERVER_NAME,
        version=version,
        instructions=INSTRUCTIONS,
        get_tool_input_schema=tool_input_schema,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )
