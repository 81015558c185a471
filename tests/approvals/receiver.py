"""A local webhook receiver for tests: uvicorn on a free 127.0.0.1 port, recording each POST it gets.

It answers ``fail_first`` requests with HTTP 500 before it starts answering 204, so tests can watch retries.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn
from starlette.types import Receive, Scope, Send

from tests.live import bound_socket


@dataclass
class Delivery:
    headers: dict[str, str]
    body: str

    @property
    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class Receiver:
    url: str
    fail_first: int = 0
    deliveries: list[Delivery] = field(default_factory=list[Delivery])
    refused: int = 0

    def of_type(self, event_type: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.payload["type"] == event_type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if self.refused < self.fail_first:
            self.refused += 1
            status = 500
        else:
            headers = {key.decode(): value.decode() for key, value in scope["headers"]}
            self.deliveries.append(Delivery(headers, body.decode()))
            status = 204
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@asynccontextmanager
async def receiver(fail_first: int = 0) -> AsyncIterator[Receiver]:
    sock = bound_socket()
    port = sock.getsockname()[1]
    app = Receiver(f"http://127.0.0.1:{port}/hooks/mandate", fail_first)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: server.serve(sockets=[sock]))
            with anyio.fail_after(10):
                while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
                    await anyio.sleep(0.01)
            try:
                yield app
            finally:
                server.should_exit = True
    finally:
        sock.close()
