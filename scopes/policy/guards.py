"""Rate limits, the open-approvals limit and circuit breakers: the parts of a policy file that bound how fast an
agent may act and when it is stopped automatically (docs/operations.md, "Rate limits" and "Circuit breakers").

Shape (pydantic, strict, errors name their place: ``rate_limits[1].window``) and the compiled, I/O-free values the
server's guards (:mod:`server.guards`) apply. Counting happens in the database (one counter row per window, raised
by a conditional upsert), so this module only says *what* to count and *when* a count is too many.

- ``[[rate_limits]]``: at most ``calls`` tools/call per fixed ``window`` for each ``per`` (``principal``,
  ``client`` or ``tenant``); with ``tools`` only those tools count (a per-tool limit, answered with a tool error),
  without it every call counts (a principal-wide limit, answered with HTTP 429 over HTTP).
- ``[approvals] max_open_per_requester``: how many approval requests one requester may have pending at once.
- ``[[breakers]]``: when a ``per`` passes ``threshold`` denials or approval requests within ``window``, or spends
  ``share`` of a budget, it is suspended pending a human; ``mode = "shadow"`` records and alerts but suspends no one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from scopes.policy.values import parse_duration as parse_policy_duration

GuardId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
ToolName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Holder = Literal["principal", "client", "tenant"]


_SECONDS = re.compile(r"^([1-9][0-9]{0,5}) ?(second|seconds)$")


def parse_duration(text: str) -> timedelta:
    """A policy duration (``"15 minutes"``), or seconds (``"10 seconds"``), which rate windows need."""
    match = _SECONDS.fullmatch(text.strip())
    if match:
        return timedelta(seconds=int(match.group(1)))
    try:
        return parse_policy_duration(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration; write e.g. '10 seconds', '1 minute' or '1 hour'") from None


def _window(text: str) -> str:
    window = parse_duration(text)
    if window < timedelta(seconds=1) or window > timedelta(days=1):
        raise ValueError(f"{text!r}: a window is between 1 second and 1 day")
    return text


WindowText = Annotated[str, AfterValidator(_window)]


class _Strict(BaseModel):
    model_config: ClassVar[ConfigDict] = ConfigDict(extra="forbid", strict=True, frozen=True)


class RateLimitModel(_Strict):
    id: GuardId
    description: str = ""
    per: Holder = "principal"
    calls: Annotated[int, Field(ge=1, le=1_000_000)]
    window: WindowText
    tools: Annotated[list[ToolName], Field(min_length=1)] | None = None
    """Only these tools count (a per-tool limit); absent: every tools/call counts (principal-wide)."""
    mode: Literal["enforce", "shadow"] = "enforce"


class ApprovalLimitsModel(_Strict):
    max_open_per_requester: Annotated[int, Field(ge=1, le=100_000)] | None = None
    """Pending approval requests one requester (issuer, client, subject) may have at once; beyond it, deny."""


class BreakerModel(_Strict):
    id: GuardId
    description: str = ""
    per: Literal["principal", "client"] = "principal"
    on: Literal["denials", "approval_requests", "budget_share"]
    threshold: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    """Denials or approval requests within ``window`` that trip the breaker."""
    window: WindowText | None = None
    budget: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")] | None = None
    share: Annotated[float, Field(gt=0, le=1)] | None = None
    """``on = "budget_share"``: the share of ``budget`` (0 < share <= 1) that trips the breaker."""
    mode: Literal["enforce", "shadow"] = "shadow"
    """Breakers start in shadow mode: they record, count and alert, but suspend no one until set to "enforce"."""

    @model_validator(mode="after")
    def _coherent(self) -> BreakerModel:
        if self.on == "budget_share":
            if self.budget is None or self.share is None:
                raise ValueError('on = "budget_share" needs budget and share (e.g. share = 0.8)')
            if self.threshold is not None or self.window is not None:
                raise ValueError('on = "budget_share" takes no threshold or window (the budget has its window)')
        else:
            if self.threshold is None or self.window is None:
                raise ValueError(f'on = "{self.on}" needs threshold and window (e.g. threshold = 20, window = ...)')
            if self.budget is not None or self.share is not None:
                raise ValueError(f'on = "{self.on}" takes no budget or share')
        return self


@dataclass(frozen=True, slots=True)
class RateLimit:
    id: str
    per: str
    calls: int
    window: timedelta
    tools: frozenset[str] | None
    shadow: bool

    @property
    def principal_wide(self) -> bool:
        return self.tools is None

    def applies_to(self, tool: str) -> bool:
        return self.tools is None or tool in self.tools


@dataclass(frozen=True, slots=True)
class Breaker:
    id: str
    per: str
    on: str
    shadow: bool
    threshold: int | None = None
    window: timedelta | None = None
    budget: str | None = None
    share: float | None = None

    def trips_at_count(self, count: int) -> bool:
        """Exactly the call that brings the count to the threshold trips (once per window, whoever counts)."""
        return self.threshold is not None and count == self.threshold

    def trips_at_share(self, spent: int, limit: int) -> bool:
        return self.share is not None and limit > 0 and spent >= self.share * limit


@dataclass(frozen=True, slots=True)
class Guards:
    rate_limits: tuple[RateLimit, ...] = ()
    breakers: tuple[Breaker, ...] = ()
    max_open_approvals: int | None = None

    def limits_for(self, tool: str | None) -> tuple[RateLimit, ...]:
        """The principal-wide limits (``tool=None``), or those a call of ``tool`` counts against beyond them."""
        if tool is None:
            return tuple(limit for limit in self.rate_limits if limit.principal_wide)
        return tuple(limit for limit in self.rate_limits if not limit.principal_wide and limit.applies_to(tool))


def compile_guards(
    rate_limits: list[RateLimitModel],
    breakers: list[BreakerModel],
    approvals: ApprovalLimitsModel,
    budgets: frozenset[str],
    source: str,
) -> tuple[Guards, list[str]]:
    """The compiled guards and the problems found across entries (duplicate ids, unknown budgets)."""
    problems: list[str] = []
    seen: set[str] = set()
    for index, limit in enumerate(rate_limits):
        if limit.id in seen:
            problems.append(f"{source}: rate limit {limit.id!r} (rate_limits[{index}]): field id: already used")
        seen.add(limit.id)
    seen = set()
    for index, breaker in enumerate(breakers):
        place = f"{source}: breaker {breaker.id!r} (breakers[{index}])"
        if breaker.id in seen:
            problems.append(f"{place}: field id: already used")
        seen.add(breaker.id)
        if breaker.budget is not None and breaker.budget not in budgets:
            known = ", ".join(sorted(budgets)) or "none"
            problems.append(f"{place}: field budget: unknown budget {breaker.budget!r}; budgets defined: {known}")
    guards = Guards(
        rate_limits=tuple(
            RateLimit(
                id=m.id,
                per=m.per,
                calls=m.calls,
                window=parse_duration(m.window),
                tools=frozenset(m.tools) if m.tools is not None else None,
                shadow=m.mode == "shadow",
            )
            for m in rate_limits
        ),
        breakers=tuple(
            Breaker(
                id=m.id,
                per=m.per,
                on=m.on,
                shadow=m.mode == "shadow",
                threshold=m.threshold,
                window=parse_duration(m.window) if m.window else None,
                budget=m.budget,
                share=m.share,
            )
            for m in breakers
        ),
        max_open_approvals=approvals.max_open_per_requester,
    )
    return guards, problems
