"""Who is on the other end of an HTTP request, for its audit record: the Origin (RFC 6454) and User-Agent (RFC 9110
section 10.1.5) headers, and the client's name and version from MCP ``clientInfo``.

``clientInfo`` arrives in ``initialize`` (2025-11-25) or in each request's ``_meta`` under
``io.modelcontextprotocol/clientInfo`` (2026-07-28). On the stateless HTTP transport (the default) there is no
session to hold what ``initialize`` said, so the guard remembers it per access token (a digest of the token, never
the token) in a bounded in-process table, and later requests made with the same token are recorded with it. A
request's own ``_meta`` always wins. What a client says about itself is its claim, recorded as such, not verified.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from mcp_types import CLIENT_INFO_META_KEY
from starlette.types import Scope

ClientInfo = tuple[str | None, str | None]


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


def _name_and_version(value: object) -> ClientInfo | None:
    if not isinstance(value, dict):
        return None
    name, version = value.get("name"), value.get("version")
    return (name if isinstance(name, str) else None, version if isinstance(version, str) else None)


def announced_client(message: object) -> tuple[ClientInfo | None, bool]:
    """The ``clientInfo`` a JSON-RPC message carries, and whether it is an ``initialize`` (to be remembered)."""
    if not isinstance(message, dict):
        return None, False
    params = message.get("params")
    if not isinstance(params, dict):
        return None, False
    if message.get("method") == "initialize":
        return _name_and_version(params.get("clientInfo")), True
    meta = params.get("_meta")
    return (_name_and_version(meta.get(CLIENT_INFO_META_KEY)) if isinstance(meta, dict) else None), False


class ClientMemory:
    """What each token's ``initialize`` said its client was; least recently used entries go first."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._entries: OrderedDict[str, ClientInfo] = OrderedDict()

    def remember(self, token_digest: str, info: ClientInfo) -> None:
        self._entries[token_digest] = info
        self._entries.move_to_end(token_digest)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def recall(self, token_digest: str) -> ClientInfo | None:
        info = self._entries.get(token_digest)
        if info is not None:
            self._entries.move_to_end(token_digest)
        return info


def client_of(memory: ClientMemory, token_digest: str, message: Any) -> ClientInfo:
    announced, is_initialize = announced_client(message)
    if announced is not None:
        if is_initialize:
            memory.remember(token_digest, announced)
        return announced
    return memory.recall(token_digest) or (None, None)
