"""The benchmark's tool catalog, declared once and served by both sides: Mandate (``@tool``) and a bare ``MCPServer``.

A catalog of ``n`` tools is the trivial tool ``bench_spend`` plus ``n - 1`` read-only look-up tools. Every tool does
no work of its own (it echoes its arguments into its result model), so what is measured is the server around it.

``bench_spend`` takes an exact decimal amount and a currency and has a side effect as far as Mandate knows
(``read_only=False``): it is the tool a cumulative cap applies to once the policy engine is configured for it
(``bench/policy.py``). The look-up tools need one of ten scopes ``bench:area0`` .. ``bench:area9``; the benchmark's
token holds all of them, so Mandate filters every tool and shows all of them, and both sides list the same names.

Mandate's catalog collects marked functions from a module's namespace, so :func:`populate` puts the generated
functions into a module (``bench.catalog50``, ``bench.catalog1000``) as attributes with that ``__module__``.

No ``from __future__ import annotations`` here: the generated functions' annotations must be the classes themselves
(``@tool`` and ``MCPServer`` both read them with ``typing.get_type_hints`` against this module's globals).
"""

import inspect
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from pydantic import BaseModel, Field

from scopes.requirement import all_of
from server.toolkit import StrictArgs, ToolContext, tool

SCOPE_AREAS = 10
SPEND_SCOPE = "bench:spend"
ALL_SCOPES: tuple[str, ...] = (SPEND_SCOPE, *(f"bench:area{i}" for i in range(SCOPE_AREAS)))
TRIVIAL_TOOL = "bench_spend"
TRIVIAL_ARGUMENTS: dict[str, Any] = {"amount": "0.01", "currency": "EUR"}
"""The arguments every benchmarked tools/call sends (one cent: a cap of 100,000.00 EUR takes 10 million calls)."""

SPEND_DESCRIPTION = (
    "Spend an exact amount from the caller's benchmark budget and confirm it. The amount is a decimal string such as "
    '"12.50" in the given currency.'
)

Amount = Annotated[str, Field(pattern=r"^(0|[1-9][0-9]{0,9})(\.[0-9]{1,2})?$", description="a decimal amount")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="an ISO 4217 currency code")]
RecordId = Annotated[str, Field(pattern=r"^rec_[0-9A-Za-z]{1,36}$", description="a record id such as rec_1001")]
Limit = Annotated[int, Field(ge=1, le=100, description="how many entries to return at most")]


class SpendArgs(StrictArgs):
    amount: Amount
    currency: Currency


class Spent(BaseModel):
    status: str
    amount: str
    currency: str


class LookupArgs(StrictArgs):
    record_id: RecordId
    limit: Limit = 10


class Record(BaseModel):
    id: str
    status: str
    count: int


def filler_name(index: int) -> str:
    return f"bench_lookup_{index:04d}"


def filler_description(index: int) -> str:
    return (
        f"Look up benchmark record set {index} by record id and return its status and how many entries it holds. "
        "Read-only."
    )


def filler_scope(index: int) -> str:
    return f"bench:area{index % SCOPE_AREAS}"


# --- Mandate: @tool functions ----------------------------------------------------------------------------------------


async def _mandate_spend(args: SpendArgs, ctx: ToolContext) -> Spent:
    return Spent(status="spent", amount=args.amount, currency=args.currency)


async def _mandate_lookup(args: LookupArgs, ctx: ToolContext) -> Record:
    return Record(id=args.record_id, status="ok", count=args.limit)


def _named(function: Callable[..., Awaitable[Any]], name: str, doc: str, module: str) -> Callable[..., Awaitable[Any]]:
    """A distinct function object (the decorator marks the function it is given) with this name and module."""

    async def copy(args: Any, ctx: ToolContext) -> Any:
        return await function(args, ctx)

    copy.__annotations__ = dict(function.__annotations__)
    copy.__name__ = copy.__qualname__ = name
    copy.__doc__ = doc
    copy.__module__ = module
    return copy


# The policy reads ``args.amount`` as exact money once the decorator can say which argument is money.
_MONEY: dict[str, Any] = {"money": {"amount": "currency"}} if "money" in inspect.signature(tool).parameters else {}


def populate(namespace: MutableMapping[str, Any], tools: int) -> None:
    """Put the ``tools``-tool catalog into a module's namespace as ``@tool`` functions."""
    if tools < 1:
        raise ValueError("a catalog holds at least the trivial tool")
    module = str(namespace["__name__"])
    spend = _named(_mandate_spend, TRIVIAL_TOOL, SPEND_DESCRIPTION, module)
    namespace[TRIVIAL_TOOL] = tool(requires=all_of(SPEND_SCOPE), **_MONEY)(spend)
    for index in range(tools - 1):
        name = filler_name(index)
        lookup = _named(_mandate_lookup, name, filler_description(index), module)
        namespace[name] = tool(requires=all_of(filler_scope(index)), read_only=True)(lookup)


# --- the bare MCPServer: plain async functions with the same parameters, results and descriptions ---------------------


async def bare_spend(amount: Amount, currency: Currency) -> Spent:
    return Spent(status="spent", amount=amount, currency=currency)


async def bare_lookup(record_id: RecordId, limit: Limit = 10) -> Record:
    return Record(id=record_id, status="ok", count=limit)


def catalog_module(tools: int) -> str:
    """The module that declares the ``tools``-tool catalog for Mandate."""
    if tools not in CATALOG_SIZES:
        raise ValueError(f"catalog sizes are {CATALOG_SIZES}")
    return f"bench.catalog{tools}"


CATALOG_SIZES = (50, 1000)
_TOOL_NAME = re.compile(r"^bench_(spend|lookup_[0-9]{4})$")


def is_bench_tool(name: str) -> bool:
    return _TOOL_NAME.fullmatch(name) is not None
