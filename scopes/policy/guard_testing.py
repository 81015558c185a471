"""Policy tests for the guards (``[[guard_cases]]`` in a suite, run by ``mandate policy test``): given how many
calls, denials or approval requests a principal makes within one window, or what share of a budget it has spent,
which rate limit refuses it and which circuit breakers trip. The same compiled rules the server applies
(:mod:`scopes.policy.guards`), without a database: counting is the server's job, the thresholds are the policy's.

```toml
[[guard_cases]]
name = "the fourth refund in a minute is refused"
principal = "refunds_agent"
tool = "refund_create"
calls = 4
expect = { limited_by = "refunds-per-minute" }

[[guard_cases]]
name = "twenty denials trip the storm breaker"
principal = "refunds_agent"
denials = 20
expect = { trips = ["denial-storm"], suspends = true }
```
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scopes.policy.guards import Breaker, Guards
from scopes.policy.values import Caller


class _Strict(BaseModel):
    model_config: ClassVar[ConfigDict] = ConfigDict(extra="forbid", strict=True, frozen=True)


class GuardExpect(_Strict):
    limited_by: str | None = None
    """The rate limit that refuses the last of ``calls`` ("" or absent: none does)."""
    trips: list[str] | None = None
    """The breakers that trip, exactly (shadow ones included)."""
    suspends: bool | None = None
    """Whether a tripping breaker is enforced (suspends the agent)."""


class GuardCase(_Strict):
    name: Annotated[str, Field(min_length=1)]
    principal: str
    tool: str | None = None
    calls: Annotated[int, Field(ge=0)] = 0
    denials: Annotated[int, Field(ge=0)] = 0
    approval_requests: Annotated[int, Field(ge=0)] = 0
    budget_share: dict[str, float] = Field(default_factory=dict[str, float])
    """Spent share of each named budget, e.g. ``{ agent_refunds_daily = 0.6 }``."""
    expect: GuardExpect

    @model_validator(mode="after")
    def _something(self) -> GuardCase:
        if self.calls and self.tool is None:
            raise ValueError("calls need the tool they call")
        return self


def holder_of(caller: Caller, per: str) -> str | None:
    return {"principal": caller.subject, "client": caller.client_id, "tenant": caller.tenant}[per]


def run_guard_case(case: GuardCase, guards: Guards, caller: Caller) -> list[str]:
    """What differs from the case's expectation (nothing: it passes)."""
    problems: list[str] = []
    if case.calls:
        limited = ""
        for limit in (*guards.limits_for(None), *guards.limits_for(case.tool)):
            if not limit.shadow and holder_of(caller, limit.per) is not None and case.calls > limit.calls:
                limited = limit.id
                break
        want = case.expect.limited_by or ""
        if limited != want:
            problems.append(f"expected {want or 'no limit'} to refuse call {case.calls}, got {limited or 'none'}")
    tripped = [breaker.id for breaker in guards.breakers if _trips(breaker, case)]
    if case.expect.trips is not None and sorted(tripped) != sorted(case.expect.trips):
        problems.append(f"expected breakers {sorted(case.expect.trips)} to trip, got {sorted(tripped)}")
    if case.expect.suspends is not None:
        suspends = any(b.id in tripped and not b.shadow for b in guards.breakers)
        if suspends != case.expect.suspends:
            problems.append(f"expected suspends={case.expect.suspends}, got {suspends}")
    return problems


def _trips(breaker: Breaker, case: GuardCase) -> bool:
    if breaker.on == "budget_share":
        spent = case.budget_share.get(breaker.budget or "")
        return spent is not None and breaker.share is not None and spent >= breaker.share
    count = case.denials if breaker.on == "denials" else case.approval_requests
    return breaker.threshold is not None and count >= breaker.threshold
