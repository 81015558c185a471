"""A bounded HTTP GET of one small JSON object: a JWK Set (RFC 7517 section 5) or authorization server metadata
(RFC 8414 section 3.2).

Both documents come from servers we do not control, so the request has a total deadline, the body a size cap, and a
failure is reported as a short reason (a status code or an exception class), never as response content.
"""

from __future__ import annotations

import json
from typing import Any, Final

import anyio
import httpx2

MAX_DOCUMENT_BYTES: Final = 1024 * 1024
"""A JWK Set or metadata document larger than this is refused (real ones are a few kilobytes)."""


class FetchError(Exception):
    """The document could not be fetched or is not a JSON object; ``reason`` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def get_json_object(
    client: httpx2.AsyncClient, url: str, *, accept: str, timeout_seconds: float
) -> dict[str, Any]:
    """GET ``url`` and return its body parsed as a JSON object; only HTTP 200 counts (redirects are not followed)."""
    body = bytearray()
    try:
        with anyio.fail_after(timeout_seconds):
            async with client.stream(
                "GET", url, headers={"Accept": accept}, timeout=timeout_seconds, follow_redirects=False
            ) as response:
                if response.status_code != 200:
                    raise FetchError(f"HTTP status {response.status_code}")
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise FetchError("document too large")
    except httpx2.HTTPError as exc:
        raise FetchError(type(exc).__name__) from exc
    except TimeoutError as exc:
        raise FetchError("timed out") from exc
    return parse_json_object(bytes(body))


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Parse ``raw`` as UTF-8 JSON that must be an object."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise FetchError("not JSON") from exc
    if not isinstance(value, dict):
        raise FetchError("not a JSON object")
    return value
