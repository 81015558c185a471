"""What a tool requires of a caller's scopes, said explicitly: ``all_of(...)`` or ``any_of(...)``.

A bare list of scopes means "all of" to one reader and "any of" to another; a ``Requirement`` says which. Scopes are
OAuth 2.0 scope tokens (RFC 6749 section 3.3). ``missing_for`` gives the scopes a step-up request must name
(MCP authorization spec 2025-11-25, "Scope Challenge Handling"; RFC 6750 section 3.1 ``insufficient_scope``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Mode = Literal["all_of", "any_of"]


@dataclass(frozen=True, slots=True)
class Requirement:
    """A set of scopes and whether the caller needs all of them or any one of them."""

    mode: Mode
    scopes: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.scopes:
            raise ValueError(f"{self.mode}() needs at least one scope")
        for scope in self.scopes:
            if not scope or any(ch.isspace() or ch == '"' or ch == "\\" for ch in scope):
                raise ValueError(f"invalid scope token {scope!r}")

    def is_met_by(self, granted: Iterable[str]) -> bool:
        held = set(granted)
        if self.mode == "all_of":
            return all(scope in held for scope in self.scopes)
        return any(scope in held for scope in self.scopes)

    def challenge_scopes(self, granted: Iterable[str]) -> tuple[str, ...]:
        """The scopes to name in a 403 ``scope=`` challenge: every scope this operation needs.

        For ``all_of`` that is the whole set (the client asks for them together, keeping what it has); for
        ``any_of`` it is the first alternative, the least privilege that suffices.
        """
        del granted  # the challenge names what the operation needs, not the difference (MCP 2026-07-28)
        if self.mode == "all_of":
            return self.scopes
        return self.scopes[:1]

    def describe(self) -> str:
        joiner = " and " if self.mode == "all_of" else " or "
        return joiner.join(self.scopes)


def all_of(*scopes: str) -> Requirement:
    """The caller must hold every one of ``scopes``."""
    return Requirement("all_of", tuple(scopes))


def any_of(*scopes: str) -> Requirement:
    """The caller must hold at least one of ``scopes``."""
    return Requirement("any_of", tuple(scopes))
