"""One pass over a call's rules (``prepare``) decides exactly as ``ledger_needs`` then ``decide``; what it keeps from
the first step never outlives the call, and what a compiled policy words once follows a reloaded file."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from scopes.money import MINOR_UNITS, Money, MoneyError
from scopes.policy import DecisionRequest, decide, ledger_needs, load_policy, prepare
from scopes.policy.limits import show_units
from server.policy_runtime import PolicyRuntime
from tests.policy.support import LARGE, caller, eur, order_facts, policy, refund

DEFAULT = load_policy()

PER_CUSTOMER = """
    version = "per-customer"
    [budgets.customer_daily]
    per = "facts.customer_id"
    window = "day"
    limit = { EUR = "100.00" }
    [budgets.agent_calls]
    per = "principal"
    window = "rolling 2 hours"
    count = 2
    [[rules]]
    id = "customer-daily"
    kind = "budget"
    tools = ["refund_create"]
    budget = "customer_daily"
    amount = "args.amount"
    above = "approval"
    [[rules]]
    id = "agent-calls"
    kind = "budget"
    tools = ["refund_create"]
    when = [{ path = "args.amount", gt = "10.00" }]
    budget = "agent_calls"
"""


def _requests() -> Iterator[DecisionRequest]:
    for amount in ("0.01", "10.00", "50.00", "100.01", "1000.01", "5000.01"):
        for who in (caller(), caller(LARGE)):
            for used in ("0", "460.00", "500.00"):
                usage = {"agent_refunds_daily": eur(used), "customer_refunds_30d": eur("280.00")}
                yield refund(amount, who=who, usage=usage)
                yield refund(amount, who=who, usage=usage, facts=order_facts(currency="USD"))
                yield replace(refund(amount, who=who, usage=usage), approved=frozenset({"refund-customer-30d"}))
                yield refund(amount, who=who, usage=usage, facts={})
                yield refund(amount, who=who, usage={})
                yield refund(amount, who=who, usage={"agent_refunds_daily": 3, "customer_refunds_30d": eur("1")})


@pytest.mark.parametrize("text", [None, PER_CUSTOMER], ids=["default policy", "budgets with when and per fact"])
def test_a_prepared_call_needs_the_same_totals_and_gets_the_same_decision_as_the_two_steps(text: str | None) -> None:
    p = DEFAULT if text is None else policy(text)
    for request in _requests():
        prepared = prepare(p, request)
        assert prepared.needs == ledger_needs(p, request)
        assert prepared.decide(request.usage) == decide(p, request)


def test_a_budget_whose_key_cannot_be_worked_out_is_not_read_and_its_rule_is_an_error_once_decided() -> None:
    p = policy(PER_CUSTOMER)
    request = refund("50.00", facts={}, usage={})
    prepared = prepare(p, request)
    assert [need.budget for need in prepared.needs] == ["agent_calls"]
    decision = prepared.decide({"agent_calls": 0})
    errors = {r.rule_id: r.internal for r in decision.errors}
    assert errors == {"customer-daily": "budget customer_daily: facts.customer_id has no value to keep a total for"}
    assert (decision.effect, decision.error) == ("deny", True)


def test_the_totals_given_to_a_prepared_call_are_the_ones_its_decision_reads() -> None:
    p = policy(PER_CUSTOMER)
    prepared = prepare(p, refund("50.00", usage={}))
    assert prepared.decide({"customer_daily": eur("50.00"), "agent_calls": 0}).effect == "allow"
    assert prepared.decide({"customer_daily": eur("50.01"), "agent_calls": 0}).effect == "approval"
    assert prepared.decide({"customer_daily": eur("0"), "agent_calls": 2}).effect == "deny"


def test_an_amount_is_shown_exactly_as_money_spells_it_in_every_currency() -> None:
    amounts = [*range(-1200, 1200, 7), 0, 1, 99, 100, 10**17, 10**18, -(10**18), 10**20 + 5]
    for currency in MINOR_UNITS:
        for minor in amounts:
            assert show_units(minor, currency) == str(Money.from_minor(minor, currency))
    assert (show_units(7, "count"), show_units(7, "quantity")) == ("7", "7")


WINDOW = """
    version = "{version}"
    [budgets.agent_calls]
    per = "principal"
    window = "{window}"
    count = 5
    [[rules]]
    id = "agent-calls"
    kind = "budget"
    tools = ["refund_create"]
    budget = "agent_calls"
"""


def test_a_reloaded_policy_words_its_new_window_in_the_notes(tmp_path: Path) -> None:
    path, clock = tmp_path / "policy.toml", [0.0]
    path.write_text(textwrap.dedent(WINDOW.format(version="v1", window="rolling 30 days")))
    runtime = PolicyRuntime(path, check_every=1.0, monotonic=lambda: clock[0])
    request = refund("1.00", usage={"agent_calls": 1})
    assert "3 more left in the last 30 days after this call" in decide(runtime.current(), request).reason
    path.write_text(textwrap.dedent(WINDOW.format(version="v2", window="rolling 7 days")))
    clock[0] = 1.0
    assert "3 more left in the last 7 days after this call" in decide(runtime.current(), request).reason
    path.write_text(textwrap.dedent(WINDOW.format(version="v3", window="day")))
    clock[0] = 2.0
    assert "3 more left today after this call" in decide(runtime.current(), request).reason


def test_an_amount_built_from_minor_units_is_the_money_its_checked_constructor_builds() -> None:
    for currency, digits in MINOR_UNITS.items():
        for minor in (-150_001, -1, 0, 1, 99, 100, 12_345, 10**20 + 7):
            built = Money.from_minor(minor, currency)
            checked = Money(Decimal(minor).scaleb(-digits), currency)
            assert (built, repr(built), built.minor, hash(built)) == (checked, repr(checked), minor, hash(checked))
    with pytest.raises(MoneyError, match="unknown currency 'XXX'"):
        Money.from_minor(1, "XXX")
