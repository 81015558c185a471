"""Revision 0003 on a ledger whose released reservations were left in the rolling sub-totals: the sub-totals are
rebuilt from the entries, so every window reads what was spent and not given back; calendar days are untouched.

On PostgreSQL a replica still serving during the upgrade may commit spends meanwhile: the upgrade's
``LOCK TABLE ledger_entries, ledger_window_totals IN SHARE ROW EXCLUSIVE MODE`` makes a spend already writing finish
before the rebuild reads the entries, and a spend arriving later wait until the rebuild has committed, so each is
counted once. The tests of that run real transactions on their own connections and watch, in ``pg_locks`` and
``pg_stat_activity``, which backend waits for which lock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import psycopg
import pytest
from sqlalchemy import event, func, insert, select
from sqlalchemy.engine import Connection
from sqlmodel.ext.asyncio.session import AsyncSession

from scopes.money import Money
from scopes.policy.results import LedgerKey, Spend
from server import ledger
from server.storage import migrate
from server.storage.database import Database
from server.storage.prepared import Prepared, flush_deferred, run
from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.anyio

RELEASED_AT = datetime(2026, 12, 6, 22, 40, 1, 500000, tzinfo=UTC)
KEPT_AT = datetime(2026, 12, 7, 9, 5, tzinfo=UTC)
SPENT_AT = KEPT_AT + timedelta(minutes=10)  # a spend during the upgrade: the day and hour of the kept 7.00
SPENT = 300

concurrent_writers = pytest.mark.skipif(
    not POSTGRES_URL,
    reason="SQLite has one writer: the upgrade's transaction holds the database's write lock, so no spend can "
    "overlap it (PostgreSQL: MANDATE_TEST_DATABASE_URL)",
)


def _entry(amount: int, at: datetime, audit_id: str, period: str = "rolling") -> dict[str, Any]:
    return {
        "budget": "customer_refunds_30d" if period == "rolling" else "agent_refunds_daily",
        "holder": "cus_1001" if period == "rolling" else "agent:refunds",
        "unit": "EUR",
        "period": period,
        "amount": amount,
        "at": at,
        "tool": "refund_create",
        "audit_id": audit_id,
    }


def _slot(slot: str, spent: int) -> dict[str, Any]:
    return {"budget": "customer_refunds_30d", "holder": "cus_1001", "unit": "EUR", "slot": slot, "spent": spent}


async def _window(db: Database, since: datetime) -> int:
    key = LedgerKey("customer_refunds_30d", "cus_1001", "EUR", "rolling", since)

    async def work(session: Any) -> int:
        usage = (await ledger.totals(session, [key], at=KEPT_AT, lock=False))[key.budget]
        assert isinstance(usage, Money)
        return usage.minor

    return await db.run_in_transaction(work)


async def _ledger_as_0002_left_it(db: Database) -> None:
    """A database at revision 0002 whose refused 12.50 was released in the entries but left in its day and hour
    sub-totals; 7.00 kept, and a calendar day's 5.00, which has no sub-totals."""
    await migrate.upgrade(db, "0002")
    async with db.engine.begin() as connection:
        await connection.execute(
            insert(ledger.ENTRIES),
            [
                _entry(1250, RELEASED_AT, "aud_refused"),
                _entry(-1250, RELEASED_AT, "aud_refusal"),  # the release, dated like the reservation
                _entry(700, KEPT_AT, "aud_kept"),
                _entry(500, KEPT_AT, "aud_kept", period="2026-12-07"),  # a calendar day: no sub-totals
            ],
        )
        # what a release left before this revision: the refused 12.50 still in its day and hour
        await connection.execute(
            insert(ledger.WINDOW_TOTALS),
            [
                _slot("d2026-12-06", 1250),
                _slot("h2026-12-06T22", 1250),
                _slot("d2026-12-07", 700),
                _slot("h2026-12-07T09", 700),
            ],
        )


async def test_sub_totals_left_with_released_amounts_are_rebuilt_from_the_entries(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        await _ledger_as_0002_left_it(db)
        assert await _window(db, KEPT_AT - timedelta(days=30)) == 1950

        assert await migrate.upgrade(db) == ("0002", migrate.head_revision())

        async with db.engine.connect() as connection:
            rows = (await connection.execute(select(ledger.WINDOW_TOTALS.c.slot, ledger.WINDOW_TOTALS.c.spent))).all()
        assert dict(rows) == {"d2026-12-06": 0, "h2026-12-06T22": 0, "d2026-12-07": 700, "h2026-12-07T09": 700}
        for since in (KEPT_AT - timedelta(days=30), RELEASED_AT - timedelta(minutes=1), KEPT_AT - timedelta(hours=1)):
            assert await _window(db, since) == 700
        assert await migrate.schema_differences(db) == []
    finally:
        await db.dispose()


# What follows runs the upgrade beside spends in transactions of their own, on PostgreSQL.

AFTER_THE_UPGRADE = {"d2026-12-06": 0, "h2026-12-06T22": 0, "d2026-12-07": 700 + SPENT, "h2026-12-07T09": 700 + SPENT}
"""The sub-totals once the spend made during the upgrade is in: the released 12.50 gone, 7.00 plus the spend's 3.00
in their day and hour (counted twice, they would read 13.00; lost, 7.00)."""

BACKEND_PID = Prepared(select(func.pg_backend_pid()))


@dataclass(frozen=True)
class Wait:
    """The lock one backend is waiting for (``pg_locks`` with ``granted = false``) and what it is running."""

    locktype: str
    relation: str | None
    mode: str
    wait_event_type: str | None
    blockers: list[int]
    query: str


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


async def _wait_of(observer: psycopg.AsyncConnection[Any], pid: int) -> Wait | None:
    """What ``pid`` waits for, or None when it waits for no lock (a backend waits for at most one at a time)."""
    found = await observer.execute(
        "SELECT l.locktype, c.relname, l.mode, a.wait_event_type, pg_blocking_pids(l.pid), a.query "
        "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid LEFT JOIN pg_class c ON c.oid = l.relation "
        "WHERE l.pid = %s AND NOT l.granted",
        [pid],
    )
    row = await found.fetchone()
    return None if row is None else Wait(*row)


async def _table_locks(observer: psycopg.AsyncConnection[Any], pid: int) -> set[tuple[str, str]]:
    """The ledger tables ``pid`` holds locks on, with their modes (granted ones only)."""
    found = await observer.execute(
        "SELECT c.relname, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        "WHERE l.pid = %s AND l.granted AND c.relname IN ('ledger_entries', 'ledger_window_totals')",
        [pid],
    )
    return {(name, mode) for name, mode in await found.fetchall()}


async def _waiting(observer: psycopg.AsyncConnection[Any], pid: Callable[[], int | None], done: anyio.Event) -> Wait:
    """Poll until the backend ``pid()`` names waits for a lock, and return what it waits for; fails at once if its
    work ends first (then it never waited). The migrations' advisory lock does not count: another pytest-xdist
    worker's upgrade may hold it for a moment. The caller's deadline bounds the wait."""
    while True:
        known = pid()
        if known is not None:
            wait = await _wait_of(observer, known)
            if wait is not None and wait.locktype != "advisory":
                return wait
        if done.is_set():
            pytest.fail("its work finished without waiting for a lock")
        await anyio.sleep(0.02)  # the server's state, not an event of this process: polled, under a deadline


def _upgrade_backend(db: Database) -> Callable[[], int | None]:
    """The backend pid of the next upgrade's connection, from its first statement on (the migrations' advisory
    lock, ``server.storage.migrate``): set up once the database is at 0002, so that no earlier upgrade is seen."""
    seen: list[int] = []

    def before(conn: Connection, cursor: Any, statement: str, *args: Any) -> None:
        if "pg_advisory_xact_lock" in statement:
            seen.append(conn.connection.driver_connection.info.backend_pid)  # type: ignore[union-attr]

    event.listen(db.engine.sync_engine, "before_cursor_execute", before)
    return lambda: seen[-1] if seen else None


async def _spend(session: AsyncSession, audit_id: str) -> int:
    """A rolling spend of 3.00 made with the ledger's own code, as an allowed call makes it: the window's total read
    under its anchor's lock (``ledger.totals``), then the bucket's update, the entry and the two sub-total upserts
    queued (``ledger.reserve`` and its ``add_to_slots``). Returns the transaction's backend pid."""
    pid = int((await run(session, BACKEND_PID)).scalar())
    key = LedgerKey("customer_refunds_30d", "cus_1001", "EUR", "rolling", SPENT_AT - timedelta(days=30))
    await ledger.totals(session, [key], at=SPENT_AT)
    await ledger.reserve(session, [Spend(key, SPENT, None)], at=SPENT_AT, audit_id=audit_id, tool="refund_create")
    return pid


async def _revision_and_audit_ids(observer: psycopg.AsyncConnection[Any]) -> tuple[str, list[str]]:
    """What another connection sees committed: the schema revision and the rolling entries' audit ids."""
    revision = await (await observer.execute("SELECT version_num FROM alembic_version")).fetchone()
    entries = await observer.execute("SELECT audit_id FROM ledger_entries WHERE period = 'rolling' ORDER BY id")
    assert revision is not None
    return revision[0], [row[0] for row in await entries.fetchall()]


async def _rebuilt_and_read(db: Database, spend_audit_id: str) -> None:
    """After the upgrade and the spend: the sub-totals hold every rolling entry once, the spend's included, and
    every window reads the entries' sum, whichever sub-totals and entries it is read from."""
    async with db.engine.connect() as connection:
        rows = (await connection.execute(select(ledger.WINDOW_TOTALS.c.slot, ledger.WINDOW_TOTALS.c.spent))).all()
        entries = (
            await connection.execute(
                select(ledger.ENTRIES.c.audit_id, ledger.ENTRIES.c.amount).where(ledger.ENTRIES.c.period == "rolling")
            )
        ).all()
    assert dict(rows) == AFTER_THE_UPGRADE
    assert sorted(entries) == sorted(
        [("aud_refused", 1250), ("aud_refusal", -1250), ("aud_kept", 700), (spend_audit_id, SPENT)]
    )
    assert sum(amount for _, amount in entries) == 700 + SPENT
    # read from the day slots; from the entries of 22:39 to 23:00 and the 7th's day slot; from the entries of 09:00
    # to 10:00 (the kept 7.00 and the spend); and from those after 09:14 (the spend alone)
    for since in (SPENT_AT - timedelta(days=30), RELEASED_AT - timedelta(minutes=1), KEPT_AT - timedelta(minutes=5)):
        assert await _window(db, since) == 700 + SPENT
    assert await _window(db, SPENT_AT - timedelta(minutes=1)) == SPENT
    assert await migrate.schema_differences(db) == []


@concurrent_writers
async def test_an_upgrade_waits_for_a_spend_already_writing_and_rebuilds_the_sub_totals_with_it_counted_once(
    empty_database_url: str,
) -> None:
    """A replica's spend has written its entry and its sub-totals (the ledger's own code, its queued writes sent
    with ``flush_deferred`` as a commit would send them) but not committed when the upgrade starts: the upgrade's
    ``LOCK TABLE`` waits for it (the spend holds ROW EXCLUSIVE on both tables, which SHARE ROW EXCLUSIVE conflicts
    with), so the rebuild reads the entries only once the spend has committed, and counts it exactly once."""
    db = Database(empty_database_url)
    try:
        await _ledger_as_0002_left_it(db)
        upgrade_pid = _upgrade_backend(db)
        spend_pids: list[int] = []
        written, release, spent, upgraded = anyio.Event(), anyio.Event(), anyio.Event(), anyio.Event()
        revisions: list[tuple[str | None, str]] = []

        async def spend_held_open(session: AsyncSession) -> None:
            spend_pids.append(await _spend(session, "aud_during"))
            await flush_deferred(session)  # the entry and the slots written now, in the open transaction
            written.set()
            await release.wait()  # committed by run_in_transaction once the upgrade is seen waiting

        async def spending() -> None:
            await db.run_in_transaction(spend_held_open)
            spent.set()

        async def upgrading() -> None:
            revisions.append(await migrate.upgrade(db, "0003"))
            upgraded.set()

        async with await psycopg.AsyncConnection.connect(_plain(empty_database_url), autocommit=True) as observer:
            with anyio.fail_after(60):
                async with anyio.create_task_group() as group:
                    try:
                        group.start_soon(spending)
                        await written.wait()
                        spender = spend_pids[-1]
                        assert await _table_locks(observer, spender) >= {
                            ("ledger_entries", "RowExclusiveLock"),
                            ("ledger_window_totals", "RowExclusiveLock"),
                        }

                        group.start_soon(upgrading)
                        wait = await _waiting(observer, upgrade_pid, upgraded)
                        # SHARE ROW EXCLUSIVE on the entries is asked for by the upgrade's LOCK TABLE alone (the
                        # query text is not compared: pg_stat_activity can lag a statement behind under load)
                        assert (wait.locktype, wait.relation, wait.mode, wait.wait_event_type, wait.blockers) == (
                            "relation",
                            "ledger_entries",
                            "ShareRowExclusiveLock",
                            "Lock",
                            [spender],
                        )
                        assert await _revision_and_audit_ids(observer) == (
                            "0002",
                            ["aud_refused", "aud_refusal", "aud_kept"],
                        )
                        assert not upgraded.is_set()
                    finally:
                        release.set()  # whatever happened: the upgrade is never left waiting on the spend
                    await spent.wait()
                    await upgraded.wait()
            assert revisions == [("0002", "0003")]
            assert await _revision_and_audit_ids(observer) == (
                "0003",
                ["aud_refused", "aud_refusal", "aud_kept", "aud_during"],
            )
        await _rebuilt_and_read(db, "aud_during")
    finally:
        await db.dispose()


@concurrent_writers
async def test_a_spend_arriving_while_the_upgrade_holds_its_lock_waits_and_lands_once_on_the_rebuilt_sub_totals(
    empty_database_url: str,
) -> None:
    """The upgrade is paused between its ``LOCK TABLE`` and its rewrite: another transaction holds one sub-total row
    ``FOR UPDATE`` (ROW SHARE, which SHARE ROW EXCLUSIVE does not conflict with), so the upgrade takes its lock,
    reads the entries and waits in its ``DELETE`` for that row. A spend made then with the ledger's own code
    (committed by ``run_in_transaction``, its queued writes sent with the COMMIT as the call path sends them) waits
    for the upgrade's lock (its writes need ROW EXCLUSIVE); once the row is let go and the upgrade commits, the
    spend's upserts add to the rebuilt sub-totals: counted once, neither lost with the old rows nor in the rebuild."""
    db = Database(empty_database_url)
    try:
        await _ledger_as_0002_left_it(db)
        upgrade_pid = _upgrade_backend(db)
        spend_pids: list[int] = []
        spent, upgraded = anyio.Event(), anyio.Event()
        revisions: list[tuple[str | None, str]] = []

        async def spend(session: AsyncSession) -> None:
            spend_pids.append(await _spend(session, "aud_during"))

        async def spending() -> None:
            await db.run_in_transaction(spend)
            spent.set()

        async def upgrading() -> None:
            revisions.append(await migrate.upgrade(db, "0003"))
            upgraded.set()

        plain = _plain(empty_database_url)
        async with (
            await psycopg.AsyncConnection.connect(plain, autocommit=True) as observer,
            await psycopg.AsyncConnection.connect(plain) as holder,
        ):
            holder_pid = holder.info.backend_pid
            locked = await holder.execute(
                "SELECT spent FROM ledger_window_totals WHERE slot = 'd2026-12-06' FOR UPDATE"
            )
            assert await locked.fetchall() == [(1250,)]
            with anyio.fail_after(60):
                async with anyio.create_task_group() as group:
                    try:
                        group.start_soon(upgrading)
                        paused = await _waiting(observer, upgrade_pid, upgraded)
                        upgrader = upgrade_pid()
                        assert upgrader is not None
                        assert (paused.locktype, paused.wait_event_type, paused.blockers) == (
                            "transactionid",
                            "Lock",
                            [holder_pid],
                        )
                        # Waiting on the holder's transaction (a row lock) can only be its DELETE: the entries'
                        # read takes no row lock and its LOCK TABLE would wait on a relation. (pg_stat_activity's
                        # query text is not asserted: under load it was seen still naming the streamed read's
                        # CLOSE of its cursor while the DELETE waited.)
                        assert await _table_locks(observer, upgrader) >= {
                            ("ledger_entries", "ShareRowExclusiveLock"),
                            ("ledger_window_totals", "ShareRowExclusiveLock"),
                        }

                        group.start_soon(spending)
                        wait = await _waiting(observer, lambda: spend_pids[-1] if spend_pids else None, spent)
                        assert wait.locktype == "relation" and wait.mode == "RowExclusiveLock"
                        assert wait.relation in {"ledger_entries", "ledger_window_totals"}
                        assert (wait.wait_event_type, wait.blockers) == ("Lock", [upgrader])
                        assert await _revision_and_audit_ids(observer) == (
                            "0002",
                            ["aud_refused", "aud_refusal", "aud_kept"],
                        )
                    finally:
                        with anyio.move_on_after(10, shield=True):
                            await holder.rollback()  # whatever happened: the upgrade is never left waiting on it
                    await upgraded.wait()
                    await spent.wait()
            assert revisions == [("0002", "0003")]
            assert await _revision_and_audit_ids(observer) == (
                "0003",
                ["aud_refused", "aud_refusal", "aud_kept", "aud_during"],
            )
        await _rebuilt_and_read(db, "aud_during")
    finally:
        await db.dispose()
