"""Why a request's credentials were refused, as the two Bearer error codes of RFC 6750 section 3.1.

``invalid_token`` (HTTP 401) means the access token is missing, malformed, expired, not ours or not verifiable;
``insufficient_scope`` (HTTP 403) means the token is fine but does not carry the scopes the operation needs. The HTTP
layer turns these into a ``WWW-Authenticate`` challenge, so every ``description`` here is written to be shown to the
caller: it names what is wrong and never contains the token, a key, or any other secret.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar


class InvalidToken(Exception):
    """The access token cannot be trusted (RFC 6750 section 3.1, ``invalid_token``)."""

    error: ClassVar[str] = "invalid_token"
    status_code: ClassVar[int] = 401

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description
        """A short reason such as "token expired"; safe to return to the caller and to log."""


class InsufficientScope(Exception):
    """The token is valid but lacks a scope the operation needs (RFC 6750 section 3.1, ``insufficient_scope``)."""

    error: ClassVar[str] = "insufficient_scope"
    status_code: ClassVar[int] = 403

    def __init__(self, scopes: Iterable[str], description: str | None = None) -> None:
        self.scopes: tuple[str, ...] = tuple(scopes)
        """Every scope the operation needs (RFC 6750 section 3: the ``scope`` attribute of the challenge)."""
        if description is None:
            description = "the operation needs scope: " + " ".join(self.scopes)
        super().__init__(description)
        self.description = description
