"""Deeply immutable JSON values: the verified claims a cached ``Principal`` shares between requests.

A verified token's result is cached and handed to every request that presents the same token (``jwt_verifier``), so
nothing a request does with ``principal.claims`` may change what the next request sees. Instead of deep-copying the
claims on every use, they are frozen once: JSON objects become :class:`FrozenDict` and arrays :class:`FrozenList`,
subclasses of ``dict`` and ``list`` whose mutating methods raise ``TypeError``. They stay ``dict``/``list`` for
``isinstance`` checks and for ``json.dumps`` (RFC 8259 values), and copying one returns it unchanged.
"""

from __future__ import annotations

from typing import Any, NoReturn


def _refuse(*_args: object, **_kwargs: object) -> NoReturn:
    raise TypeError("verified claims are read-only")


class FrozenDict(dict[str, Any]):
    """A ``dict`` that refuses every change after construction."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, _memo: dict[int, Any]) -> FrozenDict:
        return self

    def __reduce__(self) -> tuple[type[FrozenDict], tuple[dict[str, Any]]]:
        return (FrozenDict, (dict(self),))


class FrozenList(list[Any]):
    """A ``list`` that refuses every change after construction."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse

    def __copy__(self) -> FrozenList:
        return self

    def __deepcopy__(self, _memo: dict[int, Any]) -> FrozenList:
        return self

    def __reduce__(self) -> tuple[type[FrozenList], tuple[list[Any]]]:
        return (FrozenList, (list(self),))


def freeze(value: Any) -> Any:
    """``value`` (decoded JSON) with every object and array replaced by a frozen copy, recursively."""
    if isinstance(value, dict):
        return FrozenDict({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list):
        return FrozenList(freeze(item) for item in value)
    return value
