"""The event loop and HTTP parser ``mandate serve`` runs on: uvloop and httptools when installed, else the stdlib.

uvloop (a libuv-based asyncio loop) and httptools (the Node.js HTTP parser) are runtime dependencies on Linux and
macOS (``pyproject.toml`` environment markers) and cut the per-request cost of the loop and of parsing. Where they
are missing (Windows, or an install without them), the server runs on asyncio and uvicorn's h11 parser instead.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from typing import TypeVar, TypeVarTuple, Unpack

import anyio

T = TypeVar("T")
Args = TypeVarTuple("Args")


def has_uvloop() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def http_implementation() -> str:
    """The uvicorn ``http`` option: ``httptools`` when it is installed, else ``h11``."""
    return "httptools" if importlib.util.find_spec("httptools") is not None else "h11"


def run(func: Callable[[Unpack[Args]], Awaitable[T]], *args: *Args) -> T:
    """``anyio.run`` on uvloop when it is installed, else on the default asyncio loop."""
    return anyio.run(func, *args, backend="asyncio", backend_options={"use_uvloop": has_uvloop()})
