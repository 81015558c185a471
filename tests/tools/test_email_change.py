"""Account email changes are verified: the new address stays pending until the customer confirms it with the code
mailed to it (a real SMTP server in these tests, aiosmtpd), the old address is told, wrong codes are limited, codes
expire, and the code never reaches an audit record, a result or a log."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from server.app import open_mandate
from server.audit.models import AuditRecord
from server.config import MailSettings, Settings
from tests.conftest import Harness
from tests.mail import SmtpSink, body, code_sent_to, outbox, smtp_sink
from tools.store.models import AccountChange, Customer, EmailChangeRequest
from tools.store.seed import seed_demo_store

pytestmark = pytest.mark.anyio

NEW = "alan.turing@example.org"
OLD = "alan@example.org"


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with smtp_sink() as sink:
        yield sink


@pytest.fixture
async def smtp_harness(settings: Settings, sink: SmtpSink) -> AsyncIterator[Harness]:
    mail = MailSettings(smtp_host=sink.host, smtp_port=sink.port, starttls=False, from_address="support@shop.test")
    mandate = await open_mandate(settings.model_copy(update={"mail": mail}), local_dev_jwks=True)
    try:
        from datetime import UTC, datetime

        await mandate.db.run_in_transaction(lambda session: seed_demo_store(session, datetime.now(UTC)))
        yield Harness(mandate)
    finally:
        await mandate.aclose()


async def _email(harness: Harness, customer_id: str = "cus_1003") -> str:
    async with harness.mandate.db.session() as session:
        customer = await session.get(Customer, customer_id)
    assert customer is not None
    return customer.email


async def test_a_new_address_stays_pending_until_the_code_mailed_to_it_is_confirmed(
    smtp_harness: Harness, sink: SmtpSink
) -> None:
    async with smtp_harness.client("senior") as client:
        requested = await client.call_tool("account_email_change", {"customer_id": "cus_1003", "new_email": NEW})
        assert not requested.is_error, requested.content
        pending = requested.structured_content
        assert pending is not None and pending["status"] == "pending_confirmation"
        assert await _email(smtp_harness) == OLD  # nothing changed yet
        to_new, to_old = sink.messages
        assert (to_new["To"], to_old["To"]) == (NEW, OLD)
        assert to_new["From"] == "support@shop.test"
        code = code_sent_to(sink.messages, NEW)
        assert code not in body(to_old)  # the old address is told, but never gets the code
        assert "a***@example.org" in body(to_old)
        confirmed = await client.call_tool("account_email_confirm", {"request_id": pending["request_id"], "code": code})
    assert not confirmed.is_error, confirmed.content
    assert confirmed.structured_content is not None and confirmed.structured_content["status"] == "confirmed"
    assert await _email(smtp_harness) == NEW
    assert sink.messages[-1]["To"] == OLD and "changed" in sink.messages[-1]["Subject"]
    async with smtp_harness.mandate.db.session() as session:
        change = (await session.exec(select(AccountChange))).one()
        records = (await session.exec(select(AuditRecord))).all()
        cause = (await session.exec(select(AuditRecord).where(AuditRecord.id == change.audit_id))).one()
    assert (change.old_value, change.new_value) == (OLD, NEW)
    assert cause.tool == "account_email_confirm"  # lineage leads from the change to the confirmation
    for record in records:  # the code is never in an audit record
        assert code not in (record.arguments or "") and code not in (record.result_summary or "")


async def test_wrong_codes_are_counted_and_the_request_locks_after_the_limit(smtp_harness: Harness) -> None:
    async with smtp_harness.client("senior") as client:
        requested = await client.call_tool("account_email_change", {"customer_id": "cus_1003", "new_email": NEW})
        request_id = requested.structured_content["request_id"]  # type: ignore[index]
        answers = [
            (await client.call_tool("account_email_confirm", {"request_id": request_id, "code": "00000000"}))
            for _ in range(5)
        ]
        statuses = [a.structured_content["status"] for a in answers]  # type: ignore[index]
        after = await client.call_tool("account_email_confirm", {"request_id": request_id, "code": "00000000"})
    assert statuses == ["wrong_code"] * 4 + ["locked"]
    assert [a.structured_content["attempts_left"] for a in answers] == [4, 3, 2, 1, 0]  # type: ignore[index]
    assert after.is_error and after.structured_content["code"] == "request_locked"  # type: ignore[index]
    assert await _email(smtp_harness) == OLD


async def test_an_expired_code_changes_nothing(smtp_harness: Harness, sink: SmtpSink) -> None:
    async with smtp_harness.client("senior") as client:
        requested = await client.call_tool("account_email_change", {"customer_id": "cus_1003", "new_email": NEW})
        request_id = requested.structured_content["request_id"]  # type: ignore[index]
        async with smtp_harness.mandate.db.session() as session:
            request = await session.get(EmailChangeRequest, request_id)
            assert request is not None
            request.expires_at = request.created_at
            session.add(request)
            await session.commit()
        result = await client.call_tool(
            "account_email_confirm", {"request_id": request_id, "code": code_sent_to(sink.messages, NEW)}
        )
    assert result.is_error and result.structured_content["code"] == "request_expired"  # type: ignore[index]
    assert await _email(smtp_harness) == OLD


async def test_a_new_request_supersedes_the_pending_one(smtp_harness: Harness, sink: SmtpSink) -> None:
    async with smtp_harness.client("senior") as client:
        first = await client.call_tool("account_email_change", {"customer_id": "cus_1003", "new_email": NEW})
        first_code = code_sent_to(sink.messages, NEW)
        await client.call_tool("account_email_change", {"customer_id": "cus_1003", "new_email": "other@example.org"})
        stale = await client.call_tool(
            "account_email_confirm",
            {"request_id": first.structured_content["request_id"], "code": first_code},  # type: ignore[index]
        )
    assert stale.is_error and stale.structured_content["code"] == "request_superseded"  # type: ignore[index]
    assert await _email(smtp_harness) == OLD


async def test_when_the_mail_server_is_down_nothing_is_pending_and_the_agent_is_told(
    settings: Settings,
) -> None:
    closed = MailSettings(smtp_host="127.0.0.1", smtp_port=1, starttls=False, timeout_seconds=5)
    mandate = await open_mandate(settings.model_copy(update={"mail": closed}), local_dev_jwks=True)
    try:
        from datetime import UTC, datetime

        await mandate.db.run_in_transaction(lambda session: seed_demo_store(session, datetime.now(UTC)))
        harness = Harness(mandate)
        async with harness.client("senior") as client:
            result = await client.call_tool("account_email_change", {"customer_id": "cus_1003", "new_email": NEW})
        assert result.is_error and result.structured_content["code"] == "mail_unavailable"  # type: ignore[index]
        async with mandate.db.session() as session:
            assert (await session.exec(select(EmailChangeRequest))).all() == []
    finally:
        await mandate.aclose()


async def test_without_a_mail_sender_an_email_change_is_refused(settings: Settings) -> None:
    mandate = await open_mandate(settings.model_copy(update={"mail": MailSettings(sender="none")}), local_dev_jwks=True)
    try:
        from datetime import UTC, datetime

        await mandate.db.run_in_transaction(lambda session: seed_demo_store(session, datetime.now(UTC)))
        async with Harness(mandate).client("senior") as client:
            result = await client.call_tool("account_email_change", {"customer_id": "cus_1003", "new_email": NEW})
        assert result.is_error and result.structured_content["code"] == "mail_unavailable"  # type: ignore[index]
    finally:
        await mandate.aclose()


@pytest.mark.parametrize(
    "address",
    [
        "\u0430lan@example.org",  # Cyrillic a
        "alan\u200b@example.org",  # zero-width space
        "alan@exam\u0440le.org",  # Cyrillic r
        "alan\u202e@example.org",  # bidi override
        "alan@example.org\n",
        "al an@example.org",
    ],
)
async def test_lookalike_and_invisible_character_addresses_are_refused(harness: Harness, address: str) -> None:
    async with harness.client("senior") as client:
        result = await client.call_tool("account_email_change", {"customer_id": "cus_1003", "new_email": address})
    assert result.is_error and result.structured_content["code"] == "invalid_arguments"  # type: ignore[index]
    assert outbox(harness.mandate.settings.data_dir) == []


async def test_in_development_the_code_goes_to_the_outbox_and_never_to_the_log(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with harness.client("senior") as client:
        await client.call_tool("account_email_change", {"customer_id": "cus_1003", "new_email": NEW})
    data_dir: Path = harness.mandate.settings.data_dir
    code = code_sent_to(outbox(data_dir), NEW)
    assert code not in caplog.text
    assert all((path.stat().st_mode & 0o077) == 0 for path in (data_dir / "outbox").glob("*.eml"))
