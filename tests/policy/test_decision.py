"""The decision function as pure code: boundaries, tiers, token limits, fail-closed errors, combination, windows."""

from __future__ import annotations

import random
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scopes.money import Money
from scopes.policy import DEFAULT_POLICY, Decision, DecisionRequest, decide, ledger_needs, load_policy
from scopes.policy.policy import policy_from_mapping
from tests.policy.support import LARGE, NOW, caller, eur, order_facts, policy, refund

DEFAULT = load_policy()


def _summary(decision: Decision) -> tuple[Any, ...]:
    return (
        decision.effect,
        decision.reason_code,
        decision.rule_id,
        decision.reason,
        decision.would_allow,
        decision.error,
        decision.spends,
        tuple((r.rule_id, r.outcome) for r in decision.shadow_blocks),
    )


@pytest.mark.parametrize(
    ("amount", "currency", "effect"),
    [
        ("99.99", "EUR", "allow"),
        ("100.00", "EUR", "allow"),
        ("100.01", "EUR", "approval"),
        ("14999", "JPY", "allow"),
        ("15000", "JPY", "allow"),
        ("15001", "JPY", "approval"),
    ],
)
def test_the_per_call_cap_allows_up_to_and_including_the_cap_and_sends_a_cent_above_to_approval(
    amount: str, currency: str, effect: str
) -> None:
    facts = (
        order_facts(currency=currency, refundable_left=Money.parse("900000", currency)) if currency == "JPY" else None
    )
    assert decide(DEFAULT, refund(amount, currency, facts=facts)).effect == effect


def test_a_larger_scope_raises_the_cap_and_the_refusal_names_that_scope() -> None:
    standard = decide(DEFAULT, refund("150.00"))
    large = decide(DEFAULT, refund("150.00", who=caller(LARGE)))
    assert (standard.effect, standard.reason_code, standard.rule_id) == (
        "approval",
        "cap_exceeded",
        "refund-per-call-cap",
    )
    assert "needs approval above 100.00 EUR" in standard.would_allow
    assert "a token with scope refunds:create:large (up to 1000.00 EUR per call)" in standard.would_allow
    assert large.effect == "allow"


def test_above_the_ceiling_is_denied_even_for_the_large_tier() -> None:
    at = decide(DEFAULT, refund("5000.00", who=caller(LARGE)))
    above = decide(DEFAULT, refund("5000.01", who=caller(LARGE)))
    assert at.effect == "approval"
    assert (above.effect, above.reason_code) == ("deny", "above_ceiling")


@pytest.mark.parametrize(
    ("used", "amount", "effect"),
    [("460.00", "39.99", "allow"), ("460.00", "40.00", "allow"), ("460.00", "40.01", "deny")],
)
def test_the_daily_budget_holds_at_the_cap_a_cent_below_and_a_cent_above(used: str, amount: str, effect: str) -> None:
    decision = decide(
        DEFAULT, refund(amount, usage={"agent_refunds_daily": eur(used), "customer_refunds_30d": eur("0")})
    )
    assert decision.effect == effect
    if effect == "deny":
        assert (decision.reason_code, decision.rule_id) == ("budget_exceeded", "refund-agent-daily")
        assert decision.would_allow[0].startswith("40.00 EUR left today (resets at midnight Europe/Amsterdam")
        assert decision.details["left"] == "40.00 EUR"


def test_an_allowed_call_carries_the_spends_to_reserve_with_their_caps() -> None:
    decision = decide(
        DEFAULT, refund("40.00", usage={"agent_refunds_daily": eur("460.00"), "customer_refunds_30d": eur("0")})
    )
    caps = {spend.ledger.budget: (spend.amount, spend.cap) for spend in decision.spends}
    assert caps == {"agent_refunds_daily": (4000, 50000), "customer_refunds_30d": (4000, 30000)}


def test_a_budget_kept_for_a_customer_does_not_reveal_how_much_the_customer_already_received() -> None:
    decision = decide(
        DEFAULT, refund("50.01", usage={"agent_refunds_daily": eur("0"), "customer_refunds_30d": eur("250.00")})
    )
    assert (decision.effect, decision.rule_id) == ("approval", "refund-customer-30d")
    text = " ".join((decision.reason, *decision.would_allow, *decision.details.values()))
    assert "250.00" not in text and "49.99" not in text
    assert "300.00 EUR" in text


def test_the_day_boundary_is_midnight_in_the_policys_time_zone_not_utc() -> None:
    before = datetime(2025, 6, 2, 21, 59, 59, tzinfo=UTC)  # 23:59:59 in Amsterdam (CEST, UTC+2)
    after = before + timedelta(seconds=1)
    days = {
        when: next(
            k.window for k in ledger_needs(DEFAULT, refund("1.00", now=when)) if k.budget == "agent_refunds_daily"
        )
        for when in (before, after)
    }
    assert days == {before: "2025-06-02", after: "2025-06-03"}
    denied = decide(
        DEFAULT,
        refund("1.00", now=before, usage={"agent_refunds_daily": eur("500.00"), "customer_refunds_30d": eur("0")}),
    )
    assert denied.details["resets_at"] == "2025-06-03T00:00:00+02:00"


def test_a_rolling_window_starts_exactly_thirty_days_before_now() -> None:
    (customer,) = [k for k in ledger_needs(DEFAULT, refund("1.00")) if k.budget == "customer_refunds_30d"]
    assert (customer.key, customer.window, customer.since) == ("cus_1", "rolling", NOW - timedelta(days=30))


def test_the_tokens_lower_limit_applies_and_a_higher_one_changes_nothing() -> None:
    def token(value: str, currency: str = "EUR") -> Any:
        details = ({"type": "refund", "max_amount": {"value": value, "currency": currency}},)
        return caller(authorization_details=details)

    assert decide(DEFAULT, refund("50.00", who=token("50.00"))).effect == "allow"
    lower = decide(DEFAULT, refund("50.01", who=token("50.00")))
    assert (lower.effect, lower.reason_code) == ("deny", "token_limit_exceeded")
    assert lower.would_allow == ("amounts up to 50.00 EUR per call",)
    higher = decide(DEFAULT, refund("100.01", who=token("500.00")))
    assert (higher.effect, higher.reason_code) == ("approval", "cap_exceeded")
    other_currency = decide(
        DEFAULT,
        refund(
            "1.00",
            "USD",
            who=token("500.00"),
            facts=order_facts(currency="USD", refundable_left=Money.parse("10.00", "USD")),
        ),
    )
    assert (other_currency.effect, other_currency.reason_code) == ("deny", "token_limit_exceeded")


def test_malformed_authorization_details_deny_as_an_error() -> None:
    who = caller(authorization_details=({"type": "refund", "max_amount": "fifty"},))
    decision = decide(DEFAULT, refund("1.00", who=who))
    assert (decision.effect, decision.reason_code, decision.error) == ("deny", "policy_error", True)
    assert "malformed" in (decision.audit_reason or "")
    assert "malformed" not in decision.reason  # the caller learns that a rule failed, not how


def test_a_currency_without_a_cap_is_denied_as_an_error() -> None:
    facts = order_facts(currency="CHF", refundable_left=Money.parse("100.00", "CHF"))
    decision = decide(DEFAULT, refund("1.00", "CHF", facts=facts))
    assert (decision.effect, decision.reason_code, decision.error) == ("deny", "policy_error", True)
    assert "no limit for CHF" in (decision.audit_reason or "")


def test_a_missing_fact_denies_as_an_error() -> None:
    facts = order_facts()
    del facts["customer_id"]
    decision = decide(DEFAULT, refund("1.00", facts=facts))
    assert (decision.effect, decision.error, decision.rule_id) == ("deny", True, "refund-customer-30d")


def test_a_missing_ledger_total_denies_as_an_error() -> None:
    decision = decide(DEFAULT, refund("1.00", usage={}))
    assert (decision.effect, decision.error) == ("deny", True)


class _Exploding(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("the claims store is down")

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("the claims store is down")


RULES = """
    version = "t1"
    [[rules]]
    id = "region-matches"
    kind = "require"
    tools = ["refund_create"]
    require = [{ path = "principal.claims.region", eq = "eu" }]
    code = "wrong_region"
    message = "Only the EU desk refunds here."
    [[rules]]
    id = "status-is-ordered"
    kind = "require"
    tools = ["refund_create"]
    require = [{ path = "facts.status", lt = 3 }]
    code = "never"
    message = "unreachable"
"""


def test_a_rule_that_raises_anything_denies_and_is_recorded_as_an_error() -> None:
    p = policy(RULES)
    unexpected = decide(p, refund("1.00", who=caller(claims=_Exploding())))
    results = {r.rule_id: r for r in unexpected.results}
    assert results["region-matches"].outcome == "error"
    assert "RuntimeError: the claims store is down" in (results["region-matches"].internal or "")
    typed = results["status-is-ordered"]
    assert (typed.outcome, typed.internal) == ("error", "facts.status: cannot order text against number")
    assert (unexpected.effect, unexpected.error) == ("deny", True)


def test_a_deliberate_deny_is_reported_before_a_rule_error() -> None:
    decision = decide(policy(RULES), refund("1.00", who=caller(claims={"region": "us"})))
    assert (decision.effect, decision.reason_code, decision.error) == ("deny", "wrong_region", False)
    assert [r.rule_id for r in decision.errors] == ["status-is-ordered"]


def test_deny_wins_over_approval_and_approval_over_allow() -> None:
    over_cap_and_budget = refund(
        "150.00", usage={"agent_refunds_daily": eur("400.00"), "customer_refunds_30d": eur("0")}
    )
    decision = decide(DEFAULT, over_cap_and_budget)
    outcomes = {r.rule_id: r.outcome for r in decision.results if not r.shadow}
    assert (outcomes["refund-per-call-cap"], outcomes["refund-agent-daily"]) == ("approval", "deny")
    assert (decision.effect, decision.rule_id) == ("deny", "refund-agent-daily")
    assert decide(DEFAULT, refund("150.00")).effect == "approval"


def test_a_shadow_rule_is_evaluated_and_reported_but_never_blocks() -> None:
    decision = decide(DEFAULT, refund("60.00"))
    assert decision.effect == "allow"
    assert [(r.rule_id, r.outcome) for r in decision.shadow_blocks] == [("refund-per-call-cap-trial-50", "deny")]
    assert decide(DEFAULT, refund("50.00")).shadow_blocks == ()


def _requests() -> Iterator[DecisionRequest]:
    for amount in ("0.01", "49.99", "50.00", "100.00", "100.01", "999.99", "1000.01", "5000.01"):
        for who in (caller(), caller(LARGE)):
            for used in ("0", "460.00", "500.00"):
                for currency in ("EUR", "USD"):
                    usage = {"agent_refunds_daily": eur(used), "customer_refunds_30d": eur("280.00")}
                    yield refund(amount, who=who, usage=usage, facts=order_facts(currency=currency))


def test_the_order_of_rules_in_the_file_never_changes_a_decision() -> None:
    raw = tomllib.loads(DEFAULT_POLICY.read_text())
    baseline = [_summary(decide(DEFAULT, request)) for request in _requests()]
    shuffler = random.Random(20250602)  # noqa: S311 - a reproducible shuffle, not a secret
    for _ in range(6):
        rules = list(raw["rules"])
        shuffler.shuffle(rules)
        shuffled = policy_from_mapping({**raw, "rules": rules}, "shuffled", DEFAULT.digest)
        assert [_summary(decide(shuffled, request)) for request in _requests()] == baseline


def test_the_same_inputs_always_give_the_same_decision() -> None:
    request = refund("150.00", usage={"agent_refunds_daily": eur("460.00"), "customer_refunds_30d": eur("0")})
    assert decide(DEFAULT, request) == decide(DEFAULT, request)


SHARED = """
    version = "shared"
    [budgets.refunds_daily]
    per = "principal"
    window = "day"
    limit = { EUR = "500.00" }
    [[rules]]
    id = "refunds-daily"
    kind = "budget"
    tools = ["refund_create", "goodwill_credit"]
    budget = "refunds_daily"
    amount = "args.amount"
"""


def test_two_tools_spending_from_one_budget_read_and_spend_the_same_total() -> None:
    p = policy(SHARED)
    one = ledger_needs(p, refund("1.00"))
    other = ledger_needs(p, refund("1.00", tool="goodwill_credit"))
    assert one == other and len(one) == 1
    nearly_spent = {"refunds_daily": eur("499.99")}
    assert decide(p, refund("0.01", tool="goodwill_credit", usage=nearly_spent)).effect == "allow"
    assert decide(p, refund("0.02", tool="refund_create", usage=nearly_spent)).effect == "deny"


def test_an_approved_rule_passes_and_its_budget_spends_above_the_cap() -> None:
    request = refund("150.00", usage={"agent_refunds_daily": eur("0"), "customer_refunds_30d": eur("280.00")})
    assert decide(DEFAULT, request).effect == "approval"
    approved = decide(DEFAULT, replace(request, approved=frozenset({"refund-per-call-cap", "refund-customer-30d"})))
    assert approved.effect == "allow"
    caps = {spend.ledger.budget: spend.cap for spend in approved.spends}
    assert caps == {"agent_refunds_daily": 50000, "customer_refunds_30d": None}
    ceiling = refund("5000.01", who=caller(LARGE), usage=request.usage)
    assert decide(DEFAULT, replace(ceiling, approved=frozenset({"refund-per-call-cap"}))).effect == "deny"


def test_an_ownership_rule_can_refuse_as_if_the_record_did_not_exist() -> None:
    p = policy(
        """
        version = "own"
        [[rules]]
        id = "own-region-only"
        kind = "require"
        tools = ["refund_create"]
        require = [{ path = "facts.tenant", eq = { path = "principal.claims.org" } }]
        code = "foreign_record"
        message = "not yours"
        otherwise = "not_found"
        """
    )
    foreign = decide(p, refund("1.00", who=caller(claims={"org": "globex"})))
    assert (foreign.effect, foreign.conceal, foreign.would_allow, foreign.details) == ("deny", True, (), {})
    assert decide(p, refund("1.00", who=caller(claims={"org": "acme"}))).effect == "allow"


def test_a_clock_without_a_time_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(DEFAULT, refund("1.00", now=datetime(2025, 6, 2, 10, 0)))
