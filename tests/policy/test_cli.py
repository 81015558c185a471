"""``mandate policy check``, ``mandate policy test`` and ``mandate explain``, as a security team runs them."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from sqlmodel import func, select

from scopes.policy import DEFAULT_POLICY
from server.audit.models import AuditRecord
from server.cli import main
from server.storage.database import Database

SUITES = sorted((DEFAULT_POLICY.parent / "policy-tests").glob("*.toml"))


def test_the_default_policy_checks_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", "--strict"]) == 0
    out = capsys.readouterr().out
    assert "policy 2025.06.1+" in out and "valid" in out and "warning" not in out


def test_a_broken_policy_fails_the_check_naming_file_rule_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "policy.toml"
    broken.write_text(DEFAULT_POLICY.read_text().replace('JPY = "15000"', 'JPY = "150.5"', 1))
    assert main(["policy", "check", str(broken)]) == 2
    err = capsys.readouterr().err
    assert f"{broken}: rule 'refund-per-call-cap' (rules[0]): field limit: JPY: JPY has 0 decimal places" in err


def test_warnings_fail_the_check_only_when_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    typo = tmp_path / "policy.toml"
    typo.write_text(DEFAULT_POLICY.read_text().replace('tools = ["order_cancel"]', 'tools = ["order_cancle"]', 1))
    assert main(["policy", "check", str(typo)]) == 0
    assert main(["policy", "check", "--strict", str(typo)]) == 1
    assert "warning: rule 'order-cancel-open-only': names tool 'order_cancle'" in capsys.readouterr().out


@pytest.mark.parametrize("suite", SUITES, ids=[s.name for s in SUITES])
def test_the_shipped_policy_test_suites_pass(suite: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "test", str(suite)]) == 0, capsys.readouterr().out
    assert ", 0 failed" in capsys.readouterr().out


def test_a_failing_case_fails_the_run_and_says_what_differed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "suite.toml"
    suite.write_text(
        f"""
        policy = "{DEFAULT_POLICY}"
        now = 2025-06-02T10:00:00Z
        [principals.refunds]
        scopes = ["refunds:create"]
        [[cases]]
        name = "someone thought 100.01 was fine"
        principal = "refunds"
        tool = "refund_create"
        args = {{ order_id = "ord_1", amount = "100.01", currency = "EUR", reason = "damaged" }}
        facts = {{ order_id = "ord_1", customer_id = "cus_1", tenant = "acme", status = "delivered", currency = "EUR", \
placed_at = 2025-06-01T00:00:00Z, total = {{ amount = "500.00", currency = "EUR" }}, \
refunded = {{ amount = "0", currency = "EUR" }}, refundable_left = {{ amount = "500.00", currency = "EUR" }} }}
        expect = {{ decision = "allow" }}
        [[cases]]
        name = "arguments are validated like a real call"
        principal = "refunds"
        tool = "refund_create"
        args = {{ order_id = "ord_1", amount = 12.5, currency = "EUR", reason = "damaged" }}
        expect = {{ decision = "allow" }}
        """.replace("        ", "")
    )
    assert main(["policy", "test", str(suite)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  someone thought 100.01 was fine" in out
    assert "expected allow, got approval/cap_exceeded by refund-per-call-cap" in out
    assert "FAIL  arguments are validated like a real call" in out and "amount: Input should be a valid string" in out
    assert "0 passed, 2 failed" in out


def test_an_invalid_suite_names_the_case_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "suite.toml"
    suite.write_text(
        'now = 2025-06-02T10:00:00Z\n[[cases]]\nname = "c"\nprincipal = { scopes = [] }\ntool = "t"\n'
        'expect = { decision = "maybe" }\n'
    )
    assert main(["policy", "test", str(suite)]) == 2
    assert f"{suite}: case 'c' (cases[0]): field expect.decision" in capsys.readouterr().err


def _audit_count(url: str) -> int:
    async def count() -> int:
        db = Database(url)
        try:
            async with db.session() as session:
                return int((await session.exec(select(func.count()).select_from(AuditRecord))).one())
        finally:
            await db.dispose()

    return anyio.run(count)


def test_explain_prints_the_decision_and_its_reason_and_executes_nothing(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--data-dir", str(tmp_path / "data"), "--database-url", database_url]
    assert main(["seed", *where]) == 0
    before = _audit_count(database_url)
    arguments = json.dumps({"order_id": "ord_5001", "amount": "150.00", "currency": "EUR", "reason": "damaged"})
    capsys.readouterr()
    assert main(["explain", *where, "--agent", "refunds", "--tool", "refund_create", "--args", arguments]) == 0
    out = capsys.readouterr().out
    assert "decision:    APPROVAL" in out
    assert "rule:        refund-per-call-cap" in out
    assert "would allow: a token with scope refunds:create:large (up to 1000.00 EUR per call)" in out
    assert "ledger:      agent_refunds_daily = 0.00 EUR" in out
    assert (
        main(
            [
                "explain",
                *where,
                "--agent",
                "senior",
                "--tool",
                "order_cancel",
                "--json",
                "--args",
                json.dumps({"order_id": "ord_5002", "reason": "late"}),
                "--at",
                "2030-01-01T00:00:00+01:00",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert (report["decision"], report["reason_code"]) == ("deny", "order_not_cancellable")
    assert {r["rule"]: r["outcome"] for r in report["rules"]}["order-cancel-within-48h"] == "deny"
    assert _audit_count(database_url) == before
