"""Safer defaults: approving needs a human approver's marker unless the configuration says otherwise; ``policy
check`` warns about every tool with a side effect that no cap or budget limits; an issuer that names a tenant claim
refuses tokens without a tenant unless told otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scopes.policy.lint import lint
from scopes.policy.policy import parse_policy
from server.app import load_tool_catalog, open_mandate
from server.auth.dev_issuer import DevIssuer
from server.auth.errors import InvalidToken
from server.config import ApprovalSettings, IssuerConfig, Settings
from server.policy_runtime import vocabulary_of
from tests.conftest import AGENT_SCOPES, Harness

pytestmark = pytest.mark.anyio

BIG_REFUND = {"order_id": "ord_5002", "amount": "150.00", "currency": "EUR", "reason": "monitor arrived broken"}


async def _approve_with(harness: Harness, token: str, approval_id: str) -> Any:
    async with harness.client_with_token(token) as client:
        return await client.call_tool(
            "approval_decide", {"approval_id": approval_id, "decision": "approve", "comment": "ok"}
        )


async def _pending(harness: Harness) -> str:
    async with harness.client("refunds") as client:
        result = await client.call_tool("refund_create", BIG_REFUND)
    approval_id: str = result.structured_content["approval_id"]  # type: ignore[index]
    return approval_id


async def test_by_default_an_agent_token_holding_the_approval_scope_cannot_approve(harness: Harness) -> None:
    approval_id = await _pending(harness)
    rogue = harness.token("senior", scopes=("approvals:decide",), subject="agent:rogue", client_id="rogue-agent")
    answer = await _approve_with(harness, rogue, approval_id)
    assert answer.is_error and answer.structured_content["code"] == "not_an_approver"  # type: ignore[index]
    human = harness.token("supervisor", subject="human:alice")  # carries "mandate_approver": true
    assert not (await _approve_with(harness, human, approval_id)).is_error


async def test_the_configuration_can_let_any_holder_of_the_scope_approve(harness: Harness) -> None:
    harness.mandate.approvals.settings = ApprovalSettings(allow_any_approver=True)
    approval_id = await _pending(harness)
    rogue = harness.token("senior", scopes=("approvals:decide",), subject="agent:rogue", client_id="rogue-agent")
    answer = await _approve_with(harness, rogue, approval_id)
    assert not answer.is_error and answer.structured_content["status"] == "executed"  # type: ignore[index]


def test_policy_check_warns_about_every_side_effect_that_no_cap_or_budget_limits(settings: Settings) -> None:
    empty = parse_policy(b'version = "nothing"\n')
    vocabulary = vocabulary_of(load_tool_catalog(settings))
    warnings = lint(empty, vocabulary)
    unlimited = sorted(w.split("'")[1] for w in warnings if "no cap or budget limits it" in w)
    side_effects = sorted(name for name, shape in vocabulary.tools.items() if not shape.read_only)
    assert unlimited == side_effects
    assert "refund_create" in unlimited and "order_get" not in unlimited


def test_the_default_policy_limits_every_side_effect(settings: Settings) -> None:
    from scopes.policy import load_policy

    warnings = lint(load_policy(), vocabulary_of(load_tool_catalog(settings)))
    assert [w for w in warnings if "no cap or budget" in w] == []


def test_an_issuer_naming_a_tenant_claim_requires_a_tenant_unless_told_otherwise() -> None:
    assert IssuerConfig(issuer="https://auth.example").tenant_required
    assert not IssuerConfig(issuer="https://auth.example", tenant_claim="").tenant_required
    assert not IssuerConfig(issuer="https://auth.example", require_tenant=False).tenant_required


async def test_a_token_without_a_tenant_is_refused_by_a_configured_issuer_by_default(tmp_path: Path) -> None:
    base = Settings(data_dir=tmp_path / "data", dev_issuer=False, port=8000, instance="t")
    issuer = DevIssuer.load_or_create(base.data_dir, "https://issuer.test")
    jwks = str(issuer.write_jwks_file())
    settings = base.model_copy(update={"issuers": [IssuerConfig(issuer="https://issuer.test", jwks_uri=jwks)]})
    mandate = await open_mandate(settings)
    try:
        common = {"subject": "agent:x", "client_id": "x", "scopes": AGENT_SCOPES["support"], "audience": base.audience}
        with pytest.raises(InvalidToken):
            await mandate.verifier.verify(issuer.mint(**common))
        principal = await mandate.verifier.verify(issuer.mint(**common, tenant="acme"))
        assert principal.tenant == "acme"
    finally:
        await mandate.aclose()
