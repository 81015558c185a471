"""The bare side of the comparison: the SDK's ``MCPServer`` serving the same catalog, with no enforcement at all.

Optionally (``verifier=``) with the SDK's own bearer-token check (``token_verifier`` + ``AuthSettings``, so the SDK's
``RequireAuthMiddleware`` runs in front of ``/mcp``), verifying the same tokens with Mandate's ``JwtVerifier``: what
plain token verification costs without Mandate's scope filtering, policy and audit.
"""

from __future__ import annotations

from typing import Any

import mcp_types as types
from mcp.server import MCPServer
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings

from bench.catalog_tools import (
    SPEND_DESCRIPTION,
    TRIVIAL_TOOL,
    bare_lookup,
    bare_spend,
    filler_description,
    filler_name,
)
from server.auth.errors import InvalidToken
from server.auth.jwt_verifier import JwtVerifier


class SdkVerifier:
    """Mandate's JWT verification behind the SDK's ``TokenVerifier`` protocol."""

    def __init__(self, verifier: JwtVerifier) -> None:
        self._verifier = verifier

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            principal = await self._verifier.verify(token)
        except InvalidToken:
            return None
        return AccessToken(
            token=token,
            client_id=principal.client_id,
            scopes=sorted(principal.scopes),
            expires_at=int(principal.expires_at.timestamp()),
            subject=principal.subject,
        )


def build_bare(tools: int, *, verifier: JwtVerifier | None = None, base_url: str = "") -> MCPServer:
    """An ``MCPServer`` with the ``tools``-tool benchmark catalog (async tools, as the SDK notes advise)."""
    options: dict[str, Any] = {}
    if verifier is not None:
        options["token_verifier"] = SdkVerifier(verifier)
        options["auth"] = AuthSettings(
            issuer_url=f"{base_url}/dev-issuer",
            resource_server_url=f"{base_url}/mcp",
            required_scopes=[],
            validate_token_resource=False,  # Mandate's verifier checks the audience itself
        )
    server = MCPServer("bare", **options)
    server.add_tool(
        bare_spend,
        name=TRIVIAL_TOOL,
        description=SPEND_DESCRIPTION,
        annotations=types.ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False),
    )
    for index in range(tools - 1):
        server.add_tool(
            bare_lookup,
            name=filler_name(index),
            description=filler_description(index),
            annotations=types.ToolAnnotations(read_only_hint=True, idempotent_hint=True),
        )
    return server
