"""Values worked out once per object, for objects the call path sees again and again (a verified principal).

The token verifier hands out the same :class:`~server.auth.principal.Principal` for every call made with one token
(``server/auth/jwt_verifier.py``, its result cache), so what the call path derives from it alone (the policy's
:class:`~scopes.policy.Caller`, the audit record's identity columns) can be kept with it instead of being built on
every call. Principals are frozen, so a derived value never goes stale. The memo is keyed by identity (a principal
holds mappings and is not hashable cheaply), holds a strong reference to each object it keeps a value for, so an id
is never reused while its entry lives, and forgets the oldest entries past ``size``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class PerObject(Generic[K, V]):
    """``make(obj)``, worked out once per object (by identity) and remembered for the last ``size`` objects."""

    def __init__(self, make: Callable[[K], V], size: int = 4096) -> None:
        self._make = make
        self._size = size
        self._entries: dict[int, tuple[K, V]] = {}

    def __call__(self, obj: K) -> V:
        entry = self._entries.get(id(obj))
        if entry is not None and entry[0] is obj:
            return entry[1]
        value = self._make(obj)
        self._entries[id(obj)] = (obj, value)
        if len(self._entries) > self._size:
            del self._entries[next(iter(self._entries))]
        return value

    def __len__(self) -> int:
        return len(self._entries)
