"""A small delaying TCP proxy for tests: it sits between Mandate and localstripe and holds every chunk the client
sends for ``delay`` seconds (every ``slow_every``-th chunk for ``slow_delay``, long enough to outlast the
provider timeout, so some calls end in doubt while the provider still acts on them)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
from anyio.abc import SocketStream


@dataclass
class DelayProxy:
    upstream_port: int
    delay: float = 0.1
    slow_every: int = 0
    slow_delay: float = 0.0
    port: int = 0
    chunks: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _hold(self) -> float:
        n = next(self.chunks) + 1
        return self.slow_delay if self.slow_every and n % self.slow_every == 0 else self.delay

    async def _pipe(self, source: SocketStream, sink: SocketStream, *, delayed: bool) -> None:
        try:
            async for chunk in source:
                if delayed:
                    await anyio.sleep(self._hold())
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError):
            pass
        finally:
            await sink.aclose()

    async def _handle(self, client: SocketStream) -> None:
        async with client:
            try:
                upstream = await anyio.connect_tcp("127.0.0.1", self.upstream_port)
            except OSError:
                return
            async with upstream, anyio.create_task_group() as group:
                group.start_soon(lambda: self._pipe(client, upstream, delayed=True))
                group.start_soon(lambda: self._pipe(upstream, client, delayed=False))


@asynccontextmanager
async def delaying(proxy: DelayProxy) -> AsyncIterator[DelayProxy]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    proxy.port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - anyio's typed attribute, not SQL
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, proxy._handle)
        try:
            yield proxy
        finally:
            group.cancel_scope.cancel()
