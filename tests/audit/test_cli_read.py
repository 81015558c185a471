"""``mandate audit tail``, ``show`` and ``export``: records for people and for a SIEM, filtered by principal (sub or
client_id), tool, decision, customer and time."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from server.audit.chain import leaf_hash_of
from server.storage.database import Database
from tests.audit.conftest import Cli
from tests.audit.support import append_records, rows

pytestmark = pytest.mark.anyio


async def _mixed(db: Database) -> None:
    await append_records(db, 3)  # writer0/1/2-agent, orders_list, allow, cus_1001, at BASE_TIME + 0..2 s
    await append_records(
        db, 2, start=10, tool="refund_create", decision="deny", outcome="refused", customer_id="cus_1002"
    )


async def test_export_writes_one_json_object_per_record_in_chain_order(db: Database, cli: Cli) -> None:
    await _mixed(db)
    result = await cli("audit", "export", "--format", "jsonl")
    assert result.code == 0, result.err
    lines = [json.loads(line) for line in result.out.splitlines()]
    assert [line["seq"] for line in lines] == [1, 2, 3, 4, 5]
    first = lines[0]
    assert first["at"] == "2025-01-31T09:00:00.000000Z"
    assert first["arguments"] == {"customer_id": "cus_1001"} and first["scopes"] == ["orders:read"]
    assert set(first) >= {
        "id",
        "subject",
        "client_id",
        "tool",
        "decision",
        "outcome",
        "trace_id",
        "leaf_hash",
        "leaf_index",
    }


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (("--principal", "writer1-agent"), [2, 4]),
        (("--principal", "agent:writer0"), [1]),
        (("--tool", "refund_create"), [4, 5]),
        (("--decision", "deny"), [4, 5]),
        (("--customer", "cus_1002"), [4, 5]),
        (("--since", "2025-01-31T09:00:01Z", "--until", "2025-01-31T09:00:03Z"), [2, 3]),
        (("--tool", "orders_list", "--principal", "writer2-agent"), [3]),
    ],
)
async def test_export_filters(db: Database, cli: Cli, filters: tuple[str, ...], expected: list[int]) -> None:
    await _mixed(db)
    result = await cli("audit", "export", *filters)
    assert result.code == 0, result.err
    assert [json.loads(line)["seq"] for line in result.out.splitlines()] == expected


async def test_exported_records_can_still_be_checked_against_their_leaf_hash(
    db: Database, cli: Cli, tmp_path: object
) -> None:
    await _mixed(db)
    result = await cli("audit", "export")
    stored = {row["seq"]: row for row in await rows(db)}
    for line in result.out.splitlines():
        exported = json.loads(line)
        row = stored[exported["seq"]]
        assert json.dumps(exported["arguments"], sort_keys=True, separators=(",", ":")) == row["arguments"]
        restored = {
            **exported,
            "arguments": json.dumps(exported["arguments"], sort_keys=True, separators=(",", ":"), ensure_ascii=False),
            "result_summary": json.dumps(
                exported["result_summary"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ),
            "scopes": " ".join(exported["scopes"]) or None,
        }
        assert exported["leaf_hash"] == leaf_hash_of(restored).hex() == row["leaf_hash"]


async def test_tail_prints_the_latest_records_one_line_each(db: Database, cli: Cli) -> None:
    await _mixed(db)
    result = await cli("audit", "tail", "-n", "2")
    assert result.code == 0
    lines = result.out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(
        "#4 2025-01-31T09:00:10.000000Z deny/refused refund_create writer1-agent (agent:writer1)"
    )
    assert "customer=cus_1002" in lines[0]


async def test_tail_follow_prints_records_appended_while_it_polls(db: Database, cli: Cli) -> None:
    await append_records(db, 1)
    outcome: dict[str, str] = {}

    async def follow() -> None:
        outcome["out"] = (await cli("audit", "tail", "--follow", "--interval", "0.05", "--max-polls", "30")).out

    async with anyio.create_task_group() as group:
        group.start_soon(follow)
        await anyio.sleep(0.3)
        await append_records(db, 2, start=20, tool="order_cancel")
    lines = outcome["out"].splitlines()
    assert [line.split()[0] for line in lines] == ["#1", "#2", "#3"]
    assert "order_cancel" in lines[2]


async def test_show_prints_a_record_in_full_with_its_integrity(db: Database, cli: Cli) -> None:
    await _mixed(db)
    record = (await rows(db))[3]
    by_id = await cli("audit", "show", str(record["id"]))
    by_seq = await cli("audit", "show", "4")
    assert by_id.code == by_seq.code == 0
    assert by_id.out == by_seq.out
    assert "leaf hash matches content" in by_id.out
    assert "refund_create" in by_id.out
    as_json = json.loads((await cli("audit", "show", "4", "--json")).out)
    assert as_json["id"] == record["id"]
    missing = await cli("audit", "show", "aud_nope")
    assert missing.code == 2 and "no audit record aud_nope" in missing.err


async def test_a_bad_time_is_a_clear_error(db: Database, cli: Cli) -> None:
    result = await cli("audit", "export", "--since", "yesterday-ish")
    assert result.code == 2
    assert "not a time" in result.err


async def test_relative_times_count_back_from_now(db: Database, cli: Cli) -> None:
    await _mixed(db)  # all in 2025
    assert (await cli("audit", "export", "--since", "1h")).out == ""
    assert len((await cli("audit", "export", "--until", "1h")).out.splitlines()) == 5


async def test_a_missing_database_or_trail_is_a_clear_error(cli: Cli, tmp_path: Path) -> None:
    missing = await cli("audit", "verify", "--database-url", f"sqlite:///{tmp_path / 'nowhere.db'}")
    assert missing.code == 2 and "no database at" in missing.err
    (tmp_path / "empty.db").write_bytes(b"")
    empty = await cli("audit", "tail", "--database-url", f"sqlite:///{tmp_path / 'empty.db'}")
    assert empty.code == 2 and "cannot read the audit trail" in empty.err
