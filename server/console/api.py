"""The approvals HTTP API (JSON, bearer-authenticated) that ``mandate approvals --url`` uses: approvers decide
through the server, with a token and without database credentials.

- ``GET /api/approvals?status=pending&limit=50``: ``approvals_list``
- ``GET /api/approvals/{id}``: ``approval_get``
- ``POST /api/approvals/{id}/decision`` with ``{"decision": "approve"|"reject", "comment": "..."}``: ``approval_decide``

Each is a call of the same tool through the enforcer (transport ``api``): the same token verification as MCP, the
same scope, approver-claim and separation-of-duties checks, the same audit record. The body is the tool's
structured answer. A missing or invalid token gets 401 with an RFC 6750 section 3 challenge naming the RFC 9728
metadata; a refusal gets 403 (not permitted), 404 (no such approval), 409 (no longer pending) or 400 (bad input).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from server.auth.errors import InvalidToken
from server.auth.principal import Principal
from server.callpath.record import CallInfo
from server.http.metadata import metadata_url

if TYPE_CHECKING:
    from server.app import Mandate

_STATUS_OF_CODE = {
    "not_found": 404,
    "invalid_arguments": 400,
    "approval_expired": 409,
    "approval_already_decided": 409,
    "approval_not_pending": 409,
    "internal_error": 500,
}
_HEADERS = {"Cache-Control": "no-store"}


class ApprovalsApi:
    def __init__(self, mandate: Mandate) -> None:
        self.mandate = mandate
        settings = mandate.settings
        self._challenge_metadata = metadata_url(settings.base_url, settings.audience)

    def routes(self) -> list[Route]:
        return [
            Route("/api/approvals", self.listing, methods=["GET"]),
            Route("/api/approvals/{approval_id}", self.detail, methods=["GET"]),
            Route("/api/approvals/{approval_id}/decision", self.decide, methods=["POST"]),
        ]

    def _unauthorized(self, description: str) -> JSONResponse:
        challenge = (
            f'Bearer error="invalid_token", error_description="{description.replace(chr(34), chr(39))}", '
            f'resource_metadata="{self._challenge_metadata}"'
        )
        return JSONResponse(
            {"error": "invalid_token", "error_description": description},
            status_code=401,
            headers={**_HEADERS, "WWW-Authenticate": challenge},
        )

    async def _principal(self, request: Request) -> Principal | JSONResponse:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self._unauthorized("an approver's bearer access token is required")
        try:
            return await self.mandate.verifier.verify(token.strip())
        except InvalidToken as exc:
            return self._unauthorized(exc.description)

    async def _call(self, request: Request, tool: str, arguments: dict[str, Any]) -> JSONResponse:
        principal = await self._principal(request)
        if isinstance(principal, JSONResponse):
            return principal
        info = CallInfo(
            transport="api",
            client_address=request.client.host if request.client else None,
            client_name=request.headers.get("user-agent", "")[:200] or None,
            request_id=request.headers.get("x-request-id", "")[:200] or None,
        )
        result = await self.mandate.enforcer.call_tool(principal, tool, arguments, info)
        body = dict(result.structured_content or {})
        if not result.is_error:
            return JSONResponse(body, headers=_HEADERS)
        return JSONResponse(body, status_code=_STATUS_OF_CODE.get(str(body.get("code")), 403), headers=_HEADERS)

    async def listing(self, request: Request) -> JSONResponse:
        arguments: dict[str, Any] = {"status": request.query_params.get("status", "pending")}
        limit = request.query_params.get("limit")
        if limit is not None:
            arguments["limit"] = int(limit) if limit.isdigit() else limit
        return await self._call(request, "approvals_list", arguments)

    async def detail(self, request: Request) -> JSONResponse:
        return await self._call(request, "approval_get", {"approval_id": request.path_params["approval_id"]})

    async def decide(self, request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            problem = {
                "status": "invalid_arguments",
                "code": "invalid_arguments",
                "message": "The body is a JSON object.",
            }
            return JSONResponse(problem, status_code=400, headers=_HEADERS)
        arguments = {**body, "approval_id": request.path_params["approval_id"]}
        return await self._call(request, "approval_decide", arguments)
