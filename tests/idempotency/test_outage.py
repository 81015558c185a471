"""A database outage gets a retryable answer (``database_unavailable``, ``retryable``, ``retry_after_seconds``) and
changes nothing; after the database is back, the keyed retry runs once. After a crash, a keyed retry does not wait
out the lease when the owner's heartbeat has stopped. A real PostgreSQL cluster of the test's own is stopped here."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import func, select

from server import idempotency
from server.app import open_mandate
from server.audit.redaction import arguments_digest
from server.callpath.core import key_owner
from server.config import Settings, load_settings
from server.liveness import beat
from tests.conftest import Harness, migrate_sync
from tests.pgcluster import Cluster, own_cluster
from tools.store.models import Refund
from tools.store.seed import seed_demo_store

pytestmark = pytest.mark.anyio

REFUND = {
    "order_id": "ord_5001",
    "amount": "5.00",
    "currency": "EUR",
    "reason": "damaged",
    "idempotency_key": "k-0001-abcd",
}


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with own_cluster() as cluster:
        migrate_sync(cluster.url)  # `mandate db upgrade`, as an operator runs it before the first start
        yield cluster


async def test_a_stopped_database_gets_a_retryable_answer_and_the_keyed_retry_runs_once_it_is_back(
    cluster: Cluster, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=cluster.url, dev_issuer=True, instance="outage")
    mandate = await open_mandate(settings, local_dev_jwks=True)
    try:
        await mandate.db.run_in_transaction(lambda session: seed_demo_store(session, datetime.now(UTC)))
        harness = Harness(mandate)
        cluster.stop()
        async with harness.client("refunds") as client:
            down = await client.call_tool("refund_create", REFUND)
        assert down.is_error and down.structured_content is not None
        body = down.structured_content
        assert body["code"] == "database_unavailable"
        assert body["details"]["retryable"] is True and body["details"]["retry_after_seconds"] > 0
        assert "psycopg" not in str(down.content) and "127.0.0.1" not in str(down.content)
        cluster.start()
        async with harness.client("refunds") as client:
            back = await client.call_tool("refund_create", REFUND)
            again = await client.call_tool("refund_create", REFUND)
        assert not back.is_error, back.content
        assert not again.is_error
        async with mandate.db.session() as session:
            assert (await session.exec(select(func.count()).select_from(Refund))).one() == 1
    finally:
        await mandate.aclose()


async def _claim_as(harness: Harness, owner: str, lease: timedelta) -> None:
    principal = await harness.mandate.verifier.verify(harness.token("refunds"))
    arguments = {k: v for k, v in REFUND.items() if k != "idempotency_key"}
    now = datetime.now(UTC)
    claimed = await idempotency.claim(
        harness.mandate.db,
        principal_key=key_owner(principal),
        tool="refund_create",
        key=REFUND["idempotency_key"],
        arguments_digest=arguments_digest(arguments),
        now=now,
        ttl=timedelta(hours=1),
        lease=lease,
        owner=owner,
    )
    assert isinstance(claimed, idempotency.Claimed)


async def test_a_claim_whose_owner_stopped_beating_is_taken_over_at_once_not_after_the_lease(
    harness: Harness,
) -> None:
    stale = datetime.now(UTC) - timedelta(minutes=5)
    await harness.mandate.db.run_in_transaction(lambda session: beat(session, "crashed-replica", stale))
    await _claim_as(harness, "crashed-replica", lease=timedelta(minutes=10))
    async with harness.client("refunds") as client:
        result = await client.call_tool("refund_create", REFUND)
    assert not result.is_error, result.content  # ran now, without waiting ten minutes


async def test_a_claim_whose_owner_is_alive_stays_in_progress(harness: Harness) -> None:
    await harness.mandate.db.run_in_transaction(lambda session: beat(session, "busy-replica", datetime.now(UTC)))
    await _claim_as(harness, "busy-replica", lease=timedelta(minutes=10))
    async with harness.client("refunds") as client:
        result = await client.call_tool("refund_create", REFUND)
    assert result.is_error and result.structured_content is not None
    assert result.structured_content["code"] == "idempotency_in_progress"


def test_the_lease_is_settable_from_the_environment() -> None:
    settings = load_settings(environ={"MANDATE_IDEMPOTENCY_LEASE_SECONDS": "12"})
    assert settings.idempotency.lease_seconds == 12
    assert Settings().idempotency.owner_silence_seconds < Settings().idempotency.lease_seconds
