"""The remediation tests' store: the demo data, with approvals (and compensations) that need a person's marker, and
a misbehaving agent's work to undo."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from server.app import open_mandate
from server.config import ApprovalSettings, Settings
from tests.conftest import Harness
from tests.mail import change_email
from tools.store.seed import seed_demo_store

RESPONDER = ("remediation:execute", "audit:read", "customers:read", "orders:read")
PERSON = {"mandate_person": True}
REFUND = {"order_id": "ord_5001", "amount": "20.00", "currency": "EUR", "reason": "agent went rogue"}


@pytest.fixture
async def harness(settings: Settings) -> AsyncIterator[Harness]:
    """The demo store, with approvals that need a person's marker (claim ``mandate_person``)."""
    marked = settings.model_copy(update={"approvals": ApprovalSettings(approver_claim="mandate_person")})
    mandate = await open_mandate(marked, local_dev_jwks=True)
    try:
        now = datetime.now(UTC)
        await mandate.db.run_in_transaction(lambda session: seed_demo_store(session, now))
        yield Harness(mandate)
    finally:
        await mandate.aclose()


async def rogue_agent_acts(harness: Harness) -> dict[str, Any]:
    """A senior agent changes an email, cancels an order and refunds another; returns what each answered."""
    answers: dict[str, Any] = {}
    async with harness.client("senior", client_id="rogue-agent") as client:
        changed = await change_email(client, harness.mandate.settings.data_dir, "cus_1001", "attacker@example.net")
        assert not changed.is_error, changed.content
        answers["account_email_change"] = changed.structured_content
        for name, arguments in (
            ("order_cancel", {"order_id": "ord_5004", "reason": "customer asked, supposedly"}),
            ("refund_create", REFUND),
        ):
            result = await client.call_tool(name, arguments)
            assert not result.is_error, (name, result.content)
            answers[name] = result.structured_content
    return answers
