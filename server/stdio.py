"""The stdio transport: the caller's credential comes from the environment (``MANDATE_TOKEN``).

MCP authorization spec 2025-11-25, "Authorization Flow": stdio servers take credentials from the environment rather
than the HTTP flow. The token is verified exactly as over HTTP, and again on every request, so an expired token or
a revoked signing key stops the session's access. Without a valid token no tool is listed or runs, and the reason
goes to stderr (stdout carries the protocol).
"""

from __future__ import annotations

import logging
import sys

from mcp.server.stdio import stdio_server

from server.app import Mandate, build_server
from server.auth.errors import InvalidToken
from server.auth.jwt_verifier import TokenVerifier
from server.auth.principal import Principal
from server.request_context import RequestOrigin, current_origin

logger = logging.getLogger(__name__)

TOKEN_VARIABLE = "MANDATE_TOKEN"  # noqa: S105 - the name of the variable, not a token


class EnvironmentCredentials:
    """The principal of the token in ``MANDATE_TOKEN``, verified per request."""

    def __init__(self, token: str | None, verifier: TokenVerifier) -> None:
        self._token = token
        self._verifier = verifier

    async def principal(self) -> Principal:
        if not self._token:
            raise InvalidToken(f"no access token: set {TOKEN_VARIABLE}")
        return await self._verifier.verify(self._token)


async def serve_stdio(mandate: Mandate, token: str | None) -> None:
    credentials = EnvironmentCredentials(token, mandate.verifier)
    try:
        principal = await credentials.principal()
        print(
            f"mandate: serving stdio for {principal.client_id} (sub {principal.subject}) "
            f"with scopes: {' '.join(sorted(principal.scopes)) or '(none)'}",
            file=sys.stderr,
        )
    except InvalidToken as exc:
        print(f"mandate: no tools will be served: {exc.description}", file=sys.stderr)
    server = build_server(mandate, credentials)
    current_origin.set(RequestOrigin("stdio"))
    async with mandate.upkeep(), stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())
