"""Per-request facts the transport knows and the enforcement path needs: the verified caller and where it came from.

The HTTP layer sets them (in :mod:`server.http.bearer`) on the task that handles the request; the MCP SDK carries
the context variables over to the handler (its dispatcher snapshots ``contextvars`` per message). On stdio they are
set from the process's verified token.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from server.auth.principal import Principal


@dataclass(frozen=True, slots=True)
class RequestOrigin:
    """Where the request came from: the transport, the peer address and, over HTTP, the Origin and User-Agent
    headers and the client's ``clientInfo`` (from this request's ``_meta`` on 2026-07-28, else remembered from the
    ``initialize`` made with the same token: on the stateless transport no session carries it)."""

    transport: str
    client_address: str | None = None
    request_id: str | None = None
    origin: str | None = None
    user_agent: str | None = None
    client_name: str | None = None
    client_version: str | None = None


current_principal: ContextVar[Principal | None] = ContextVar("mandate_principal", default=None)
current_origin: ContextVar[RequestOrigin | None] = ContextVar("mandate_origin", default=None)
