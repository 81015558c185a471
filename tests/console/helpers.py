"""Driving the console over real HTTP (no browser): a cookie-keeping client that logs in through the development
authorization server exactly as a browser would, following each redirect by hand so every step can be checked."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2

from tests.conftest import Harness
from tests.live import LiveServer

BIG_REFUND = {"order_id": "ord_5002", "amount": "150.00", "currency": "EUR", "reason": "monitor arrived broken"}
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def request_refund(harness: Harness, arguments: dict[str, Any] | None = None, **token: Any) -> str:
    """An agent asks for a refund above the cap; the approval id it waits on."""
    async with harness.client("refunds", **token) as client:
        result = await client.call_tool("refund_create", arguments or BIG_REFUND)
    assert result.structured_content is not None and result.structured_content["status"] == "pending_approval"
    return str(result.structured_content["approval_id"])


@dataclass
class Browser:
    """An HTTP client with a cookie jar, pointed at a live server."""

    live: LiveServer
    http: httpx2.AsyncClient

    async def get(self, path: str, **options: Any) -> httpx2.Response:
        return await self.http.get(self._url(path), **options)

    async def post(self, path: str, data: dict[str, str], **options: Any) -> httpx2.Response:
        return await self.http.post(self._url(path), data=data, **options)

    def _url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.live.base_url}{path}"

    async def log_in(
        self,
        identity: str = "supervisor",
        subject: str = "",
        next_path: str = "/console/approvals",
        approver: bool | None = None,
    ) -> None:
        """Sign in as a development identity; ``approver`` (default: for ``supervisor``) ticks the page's human
        approver box, which approving needs (``approvals.approver_claim``, on by default)."""
        approver = identity == "supervisor" if approver is None else approver
        started = await self.get(f"/console/login?next={next_path}")
        assert started.status_code == 303, started.text
        authorize = started.headers["location"]
        assert authorize.startswith(f"{self.live.base_url}/dev-issuer/authorize?")
        page = await self.get(authorize)
        assert page.status_code == 200 and "Development only" in page.text
        params = {k: v[0] for k, v in parse_qs(urlsplit(authorize).query).items()}
        picked = await self.post(
            "/dev-issuer/authorize",
            {
                **params,
                "identity": identity,
                "subject": subject,
                "decision": "allow",
                **({"approver": "on"} if approver else {}),
            },
        )
        assert picked.status_code == 303, picked.text
        callback = picked.headers["location"]
        assert callback.startswith(f"{self.live.base_url}/console/callback?")
        landed = await self.get(callback)
        assert landed.status_code == 303, landed.text
        assert landed.headers["location"] == next_path

    async def csrf(self, path: str = "/console/approvals") -> str:
        page = await self.get(path)
        found = CSRF.search(page.text)
        assert found, page.text
        return found.group(1)
