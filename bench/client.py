"""A lean MCP client over streamable HTTP, for load generation: raw HTTP/1.1 on a kept-alive connection.

The SDK's ``Client`` costs more per call than the server under test (pydantic models, an output-schema validation
with jsonschema, a tools/list before the first call), and on two CPUs that cost is what the measurement would show.
This client sends pre-encoded requests and checks each answer cheaply (status 200, a JSON-RPC result that is not an
error), so the figures are the servers' own. Two wire protocols:

* ``2026-07-28`` (stateless): one self-contained POST per request with the ``Mcp-Method``/``Mcp-Name`` headers and
  the protocol version, client info and capabilities in ``_meta``; what the SDK's ``Client(mode="auto")`` sends.
* ``2025-11-25`` (stateful): ``initialize`` opens a session (``Mcp-Session-Id``), ``notifications/initialized``
  follows, and every request carries the session id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
CLIENT_INFO = {"name": "mandate-bench", "version": "1"}


class ProtocolError(RuntimeError):
    """The server answered something other than a successful JSON-RPC result."""


class RawMcpClient:
    """One kept-alive HTTP/1.1 connection speaking MCP; ``request`` returns the raw response body."""

    def __init__(self, host: str, port: int, *, token: str | None = None, protocol: str = MODERN) -> None:
        self.host = host
        self.port = port
        self.token = token
        self.protocol = protocol
        self.session_id: str | None = None
        self._next_id = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> RawMcpClient:
        await self.connect()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        if self.protocol == LEGACY:
            await self._initialize()

    async def close(self) -> None:
        if self._writer is not None:
            if self.session_id is not None:
                with contextlib.suppress(OSError, ProtocolError, asyncio.IncompleteReadError):
                    await self._exchange("DELETE", b"", {})
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None

    async def _initialize(self) -> None:
        params = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": CLIENT_INFO}
        body = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}).encode()
        status, headers, _ = await self._exchange("POST", body, {"mcp-method": "initialize"})
        if status != 200 or b"mcp-session-id" not in headers:
            raise ProtocolError(f"initialize: HTTP {status}")
        self.session_id = headers[b"mcp-session-id"].decode()
        note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
        status, _, _ = await self._exchange("POST", note, {})
        if status != 202:
            raise ProtocolError(f"notifications/initialized: HTTP {status}")

    def encode(self, method: str, params: dict[str, Any], name: str | None = None) -> tuple[bytes, bytes, bytes]:
        """The pieces of one request (head before the id, between id and the rest, the rest), built once."""
        if self.protocol == MODERN:
            params = {
                **params,
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": MODERN,
                    "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
                    "io.modelcontextprotocol/clientCapabilities": {},
                },
            }
        rest = json.dumps({"method": method, "params": params}, separators=(",", ":")).encode()
        headers = {"mcp-method": method}
        if name is not None:
            headers["mcp-name"] = name
        return self._head(headers), b'{"jsonrpc":"2.0","id":', b"," + rest[1:]

    def _head(self, extra: dict[str, str]) -> bytes:
        lines = [
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            "Accept: application/json, text/event-stream",
            f"Mcp-Protocol-Version: {self.protocol}",
        ]
        if self.token:
            lines.append(f"Authorization: Bearer {self.token}")
        if self.session_id:
            lines.append(f"Mcp-Session-Id: {self.session_id}")
        lines.extend(f"{key}: {value}" for key, value in extra.items())
        return ("\r\n".join(lines) + "\r\n").encode()

    async def call(self, encoded: tuple[bytes, bytes, bytes]) -> bytes:
        """Send one prepared request with a fresh id; return the result body, or raise ProtocolError."""
        self._next_id += 1
        head, prefix, rest = encoded
        body = prefix + str(self._next_id).encode() + rest
        status, _, payload = await self._send(b"POST /mcp HTTP/1.1\r\n" + head, body)
        if status != 200 or (payload.startswith(b'{"jsonrpc":"2.0","id":') and b'"error":' in payload[:80]):
            raise ProtocolError(f"HTTP {status}: {payload[:300]!r}")
        return payload

    async def _exchange(self, method: str, body: bytes, extra: dict[str, str]) -> tuple[int, dict[bytes, bytes], bytes]:
        return await self._send(f"{method} /mcp HTTP/1.1\r\n".encode() + self._head(extra), body)

    async def _send(self, head: bytes, body: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        assert self._reader is not None
        assert self._writer is not None
        self._writer.write(head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        raw = await self._reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            if line:
                key, _, value = line.partition(b":")
                headers[key.strip().lower()] = value.strip()
        if b"content-length" in headers:
            payload = await self._reader.readexactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding") == b"chunked":
            payload = await self._read_chunked()
        else:
            payload = b""
        return status, headers, payload

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        chunks: list[bytes] = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            data = await self._reader.readexactly(size + 2)
            if size == 0:
                return b"".join(chunks)
            chunks.append(data[:-2])


def check_call(payload: bytes) -> None:
    """A tools/call answer must be a success (not an isError refusal)."""
    if b'"isError":false' not in payload:
        raise ProtocolError(f"the call did not succeed: {payload[:300]!r}")


def tool_count(payload: bytes) -> int:
    return len(json.loads(payload)["result"]["tools"])
