"""`kind = "cap"` on a plain quantity (`max`): loyalty points, items, seats, with tiers, approval and a ceiling."""

from __future__ import annotations

import pytest

from scopes.policy import DecisionRequest, PolicyError, decide
from tests.policy.support import NOW, caller, policy

POINTS = policy(
    """
    version = "points-1"

    [[rules]]
    id = "points-per-call"
    kind = "cap"
    tools = ["points_grant"]
    amount = "args.points"
    max = 500
    tiers = [{ scope = "points:grant:large", max = 2000 }]
    above = "approval"
    ceiling = 5000
    """
)


def grant(points: object, scopes: frozenset[str] = frozenset({"points:grant"})) -> DecisionRequest:
    return DecisionRequest(
        tool="points_grant",
        args={"customer_id": "cus_1", "points": points},
        caller=caller(scopes),
        now=NOW,
        facts={},
        usage={},
    )


@pytest.mark.parametrize(("points", "effect"), [(0, "allow"), (500, "allow"), (501, "approval"), (5000, "approval")])
def test_a_points_cap_allows_up_to_the_max_and_sends_more_to_approval(points: int, effect: str) -> None:
    assert decide(POINTS, grant(points)).effect == effect


def test_above_the_ceiling_no_approval_can_lift_it() -> None:
    decision = decide(POINTS, grant(5001))
    assert (decision.effect, decision.reason_code) == ("deny", "above_ceiling")
    assert "5001 is above the ceiling of 5000 per call" in decision.reason


def test_a_larger_scope_raises_the_max_and_the_refusal_names_that_scope() -> None:
    assert decide(POINTS, grant(1500, frozenset({"points:grant", "points:grant:large"}))).effect == "allow"
    decision = decide(POINTS, grant(1500))
    assert decision.effect == "approval"
    assert "a token with scope points:grant:large (up to 2000 per call)" in decision.would_allow


@pytest.mark.parametrize("points", ["500", 2.5, True, None])
def test_a_value_that_is_not_a_whole_number_fails_closed(points: object) -> None:
    decision = decide(POINTS, grant(points))
    assert (decision.effect, decision.error) == ("deny", True)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ('amount = "args.points"\nmax = 5\nlimit = { EUR = "1.00" }', "exactly one of 'limit'"),
        ('amount = "args.points"', "exactly one of 'limit'"),
        ('amount = "args.points"\nmax = 5\ntiers = [{ scope = "a:b", limit = { EUR = "1.00" } }]', "gives 'max'"),
        ('amount = "args.points"\nmax = 5\nabove = "approval"\nceiling = { EUR = "1.00" }', "ceiling is a number"),
        ('amount = "args.points"\nmax = -1', "greater than or equal to 0"),
    ],
)
def test_an_incoherent_quantity_cap_is_refused_at_load(body: str, said: str) -> None:
    with pytest.raises(PolicyError) as refused:
        policy(f'version = "x"\n[[rules]]\nid = "c"\nkind = "cap"\ntools = ["points_grant"]\n{body}\n')
    assert said in str(refused.value)
