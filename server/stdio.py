"""The stdio transport: the caller's credential comes from the environment (``MANDATE_TOKEN``).

MCP authorization spec 2025-11-25, "Authorization Flow": stdio servers take credentials from the environment rather
than the HTTP flow. The token is verified exactly as over HTTP, and again on every request, so an expired token or
a revoked signing key stops the session's access. Without a valid token no tool is listed or runs, and the reason
goes to stderr (stdout carries the protocol).

Each line read passes :func:`server.jsonrpc_input.check_message` before the SDK parses it, exactly as over HTTP: a
message with duplicate member names, or one that is not a JSON-RPC message object, is answered with its JSON-RPC
error, recorded, and never reaches a tool (the SDK alone would silently drop it, or let the last duplicate win).

A long-running stdio server outlives a pasted token. Two ways keep it working: ``MANDATE_TOKEN_FILE`` names a file
that is read again on every request (whatever refreshes tokens for your authorization server writes it), and, in
development only, ``--dev-agent NAME`` lets the server mint its agent's short-lived tokens itself
(``server.auth.dev_agent``).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from io import TextIOWrapper
from pathlib import Path
from typing import Any, cast

import anyio
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage

from server.app import Mandate, build_server
from server.auth.errors import InvalidToken
from server.auth.jwt_verifier import TokenVerifier
from server.auth.principal import Principal
from server.callpath.record import CallInfo
from server.jsonrpc_input import PARSE_ERROR, Problem, check_message
from server.mcp_server import CredentialSource
from server.request_context import RequestOrigin, current_origin

logger = logging.getLogger(__name__)

TOKEN_VARIABLE = "MANDATE_TOKEN"  # noqa: S105 - the name of the variable, not a token
TOKEN_FILE_VARIABLE = "MANDATE_TOKEN_FILE"  # noqa: S105 - the name of the variable, not a token
MAX_TOKEN_FILE_BYTES = 64 * 1024


class EnvironmentCredentials:
    """The principal of the token in ``MANDATE_TOKEN``, verified per request."""

    def __init__(self, token: str | None, verifier: TokenVerifier) -> None:
        self._token = token
        self._verifier = verifier

    async def principal(self) -> Principal:
        if not self._token:
            raise InvalidToken(f"no access token: set {TOKEN_VARIABLE}")
        return await self._verifier.verify(self._token)


class _UnownedText(TextIOWrapper):
    """UTF-8 text over stdin's buffer that never closes the buffer (it is the process's, not ours)."""

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.detach()


class CheckedLines:
    """Lines of JSON-RPC text; each malformed one goes to ``refuse`` instead of on to the SDK."""

    def __init__(self, lines: AsyncIterable[str], refuse: Callable[[Problem], Awaitable[None]]) -> None:
        self._lines = lines
        self._refuse = refuse

    async def __aiter__(self) -> AsyncIterator[str]:
        async for line in self._lines:
            if not line.strip():
                continue
            problem = check_message(line)
            if problem is None:
                yield line
            else:
                await self._refuse(problem)


class Refuser:
    """Answers and records a malformed message; answers wait until the SDK's write stream exists."""

    def __init__(self, mandate: Mandate, credentials: CredentialSource) -> None:
        self._mandate = mandate
        self._credentials = credentials
        self._ready = anyio.Event()
        self._write: Any = None

    def answer_with(self, write_stream: Any) -> None:
        self._write = write_stream
        self._ready.set()

    async def __call__(self, problem: Problem) -> None:
        try:
            principal: Principal | None = await self._credentials.principal()
        except InvalidToken:
            principal = None
        code = "parse_error" if problem.code == PARSE_ERROR else "invalid_request"
        await self._mandate.enforcer.record_refusal(
            principal, CallInfo(transport="stdio"), None, code, problem.message, "call"
        )
        await self._ready.wait()
        await self._write.send(SessionMessage(problem.error_message()))


class TokenFileCredentials:
    """The principal of the token in a file, read again on every request (a refreshed token is picked up at once)."""

    def __init__(self, path: Path, verifier: TokenVerifier) -> None:
        self._path = path
        self._verifier = verifier

    async def principal(self) -> Principal:
        try:
            with self._path.open("rb") as handle:
                raw = handle.read(MAX_TOKEN_FILE_BYTES + 1)
        except OSError as exc:
            raise InvalidToken(f"cannot read the token file named by {TOKEN_FILE_VARIABLE}: {exc.strerror}") from None
        if len(raw) > MAX_TOKEN_FILE_BYTES:
            raise InvalidToken("token too large")
        token = raw.decode("ascii", errors="replace").strip()
        if not token:
            raise InvalidToken(f"the token file named by {TOKEN_FILE_VARIABLE} is empty")
        return await self._verifier.verify(token)


async def serve_stdio(mandate: Mandate, token: str | None, *, credentials: CredentialSource | None = None) -> None:
    """Serve one stdio session; ``credentials`` replaces the ``MANDATE_TOKEN`` value ``token`` when given."""
    if credentials is None:
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
    refuse = Refuser(mandate, credentials)
    stdin = CheckedLines(anyio.wrap_file(_UnownedText(sys.stdin.buffer, encoding="utf-8", errors="replace")), refuse)
    async with mandate.upkeep(), stdio_server(stdin=cast(Any, stdin)) as (read_stream, write_stream):
        refuse.answer_with(write_stream)
        await server.run(read_stream, write_stream, server.create_initialization_options())
