"""The HTTP transport under the Stripe SDK: an async client over ``httpx2`` with one total deadline per request.

The SDK (``stripe`` 16, "Configuring an HTTP client") accepts any subclass of ``stripe.HTTPClient``. Its own async
clients need ``httpx`` or ``aiohttp``; Mandate's HTTP stack is ``httpx2`` (what the MCP SDK uses), so this module
plugs that in instead of adding a second stack. It does three things the defaults do not:

- one deadline for the whole request (connect, send, wait, read), not per phase, so a provider that trickles bytes
  cannot hold a call past ``timeout_seconds``;
- no retries, no sleeping: a failure is an ``APIConnectionError`` with ``should_retry=False``, because whether to
  retry a money-moving call is the effects protocol's decision;
- failures are described by their exception class only (never a URL with a query, a header or a body), so no
  credential can ride along into an error message or a log line.

Only the async methods are implemented; the synchronous ones raise, so a sync call cannot slip in unnoticed.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Mapping
from typing import Any, NoReturn

import anyio
import httpx2
import stripe

_FAILURE = "The payments provider could not be reached"


class Httpx2StripeClient(stripe.HTTPClient):
    """A ``stripe.HTTPClient`` over one shared ``httpx2.AsyncClient`` (its connection pool lives as long as this)."""

    name = "mandate-httpx2"

    def __init__(self, *, timeout_seconds: float) -> None:
        super().__init__()
        self._timeout = timeout_seconds
        self._client = httpx2.AsyncClient(
            timeout=httpx2.Timeout(timeout_seconds),
            follow_redirects=False,
            trust_env=False,  # no proxy or .netrc credentials picked up from the environment
        )

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        content = post_data.encode() if isinstance(post_data, str) else post_data
        try:
            with anyio.fail_after(self._timeout):
                response = await self._client.request(method, url, headers=dict(headers), content=content)
        except TimeoutError:
            self._fail(f"{_FAILURE}: no answer within {self._timeout:g} s")
        except httpx2.HTTPError as exc:
            self._fail(f"{_FAILURE}: {type(exc).__name__}")
        return response.content, response.status_code, response.headers

    async def request_stream_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[AsyncIterable[bytes], int, Mapping[str, str]]:
        content, status, response_headers = await self.request_async(method, url, headers, post_data)

        async def body() -> AsyncIterable[bytes]:
            yield content

        return body(), status, response_headers

    def sleep_async(self, secs: float) -> Awaitable[None]:
        return anyio.sleep(secs)

    async def close_async(self) -> None:
        await self._client.aclose()

    def request(self, method: str, url: str, headers: Any, post_data: Any = None, *, _usage: Any = None) -> NoReturn:
        raise RuntimeError("Mandate calls Stripe asynchronously only (use the *_async methods)")

    def request_stream(
        self, method: str, url: str, headers: Any, post_data: Any = None, *, _usage: Any = None
    ) -> NoReturn:
        raise RuntimeError("Mandate calls Stripe asynchronously only (use the *_async methods)")

    def close(self) -> None:
        raise RuntimeError("close this client with close_async()")

    @staticmethod
    def _fail(message: str) -> NoReturn:
        raise stripe.APIConnectionError(message, should_retry=False) from None  # type: ignore[no-untyped-call]
