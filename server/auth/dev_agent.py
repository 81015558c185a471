"""DEVELOPMENT ONLY: a stdio caller that is a development agent, with a token minted by the local issuer as needed.

A desktop MCP client starts ``mandate serve --transport stdio`` once and keeps it running for days; a development
token pasted into its configuration expires after an hour. With ``--dev-agent NAME`` (and the development issuer
turned on) the server mints the agent's token itself, short-lived (five minutes), and a fresh one before the last
expires. Each request's token is then verified exactly like any other, by the same verifier, so scopes, expiry and
the audit record behave as with a pasted token. Nothing here works without the development issuer, whose key file
already lets its reader mint anything: this adds no authority that the key does not already give.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from server.auth.dev_issuer import DevIssuer
    from server.auth.jwt_verifier import TokenVerifier
    from server.auth.principal import Principal

TOKEN_LIFETIME: Final = timedelta(minutes=5)
RENEW_BEFORE_SECONDS: Final = 120.0


class DevAgentCredentials:
    """The principal of a development agent: a fresh short-lived token from the dev issuer, verified per request."""

    def __init__(
        self,
        issuer: DevIssuer,
        verifier: TokenVerifier,
        *,
        agent: str,
        scopes: Iterable[str],
        audience: str,
        tenant: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._issuer = issuer
        self._verifier = verifier
        self._agent = agent
        self._scopes = tuple(scopes)
        self._audience = audience
        self._tenant = tenant
        self._clock = clock
        self._token: str | None = None
        self._renew_at = 0.0

    @property
    def agent(self) -> str:
        return self._agent

    def token(self) -> str:
        """The current token, minted anew when none is held or the held one expires within two minutes."""
        now = self._clock()
        if self._token is None or now >= self._renew_at:
            self._token = self._issuer.mint(
                subject=f"agent:{self._agent}",
                client_id=f"{self._agent}-agent",
                scopes=self._scopes,
                audience=self._audience,
                ttl=TOKEN_LIFETIME,
                tenant=self._tenant,
            )
            self._renew_at = now + TOKEN_LIFETIME.total_seconds() - RENEW_BEFORE_SECONDS
        return self._token

    async def principal(self) -> Principal:
        return await self._verifier.verify(self.token())
