"""Stable, unambiguous identifiers for a caller, built from the parts of its verified token.

A principal is ``issuer|client_id|subject`` (RFC 9068 section 2.2 names the claims) in ledgers, approvals, effects and
idempotency keys. The parts come from an authorization server and may themselves contain ``|``; joined as they are,
``("a|b", "c")`` and ``("a", "b|c")`` would be the same identity and share a budget, an approval or a stored answer.
Each part therefore has ``%`` and ``|`` percent-encoded (RFC 3986 section 2.1) before joining, which keeps ordinary
identifiers readable and unchanged while making the joined string decode to exactly one tuple of parts.
"""

from __future__ import annotations


def _escape(part: str) -> str:
    return part.replace("%", "%25").replace("|", "%7C")


def identity_key(*parts: str) -> str:
    """``parts`` joined with ``|``, each escaped so that no two different tuples give the same key."""
    return "|".join(_escape(part) for part in parts)
