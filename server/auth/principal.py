"""Who is calling: the identity taken from a verified access token, and nothing else.

The fields follow the JWT profile for OAuth 2.0 access tokens (RFC 9068, section 2.2): ``sub``, ``client_id``,
``scope`` (RFC 8693 section 4.2), ``iss``, ``aud``, ``jti``, plus the RFC 8693 ``act`` actor claim and the RFC 9396
``authorization_details``. A Principal never holds the token itself, so nothing that records or logs a principal can
leak a credential.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scopes.identity import identity_key


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified caller of one request."""

    subject: str
    client_id: str
    scopes: frozenset[str]
    issuer: str
    audience: tuple[str, ...]
    expires_at: datetime
    token_id: str | None = None
    tenant: str | None = None
    actor: str | None = None
    """``act.sub`` (RFC 8693 section 4.1): the agent acting on behalf of ``subject``, when the token says so."""
    authorization_details: tuple[Mapping[str, Any], ...] = ()
    """RFC 9396 entries, e.g. ``{"type": "refund", "max_amount": {"value": "50.00", "currency": "EUR"}}``."""
    claims: Mapping[str, Any] = field(default_factory=dict[str, Any])
    """Every verified claim, for policy conditions that read custom claims (e.g. an approver marker)."""

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def key(self) -> str:
        """A stable identifier of this principal across tokens: issuer, client and subject (:mod:`scopes.identity`)."""
        return identity_key(self.issuer, self.client_id, self.subject)
