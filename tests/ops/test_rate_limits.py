"""Slow: rate limits and the open-approvals limit are policy data, counted in the database; a full per-tool limit
is a tool error with ``retry_after_seconds``, a full principal-wide one too where there is no HTTP (stdio, in
process); over HTTP it is a 429 with Retry-After (tests/ops/test_http_edge.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scopes.policy import PolicyError, parse_policy
from scopes.policy.lint import lint
from server.config import Settings
from server.policy_runtime import vocabulary_of
from tests.ops.support import BIG_REFUND, REFUND, body, code, guarded, write_policy

pytestmark = pytest.mark.anyio

AGENT = ("customers:read", "orders:read", "refunds:create")

PER_TOOL = """
[[rate_limits]]
id = "refunds-per-minute"
per = "principal"
tools = ["refund_create"]
calls = 3
window = "1 minute"
"""

PRINCIPAL_WIDE = """
[[rate_limits]]
id = "calls-per-minute"
per = "client"
calls = 4
window = "1 minute"
"""


async def test_a_per_tool_limit_answers_a_tool_error_with_retry_after_seconds(settings: Settings) -> None:
    async with guarded(settings, PER_TOOL) as harness:
        async with harness.client("refunds", scopes=AGENT) as agent:
            answers = [await agent.call_tool("refund_create", REFUND) for _ in range(5)]
            assert [a.is_error for a in answers] == [False, False, False, True, True]
            refused = body(answers[3])
            assert refused["code"] == "rate_limited"
            assert 1 <= refused["details"]["retry_after_seconds"] <= 60
            assert refused["details"]["limit"] == "refunds-per-minute" and refused["details"]["scope"] == "tool"
            assert not (await agent.call_tool("order_get", {"order_id": "ord_5001"})).is_error  # other tools are free
        async with harness.client("refunds", scopes=AGENT, subject="agent:other") as other:  # another principal
            assert not (await other.call_tool("refund_create", REFUND)).is_error


async def test_a_principal_wide_limit_counts_every_tool_and_is_a_tool_error_without_http(settings: Settings) -> None:
    async with guarded(settings, PRINCIPAL_WIDE) as harness:
        async with harness.client("refunds", scopes=AGENT) as agent:
            tools = ["order_get", "orders_list", "refund_create", "order_get", "order_get"]
            arguments = [{"order_id": "ord_5001"}, {"customer_id": "cus_1001"}, REFUND, {"order_id": "ord_5001"}] * 2
            answers = [await agent.call_tool(tool, args) for tool, args in zip(tools, arguments, strict=False)]
            assert [code(a) for a in answers] == [None, None, None, None, "rate_limited"]
            assert body(answers[-1])["details"]["scope"] == "principal"
        metrics = harness.mandate.metrics.registry
        assert (
            metrics.get_sample_value(
                "mandate_rate_limited_calls_total",
                {"limit": "calls-per-minute", "scope": "principal", "mode": "enforce"},
            )
            == 1.0
        )


async def test_a_refused_call_uses_up_no_allowance(settings: Settings) -> None:
    both = PER_TOOL + PRINCIPAL_WIDE.replace("calls = 4", "calls = 100")
    async with guarded(settings, both) as harness:
        async with harness.client("refunds", scopes=AGENT) as agent:
            for _ in range(6):
                await agent.call_tool("refund_create", REFUND)
        async with harness.mandate.db.session() as session:
            from sqlmodel import select

            from server.guards.store import GuardCounter

            counts = {row.name: row.count for row in (await session.exec(select(GuardCounter))).all()}
        # three refunds were let through; the refused three rolled back their principal-wide count too
        assert counts == {"rate:refunds-per-minute": 3, "rate:calls-per-minute": 3}


async def test_a_shadow_limit_lets_calls_through_and_counts_them(settings: Settings) -> None:
    shadow = PER_TOOL.replace('window = "1 minute"', 'window = "1 minute"\nmode = "shadow"')
    async with guarded(settings, shadow) as harness:
        async with harness.client("refunds", scopes=AGENT) as agent:
            answers = [await agent.call_tool("refund_create", REFUND) for _ in range(5)]
        assert not any(a.is_error for a in answers)
        labels = {"limit": "refunds-per-minute", "scope": "tool", "mode": "shadow"}
        assert harness.mandate.metrics.registry.get_sample_value("mandate_rate_limited_calls_total", labels) == 2.0


async def test_open_approval_requests_per_requester_are_limited(settings: Settings) -> None:
    extra = "[approvals]\nmax_open_per_requester = 2\n"
    async with guarded(settings, extra) as harness:
        async with harness.client("refunds", scopes=AGENT) as agent:
            answers = []
            for amount in ("150.00", "151.00", "152.00"):
                answers.append(await agent.call_tool("refund_create", {**BIG_REFUND, "amount": amount}))
            assert [body(a).get("status") for a in answers[:2]] == ["pending_approval", "pending_approval"]
            assert code(answers[2]) == "too_many_open_approvals"
            assert "2 requests waiting" in body(answers[2])["message"]
        async with harness.client("refunds", scopes=AGENT, subject="agent:other") as other:  # per requester
            assert body(await other.call_tool("refund_create", BIG_REFUND)).get("status") == "pending_approval"


def test_bad_rate_limits_and_breakers_are_refused_with_their_place() -> None:
    bad = b"""
version = "t"
[[rate_limits]]
id = "a"
calls = 0
window = "3 weeks"
[[rate_limits]]
id = "a"
calls = 1
window = "10 seconds"
[[breakers]]
id = "b"
on = "budget_share"
budget = "nope"
share = 0.5
[[breakers]]
id = "c"
on = "denials"
"""
    with pytest.raises(PolicyError) as error:
        parse_policy(bad, "p.toml")
    text = str(error.value)
    assert "p.toml: field rate_limits[0].calls: Input should be greater than or equal to 1" in text
    assert "rate_limits[0].window: '3 weeks' is not a duration" in text
    assert 'breakers[1]: on = "denials" needs threshold and window' in text


def test_duplicate_ids_and_unknown_budgets_are_named() -> None:
    bad = b"""
version = "t"
[[rate_limits]]
id = "a"
calls = 1
window = "10 seconds"
[[rate_limits]]
id = "a"
calls = 2
window = "10 seconds"
[[breakers]]
id = "b"
on = "budget_share"
budget = "nope"
share = 0.5
"""
    with pytest.raises(PolicyError) as error:
        parse_policy(bad, "p.toml")
    assert "p.toml: rate limit 'a' (rate_limits[1]): field id: already used" in str(error.value)
    assert "p.toml: breaker 'b' (breakers[0]): field budget: unknown budget 'nope'" in str(error.value)


def test_policy_check_warns_about_a_rate_limit_on_a_tool_the_server_does_not_publish(settings: Settings) -> None:
    from server.app import load_tool_catalog

    path = write_policy(settings.data_dir / "p", PER_TOOL.replace('["refund_create"]', '["refund_crate"]'))
    policy = parse_policy(path.read_bytes(), str(path))
    warnings = lint(policy, vocabulary_of(load_tool_catalog(settings)))
    assert "rate limit 'refunds-per-minute': names tool 'refund_crate', which this server does not publish" in warnings


async def test_policy_check_lists_the_guards_and_warns_about_shadow_breakers(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    import anyio

    from server.cli import main

    extra = PER_TOOL + '[[breakers]]\nid = "storm"\non = "denials"\nthreshold = 5\nwindow = "1 hour"\n'
    path = write_policy(settings.data_dir / "p", extra)
    assert await anyio.to_thread.run_sync(main, ["policy", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "guards: 1 rate limits, 1 circuit breakers, open approvals per requester: unlimited" in out
    assert "warning: breaker 'storm' is in shadow mode: it records and alerts but suspends no one" in out


async def test_policy_test_runs_guard_cases_and_reports_a_wrong_expectation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import anyio

    from server.cli import main

    suite = Path(__file__).parent / "data" / "guards-suite.toml"
    assert await anyio.to_thread.run_sync(main, ["policy", "test", str(suite)]) == 0
    assert "7 passed, 0 failed" in capsys.readouterr().out
    wrong = tmp_path / "wrong.toml"
    text = suite.read_text().replace(
        'calls = 4\nexpect = { limited_by = "refunds-per-minute" }', "calls = 4\nexpect = {}"
    )
    wrong.write_text(text.replace('policy = "guards-policy.toml"', f'policy = "{suite.parent / "guards-policy.toml"}"'))
    assert await anyio.to_thread.run_sync(main, ["policy", "test", str(wrong)]) == 1
    assert "expected no limit to refuse call 4, got refunds-per-minute" in capsys.readouterr().out
