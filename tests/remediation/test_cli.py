"""``mandate remediate`` as a responder runs it: a process of its own on the same database; a dry run by default,
``--execute`` with a person's token, exit status 0 done, 1 a compensation refused, 2 usage or credentials."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlmodel import func, select

from tests.conftest import Harness
from tests.remediation.conftest import PERSON, RESPONDER, rogue_agent_acts
from tools.store.models import Customer, Remediation

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


async def _remediate(harness: Harness, *args: str, token: str | None = None) -> Run:
    settings = harness.mandate.settings
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MANDATE_")}
    environment.update(
        MANDATE_DATA_DIR=str(settings.data_dir),
        MANDATE_DATABASE_URL=settings.effective_database_url,
        MANDATE_DEV_ISSUER="1",
        MANDATE_PORT=str(settings.port),
        MANDATE_APPROVER_CLAIM="mandate_person",
    )
    if token is not None:
        environment["MANDATE_TOKEN"] = token
    with anyio.fail_after(90):
        done = await anyio.run_process(
            [sys.executable, "-m", "server.cli", "remediate", *args], cwd=ROOT, env=environment, check=False
        )
    run = Run(done.returncode, done.stdout.decode(), done.stderr.decode())
    assert "Traceback" not in run.err, run.err
    if token:
        assert token not in run.out + run.err
    return run


async def _remediations(harness: Harness) -> int:
    async with harness.mandate.db.session() as session:
        return int((await session.exec(select(func.count()).select_from(Remediation))).one())


async def test_the_dry_run_prints_each_effect_its_state_and_its_compensation(harness: Harness) -> None:
    await rogue_agent_acts(harness)

    text = await _remediate(harness, "--client-id", "rogue-agent", "--since", "1h")
    as_json = await _remediate(harness, "--client-id", "rogue-agent", "--json")

    assert text.code == 0 and as_json.code == 0, text.err + as_json.err
    assert "3 effect(s)" in text.out and "dry run: nothing was changed" in text.out
    assert "undo: account_email_restore restore the previous address a***@example.com" in text.out
    assert "undo: order_reopen reopen the order as processing" in text.out
    assert "flag: refund_follow_up no automatic reversal" in text.out
    body: dict[str, Any] = json.loads(as_json.out)
    assert body["dry_run"] is True and body["executed"] == []
    assert sorted(item["action"] for item in body["items"]) == ["call", "call", "flag"]
    assert await _remediations(harness) == 0


async def test_execute_compensates_as_the_person_and_a_second_run_finds_it_done(harness: Harness) -> None:
    await rogue_agent_acts(harness)
    token = harness.token(scopes=RESPONDER, subject="person:rita", client_id="cli", extra_claims=PERSON)

    first = await _remediate(
        harness, "--client-id", "rogue-agent", "--execute", "--reason", "incident 42", "--json", token=token
    )
    second = await _remediate(harness, "--client-id", "rogue-agent", "--execute", "--reason", "again", token=token)

    assert first.code == 0, first.out + first.err
    assert [e["executed"]["succeeded"] for e in json.loads(first.out)["executed"]] == [True, True, True]
    assert second.code == 0, second.out + second.err
    assert second.out.count("action   done: compensated by rem_") == 3
    assert "result" not in second.out
    assert await _remediations(harness) == 3
    async with harness.mandate.db.session() as session:
        customer = await session.get(Customer, "cus_1001")
    assert customer is not None and customer.email == "ada@example.com"


async def test_execute_without_a_reason_or_a_token_is_refused_and_changes_nothing(harness: Harness) -> None:
    await rogue_agent_acts(harness)
    token = harness.token(scopes=RESPONDER, subject="person:rita", client_id="cli", extra_claims=PERSON)
    agent = harness.token("senior")

    no_reason = await _remediate(harness, "--client-id", "rogue-agent", "--execute", token=token)
    no_token = await _remediate(harness, "--client-id", "rogue-agent", "--execute", "--reason", "incident 42")
    as_agent = await _remediate(harness, "--client-id", "rogue-agent", "--execute", "--reason", "x" * 5, token=agent)
    no_target = await _remediate(harness, "--since", "1h")

    assert no_reason.code == 2 and "--execute needs --reason" in no_reason.err
    assert no_token.code == 2 and "MANDATE_TOKEN" in no_token.err
    assert as_agent.code == 1 and "insufficient_scope" in as_agent.out
    assert no_target.code == 2
    assert await _remediations(harness) == 0
