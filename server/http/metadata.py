"""OAuth 2.0 Protected Resource Metadata (RFC 9728) for the MCP endpoint.

Served at ``/.well-known/oauth-protected-resource`` with the resource's path inserted after it (RFC 9728 section
3.1), and at the bare well-known path, so clients of either MCP authorization spec revision find it. It names the
authorization servers this resource trusts and every scope in the catalog (``scopes_supported``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def metadata_path(resource_url: str) -> str:
    path = urlsplit(resource_url).path.rstrip("/")
    return f"/.well-known/oauth-protected-resource{path}"


def metadata_url(base_url: str, resource_url: str) -> str:
    return f"{base_url.rstrip('/')}{metadata_path(resource_url)}"


def metadata_routes(resource_url: str, authorization_servers: Sequence[str], scopes: Sequence[str]) -> list[Route]:
    document: dict[str, Any] = {
        "resource": resource_url,
        "authorization_servers": list(authorization_servers),
        "scopes_supported": list(scopes),
        "bearer_methods_supported": ["header"],
        "resource_name": "Mandate",
    }

    async def endpoint(_request: Request) -> JSONResponse:
        return JSONResponse(document, headers={"Cache-Control": "public, max-age=300"})

    paths = {metadata_path(resource_url), "/.well-known/oauth-protected-resource"}
    return [Route(path, endpoint, methods=["GET"]) for path in sorted(paths)]
