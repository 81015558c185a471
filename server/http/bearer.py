"""Bearer-token authentication and per-tool step-up for the streamable HTTP endpoint.

RFC 6750 section 3: a request without a token, or with an invalid one, gets HTTP 401 with
``WWW-Authenticate: Bearer`` and, per RFC 9728 section 5.1, ``resource_metadata``. A tools/call of a tool whose
scopes the token lacks gets HTTP 403 ``error="insufficient_scope"`` with ``scope`` naming every scope the call needs
(MCP authorization spec 2025-11-25, "Scope Challenge Handling"; 2026-07-28 names only the scopes of the current
operation), and nothing runs. The SDK's own middleware omits ``scope=``, so this replaces it.

It also reads the body before the SDK does, so it is where a message that is not one unambiguous JSON-RPC object
(duplicate member names, not JSON, not a request object) is refused with the JSON-RPC error
(:mod:`server.jsonrpc_input`) and recorded; the SDK never parses it.

The token never travels further than this module: the principal derived from it does, and the SDK sees an
``AccessToken`` whose ``token`` field is a digest, not the credential.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from contextvars import Token
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.auth.errors import InvalidToken
from server.auth.jwt_verifier import TokenVerifier
from server.auth.principal import Principal
from server.callpath.record import CallInfo
from server.catalog import ToolCatalog
from server.guards.rate_limits import edge_checked
from server.http.client_source import ClientMemory, client_of, header
from server.jsonrpc_input import PARSE_ERROR, Problem, read_message
from server.observability.tracing import continued_from
from server.request_context import RequestOrigin, current_origin, current_principal

if TYPE_CHECKING:
    from server.guards.rails import Guardrails

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_048_576
RefusalRecorder = Callable[[Principal | None, CallInfo, str | None, str, str, str], Awaitable[str | None]]


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _challenge(params: dict[str, str]) -> bytes:
    return ("Bearer " + ", ".join(f'{key}="{_quote(value)}"' for key, value in params.items())).encode()


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _bearer_token(scope: Scope) -> str | None:
    return _token_of(header(scope, b"authorization"))


def _token_of(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header value (the request's first such header), or None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


_FIRST_WINS = frozenset({b"authorization", b"origin", b"user-agent"})
"""Headers read as the first one of their name (:func:`server.http.client_source.header`)."""
_LAST_WINS = frozenset({b"traceparent", b"tracestate"})
"""Headers read as the last one of their name (:func:`server.observability.tracing.continued_from_headers`)."""


def _read_headers(scope: Scope) -> dict[bytes, str]:
    """In one pass over the request's headers, every one the guard reads, decoded (latin-1): the first
    ``authorization``, ``origin`` and ``user-agent``, the last ``traceparent`` and ``tracestate``."""
    found: dict[bytes, str] = {}
    for name, value in scope.get("headers", []):
        if name in _FIRST_WINS:
            if name not in found:
                found[name] = value.decode("latin-1")
        elif name in _LAST_WINS:
            found[name] = value.decode("latin-1")
    return found


def _sdk_access_token(principal: Principal, token_digest: str) -> AccessToken:
    return AccessToken(
        token=token_digest,
        client_id=principal.client_id,
        scopes=sorted(principal.scopes),
        expires_at=int(principal.expires_at.timestamp()),
        resource=principal.audience[0] if principal.audience else None,
        subject=principal.subject,
        claims={"iss": principal.issuer},
    )


ACCESS_TOKENS_KEPT = 4096
"""How many principals' SDK access tokens a guard keeps (the oldest is forgotten first)."""


class BearerGuard:
    """ASGI middleware in front of the MCP endpoint: authenticate, step up per tool, then pass on."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: TokenVerifier,
        catalog: ToolCatalog,
        resource_metadata_url: str,
        record_refusal: RefusalRecorder,
        guards: Guardrails | None = None,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.catalog = catalog
        self.resource_metadata_url = resource_metadata_url
        self.record_refusal = record_refusal
        self.guards = guards
        """Auth refusals are aggregated through it, and principal-wide rate limits answered here with HTTP 429."""
        self.clients = ClientMemory()
        self._access_tokens: dict[str, tuple[Principal, AuthenticatedUser]] = {}
        """The SDK's view of each principal (its user, holding its access token), by token digest: built once per
        verified principal, not per request."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        headers = _read_headers(scope)
        info = CallInfo(
            transport="http",
            client_address=client[0] if client else None,
            origin=headers.get(b"origin"),
            user_agent=headers.get(b"user-agent"),
        )
        token = _token_of(headers.get(b"authorization"))
        if token is None:
            await self._unauthorized(send, info, None, "authentication required")
            return
        try:
            principal = await self.verifier.verify(token)
        except InvalidToken as exc:
            await self._unauthorized(send, info, "invalid_token", exc.description)
            return

        body: bytes | None = None
        edge_token: Token[bool] | None = None
        digest = hashlib.sha256(token.encode()).hexdigest()
        name, version = self.clients.recall(digest) or (None, None)
        if scope.get("method") == "POST":
            body = await _read_body(receive)
            if body is None:
                await _send_json(send, 413, {"error": "request_too_large"}, [])
                return
            message, problem = read_message(body)  # parsed once, here; the SDK parses the body again itself
            if problem is not None:
                await self._malformed(send, info, principal, problem)
                return
            name, version = client_of(self.clients, digest, message)
            denied = self._missing_scope(principal, message)
            if denied is not None:
                tool_name, needed = denied
                info = replace(info, client_name=name, client_version=version)
                await self._forbidden(send, info, principal, tool_name, needed)
                return
            if self.guards is not None and _has_tool_call(message):
                if not await self._within_rate(send, info, principal):
                    return
                edge_token = edge_checked.set(True)

        scope["user"] = user = self._user(principal, digest)
        tokens = (
            current_principal.set(principal),
            current_origin.set(
                RequestOrigin("http", info.client_address, None, info.origin, info.user_agent, name, version)
            ),
            auth_context_var.set(user),
        )
        try:
            # W3C traceparent: the agent's trace goes on
            with continued_from(headers.get(b"traceparent"), headers.get(b"tracestate")):
                await self.app(scope, _replay(body, receive) if body is not None else receive, send)
        finally:
            if edge_token is not None:
                edge_checked.reset(edge_token)
            auth_context_var.reset(tokens[2])
            current_origin.reset(tokens[1])
            current_principal.reset(tokens[0])

    def _user(self, principal: Principal, digest: str) -> AuthenticatedUser:
        """The SDK's user for ``principal`` (its access token inside), built once per verified principal."""
        known = self._access_tokens.get(digest)
        if known is not None and known[0] is principal:  # the verifier's cached principal for this token
            return known[1]
        user = AuthenticatedUser(_sdk_access_token(principal, digest))
        self._access_tokens[digest] = (principal, user)
        if len(self._access_tokens) > ACCESS_TOKENS_KEPT:
            del self._access_tokens[next(iter(self._access_tokens))]
        return user

    def _missing_scope(self, principal: Principal, message: Any) -> tuple[str, tuple[str, ...]] | None:
        if not isinstance(message, dict) or message.get("method") != "tools/call":
            return None
        params = message.get("params")
        name = params.get("name") if isinstance(params, dict) else None
        entry = self.catalog.get(name) if isinstance(name, str) else None
        if entry is not None and not entry.spec.requires.is_met_by(principal.scopes):
            return entry.spec.name, entry.spec.requires.challenge_scopes(principal.scopes)
        return None

    async def _malformed(self, send: Send, info: CallInfo, principal: Principal, problem: Problem) -> None:
        """JSON-RPC 2.0 section 5.1: a parse error or an invalid request, answered before the SDK reads a byte."""
        code = "parse_error" if problem.code == PARSE_ERROR else "invalid_request"
        try:
            await self.record_refusal(principal, info, None, code, problem.message, "call")
        except Exception:
            logger.exception("could not record a malformed message (it was refused)")
        await _send_json(send, 400, problem.response(), [])

    async def _within_rate(self, send: Send, info: CallInfo, principal: Principal) -> bool:
        """Take the principal-wide rate limits for this request; False after answering 429 (or 503 when they
        cannot be checked: fail closed)."""
        assert self.guards is not None
        try:
            rules = self.guards.rules
            if not self.guards.rates.limits(rules, None):  # no principal-wide limit: nothing to take
                return True
            limited = await self.guards.rates.take(rules, principal, None)
        except Exception:
            logger.exception("the rate limits could not be checked; the request is refused")
            await _send_json(send, 503, {"error": "temporarily_unavailable"}, [(b"retry-after", b"1")])
            return False
        if limited is None:
            return True
        retry = str(limited.retry_after_seconds)
        await self.guards.refusals.refused(info.client_address, "rate_limited", f"rate limit {limited.limit.id}")
        body = {
            "error": "rate_limited",
            "error_description": limited.message,
            "limit": limited.limit.id,
            "retry_after_seconds": limited.retry_after_seconds,
        }
        await _send_json(send, 429, body, [(b"retry-after", retry.encode())])
        return False

    async def _unauthorized(self, send: Send, info: CallInfo, error: str | None, description: str) -> None:
        params: dict[str, str] = {}
        if error:
            params["error"] = error
            params["error_description"] = description
        params["resource_metadata"] = self.resource_metadata_url
        if error and self.guards is not None:
            self.guards.metrics.auth_refusals.labels(error).inc()
            try:  # aggregated: a flood of bad tokens writes one record per source and reason per interval
                await self.guards.refusals.refused(info.client_address, error, description)
            except Exception:
                logger.exception("could not record a refused authentication")
        elif error:
            try:
                await self.record_refusal(None, info, None, error, description, "auth")
            except Exception:
                logger.exception("could not record a refused authentication")
        body = {"error": error or "invalid_request", "error_description": description}
        await _send_json(send, 401, body, [(b"www-authenticate", _challenge(params))])

    async def _forbidden(
        self, send: Send, info: CallInfo, principal: Principal, tool_name: str, needed: tuple[str, ...]
    ) -> None:
        description = f"the tool {tool_name} needs scope {' '.join(needed)}"
        params = {
            "error": "insufficient_scope",
            "scope": " ".join(needed),
            "resource_metadata": self.resource_metadata_url,
            "error_description": description,
        }
        try:
            await self.record_refusal(principal, info, tool_name, "insufficient_scope", description, "call")
        except Exception:
            logger.exception("could not record a scope refusal")
            await _send_json(send, 503, {"error": "temporarily_unavailable"}, [])
            return
        body = {"error": "insufficient_scope", "error_description": description, "scope": " ".join(needed)}
        await _send_json(send, 403, body, [(b"www-authenticate", _challenge(params))])


def _has_tool_call(message: Any) -> bool:
    """Whether a JSON-RPC message (accepted by ``read_message``) calls a tool: those are what rate limits count."""
    return isinstance(message, dict) and message.get("method") == "tools/call"


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
