"""The small public API for declaring a scoped tool: ``@tool``, ``StrictArgs``, ``ToolContext`` and tool errors.

A tool is an async function taking its argument model and a :class:`ToolContext`, returning a pydantic model. The
decorator only marks the function with its :class:`ToolSpec`; :mod:`server.catalog` collects marked functions from
modules, so there is no registry in process state. MCP facets follow the MCP specification 2025-11-25, "Tools":
the input schema comes from the argument model, the output schema from the return model, and the annotations
(``readOnlyHint``, ``destructiveHint``, ``idempotentHint``, ``openWorldHint``) from the decorator.

A tool whose policy conditions need stored state declares a facts loader (``facts=``): an async function reading, in
the call's transaction and with the rows locked, what the rules refer to as ``facts.<name>`` (docs/policy.md). A
tool declares its money arguments (``money={"amount": "currency"}``) so rules compare them as exact money.

A tool with a side effect may declare how to undo it (``compensation=``): an async planner that, given one effect
the tool made (:class:`~server.audit.lineage.Effect`) and a read-only :class:`StoreView`, returns a
:class:`Compensation`: the effect's current state and the compensating tool call that would undo it, a flag for a
person to follow up, or nothing left to do. ``mandate remediate`` (docs/remediation.md) lists these and, when
a human asks, runs them through the same enforcement as any other call.

A tool whose effect happens at an outside system (a refund at a payment provider) declares it with ``external=``
(:class:`External`) and writes only the provider call; the framework runs it exactly once across the call
(docs/effects.md): ``prepare`` checks and holds local state in the decision's transaction and returns the plan,
``call`` makes the provider request carrying the key and metadata the framework gives (:class:`EffectCall`),
``find`` looks the object up again by that metadata, ``complete`` writes the local rows once the provider did it,
and ``release`` undoes ``prepare``'s holds when the provider definitely did not.

A tool reads and writes through ``ctx.session`` (SQLModel's ORM), or, on a hot path, through statements built once
(:class:`Statement`, a SQLAlchemy Core statement) and run with ``ctx.fetch_one``, ``ctx.fetch_all`` and
``ctx.execute``: the same transaction, without the ORM's per-call work (:mod:`server.storage.prepared`).
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict
from sqlmodel.ext.asyncio.session import AsyncSession

from scopes.money import Money, MoneyError
from scopes.requirement import Requirement
from server.auth.principal import Principal
from server.mail import MailSender as MailSender
from server.mail import MailUnavailable as MailUnavailable
from server.mail import OutgoingMail as OutgoingMail
from server.storage.prepared import Prepared
from server.storage.prepared import Row as Row
from server.storage.prepared import defer as _defer
from server.storage.prepared import run as _run

if TYPE_CHECKING:
    from server.approvals.desk import ApprovalDesk
    from server.audit.lineage import Effect

Statement = Prepared
"""A SQLAlchemy Core statement built once, for ``ctx.fetch_one``, ``ctx.fetch_all`` and ``ctx.execute``."""

ArgsT = TypeVar("ArgsT", bound="StrictArgs")
ResultT = TypeVar("ResultT", bound=BaseModel)

_TOOL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MARK = "__mandate_tool__"


class StrictArgs(BaseModel):
    """Base for tool arguments: unknown fields are refused and nothing is coerced (no ``"12"`` -> 12)."""

    model_config: ClassVar[ConfigDict] = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, frozen=True, str_max_length=2000
    )


class ToolError(Exception):
    """A tool refused or could not complete an action; the agent gets the message as an ``isError`` result.

    ``code`` is machine-readable (``order_not_cancellable``); ``message`` is written so a model can relay it to a
    customer. Nothing the tool did in the transaction is kept.
    """

    def __init__(self, code: str, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


class NotFound(ToolError):
    """The thing does not exist, or the caller may not know that it does (another tenant's): the same answer."""

    def __init__(self, kind: str, identifier: str) -> None:
        super().__init__("not_found", f"No {kind} with id {identifier!r} was found.")


class Facts(BaseModel):
    """Stored state a tool's policy conditions need (``facts.<field>``), read by the tool's facts loader.

    Subclass it with the fields the rules may name; ``mandate policy check`` warns about rules that name others.
    """

    model_config: ClassVar[ConfigDict] = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid")

    def not_found(self) -> NotFound | None:
        """The refusal a rule with ``otherwise = "not_found"`` gives: exactly the one a missing record gives."""
        return None

    def as_mapping(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in type(self).model_fields}


@dataclass(slots=True)
class ToolContext:
    """What a tool sees of the call: who is calling, the transaction it acts in, and the time of the call."""

    principal: Principal
    session: AsyncSession
    now: datetime
    audit_id: str
    """The id of the audit record this invocation writes: effects store it, so lineage can go from effect to cause."""
    tool_name: str
    customer_id: str | None = None
    """Set by a tool to the customer it acted on, so the audit record can be searched by customer."""
    approval_id: str | None = None
    """Set by a tool to the approval it acted on (``approval_decide``), so the audit record links to it."""
    approvals: ApprovalDesk | None = None
    """The approval desk, for the approval tools (``tools/approvals.py``); None where approvals are not served."""
    mail: MailSender | None = None
    """The configured mail sender (:mod:`server.mail`), for tools that mail a customer; None: no mail."""

    async def fetch_one(self, statement: Statement, **params: Any) -> Row | None:
        """The first row ``statement`` returns in the call's transaction, or ``None``."""
        return (await _run(self.session, statement, params)).first()

    async def fetch_all(self, statement: Statement, **params: Any) -> list[Row]:
        """Every row ``statement`` returns in the call's transaction."""
        return (await _run(self.session, statement, params)).rows

    async def execute(self, statement: Statement, **params: Any) -> int:
        """Run ``statement`` (an ``INSERT``, ``UPDATE`` or ``DELETE``) in the call's transaction; rows changed."""
        return (await _run(self.session, statement, params)).rowcount

    async def write(self, statement: Statement, *, expect: int | None = 1, **params: Any) -> None:
        """Write with ``statement`` in the call's transaction without waiting for its answer: on PostgreSQL it goes
        with the call's other writes in one round trip. It must change ``expect`` rows (any number when ``None``),
        or the call fails and nothing it did is kept."""
        await _defer(self.session, statement, params, expect=expect)


Handler = Callable[[Any, ToolContext], Awaitable[BaseModel]]
FactsLoader = Callable[[Any, ToolContext], Awaitable[Facts]]

CompensationAction = Literal["call", "flag", "done", "none"]


@dataclass(frozen=True, slots=True)
class Compensation:
    """How one effect would be undone, and what it looks like now in the system of record.

    - ``call``: run ``tool`` with ``arguments`` (a compensating action, e.g. restore the previous email address);
    - ``flag``: no automatic reversal exists; ``tool`` records that a person must follow up (a refund);
    - ``done``: already compensated (``note`` says by what);
    - ``none``: nothing can or need be done automatically (``note`` says why).
    """

    action: CompensationAction
    state: str
    """The effect's current state in the system of record, in words a responder reads."""
    note: str
    tool: str | None = None
    arguments: Mapping[str, Any] = field(default_factory=dict[str, Any])

    @classmethod
    def call(cls, state: str, tool: str, arguments: Mapping[str, Any], note: str) -> Compensation:
        return cls("call", state, note, tool, dict(arguments))

    @classmethod
    def flag(cls, state: str, tool: str, arguments: Mapping[str, Any], note: str) -> Compensation:
        return cls("flag", state, note, tool, dict(arguments))

    @classmethod
    def done(cls, state: str, note: str) -> Compensation:
        return cls("done", state, note)

    @classmethod
    def nothing(cls, state: str, note: str) -> Compensation:
        return cls("none", state, note)


@dataclass(frozen=True, slots=True)
class StoreView:
    """What a compensation planner may read: the store (in a transaction that is rolled back), the time, and the
    configured providers (``"payments"``), whose objects are the system of record for an external effect."""

    session: AsyncSession
    now: datetime
    providers: Mapping[str, Any] = field(default_factory=dict[str, Any])


CompensationPlanner = Callable[["Effect", StoreView], Awaitable[Compensation]]
"""``(effect, view) -> Compensation``: reads only."""


@dataclass(frozen=True, slots=True)
class EffectCall:
    """What the framework hands a provider call: the key to send and the metadata that names the intent.

    ``idempotency_key`` is derived from the audit id of the intent's record, so a replay sends the same key;
    ``metadata`` (``mandate_intent``, ``mandate_audit``, ``mandate_tool``) is what finds the object again at a
    provider that ignores idempotency keys.
    """

    intent_id: str
    audit_id: str
    tool: str
    idempotency_key: str
    metadata: Mapping[str, str]


class ProviderObject(typing.Protocol):
    """What the framework records of the object a provider made: its id, status and amount."""

    @property
    def id(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def amount(self) -> Money: ...


class EffectRefused(Exception):
    """A provider call definitely did not happen (the provider said no): raise it from ``call`` to say so.

    The payments provider's own ``ProviderRefused`` is understood as the same; anything else a call raises leaves
    the effect in doubt, to be resolved by the reconciler, never assumed either way.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class External:
    """An effect at an outside system, run by the framework's intent protocol (docs/effects.md).

    - ``provider``: which configured provider it needs (``"payments"``); without one the tool's own function runs
      (the local effect), as if ``external`` were not declared.
    - ``plan``: the pydantic model ``prepare`` returns; it is stored with the intent, so the reconciler of another
      process can ``find`` and ``complete`` the effect after a crash.
    - ``prepare(args, ctx) -> plan``: in the decision's transaction (rows locked); check, hold local state (an
      order's refundable amount), raise :class:`ToolError` to refuse.
    - ``call(plan, provider, effect) -> object``: the provider request, carrying ``effect.idempotency_key`` and
      ``effect.metadata``; outside any transaction.
    - ``find(plan, provider, effect) -> object | None``: the object the call made, looked up by its metadata.
    - ``complete(plan, object, ctx) -> result``: in the outcome's transaction: the local rows, and the tool's result.
    - ``release(plan, ctx)``: in the failure's transaction: undo ``prepare``'s holds (optional).
    """

    provider: str
    plan: type[BaseModel]
    prepare: Callable[[Any, ToolContext], Awaitable[BaseModel]]
    call: Callable[[Any, Any, EffectCall], Awaitable[ProviderObject]]
    find: Callable[[Any, Any, EffectCall], Awaitable[ProviderObject | None]]
    complete: Callable[[Any, Any, ToolContext], Awaitable[BaseModel]]
    release: Callable[[Any, ToolContext], Awaitable[None]] | None = None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """Everything Mandate needs to know about a tool, declared where the tool is defined."""

    name: str
    description: str
    requires: Requirement
    args_model: type[StrictArgs]
    result_model: type[BaseModel]
    handler: Handler
    read_only: bool
    destructive: bool
    idempotent: bool
    open_world: bool = False
    sensitive: frozenset[str] = field(default_factory=frozenset[str])
    """Argument fields to redact in the audit record (their digest is kept)."""
    title: str | None = None
    facts: FactsLoader | None = None
    """Reads the stored state the policy's conditions need, inside the call's transaction."""
    facts_model: type[Facts] | None = None
    money: tuple[tuple[str, str], ...] = ()
    """Money arguments and the argument holding each one's currency: ``(("amount", "currency"),)``."""
    compensation: CompensationPlanner | None = None
    """How to undo one of this tool's effects (``mandate remediate``); None when the tool declares no way."""
    external: External | None = None
    """An effect at an outside system (docs/effects.md); the framework runs it when its provider is configured."""

    @property
    def has_side_effect(self) -> bool:
        return not self.read_only

    def policy_args(self, args: BaseModel) -> dict[str, Any]:
        """The validated arguments as policy conditions see them: money fields as exact :class:`Money`.

        Raises :class:`~scopes.money.MoneyError`, naming the argument, for an amount with more decimals than its
        currency has, or an unknown currency.
        """
        values = {name: getattr(args, name) for name in type(args).model_fields}
        for amount, currency in self.money:
            if values.get(amount) is not None:
                try:
                    values[amount] = Money.parse(values[amount], values[currency])
                except MoneyError as exc:
                    raise MoneyError(f"{amount}: {exc}") from None
        return values


def tool(
    *,
    requires: Requirement,
    read_only: bool = False,
    destructive: bool = False,
    idempotent: bool = False,
    open_world: bool = False,
    sensitive: tuple[str, ...] = (),
    name: str | None = None,
    title: str | None = None,
    facts: FactsLoader | None = None,
    money: Mapping[str, str] | None = None,
    compensation: CompensationPlanner | None = None,
    external: External | None = None,
) -> Callable[[Callable[[ArgsT, ToolContext], Awaitable[ResultT]]], Callable[[ArgsT, ToolContext], Awaitable[ResultT]]]:
    """Declare a scoped MCP tool.

    The tool's name defaults to the function's name and its description to the docstring. The first parameter's
    annotation is the argument model (a :class:`StrictArgs`), the return annotation the result model. ``facts`` is
    an async ``(args, ctx) -> Facts`` loader for the policy's ``facts.<name>``; ``money`` maps each money argument
    to the argument naming its currency; ``compensation`` plans how to undo one of the tool's effects;
    ``external`` declares an effect at an outside system (:class:`External`).
    """
    if not isinstance(requires, Requirement):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError("requires= takes all_of(...) or any_of(...)")
    if read_only and destructive:
        raise ValueError("a read-only tool cannot be destructive")
    if external is not None and read_only:
        raise ValueError("a read-only tool has no effect to make elsewhere")

    def decorate(
        function: Callable[[ArgsT, ToolContext], Awaitable[ResultT]],
    ) -> Callable[[ArgsT, ToolContext], Awaitable[ResultT]]:
        if not inspect.iscoroutinefunction(function):
            raise TypeError(f"{function.__qualname__}: a tool must be an async def")
        tool_name = name or function.__name__
        if not _TOOL_NAME.fullmatch(tool_name):
            raise ValueError(f"tool name {tool_name!r} must match {_TOOL_NAME.pattern}")
        hints = typing.get_type_hints(function)
        params = list(inspect.signature(function).parameters)
        if len(params) != 2:
            raise TypeError(f"{tool_name}: a tool takes (args, ctx)")
        args_model = hints.get(params[0])
        result_model = hints.get("return")
        if not (isinstance(args_model, type) and issubclass(args_model, StrictArgs)):
            raise TypeError(f"{tool_name}: the first parameter must be annotated with a StrictArgs model")
        if not (isinstance(result_model, type) and issubclass(result_model, BaseModel)):
            raise TypeError(f"{tool_name}: the return annotation must be a pydantic model")
        unknown = set(sensitive) - set(args_model.model_fields)
        if unknown:
            raise ValueError(f"{tool_name}: sensitive names unknown argument(s) {sorted(unknown)}")
        facts_model = _facts_model(tool_name, facts)
        if compensation is not None and (read_only or not inspect.iscoroutinefunction(compensation)):
            raise TypeError(f"{tool_name}: a compensation is an async def, on a tool with a side effect")
        for amount, currency in (money or {}).items():
            if amount not in args_model.model_fields or currency not in args_model.model_fields:
                raise ValueError(f"{tool_name}: money names unknown argument(s) {amount!r} / {currency!r}")
        description = inspect.cleandoc(function.__doc__ or "").strip()
        if not description:
            raise ValueError(f"{tool_name}: a tool needs a docstring; it is the description the model reads")
        spec = ToolSpec(
            name=tool_name,
            description=description,
            requires=requires,
            args_model=args_model,
            result_model=result_model,
            handler=typing.cast(Handler, function),
            read_only=read_only,
            destructive=destructive,
            idempotent=idempotent or read_only,
            open_world=open_world or external is not None,
            sensitive=frozenset(sensitive),
            title=title,
            facts=facts,
            facts_model=facts_model,
            money=tuple((money or {}).items()),
            compensation=compensation,
            external=external,
        )
        setattr(function, MARK, spec)
        return function

    return decorate


def _facts_model(tool_name: str, loader: FactsLoader | None) -> type[Facts] | None:
    if loader is None:
        return None
    if not inspect.iscoroutinefunction(loader):
        raise TypeError(f"{tool_name}: a facts loader must be an async def")
    returned = typing.get_type_hints(loader).get("return")
    if not (isinstance(returned, type) and issubclass(returned, Facts)):
        raise TypeError(f"{tool_name}: the facts loader must be annotated to return a Facts model")
    return returned


# --- suspensions, for the security team's tools (tools/principals.py; docs/operations.md, "Suspensions") ----------

from server.guards import suspension as _suspension  # noqa: E402 - the public toolkit's tail, after its own names
from server.guards.store import SUSPENSION_KINDS as SUSPENSION_KINDS  # noqa: E402
from server.guards.store import Suspension as Suspension  # noqa: E402
from server.guards.suspension import SuspensionError as SuspensionError  # noqa: E402
from server.guards.suspension import Target as Target  # noqa: E402

active_suspensions = _suspension.active
suspend_target = _suspension.suspend
resume_suspension = _suspension.resume
