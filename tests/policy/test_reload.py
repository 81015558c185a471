"""A changed policy file is picked up without a restart; an invalid one is logged and the last good one stays."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest
from sqlmodel import col, select

from scopes.policy import PolicyError
from server.audit.models import AuditRecord
from server.policy_runtime import PolicyRuntime
from tests.policy.conftest import PolicyHarness

CAP = """
    version = "{version}"
    [[rules]]
    id = "refund-cap"
    kind = "cap"
    tools = ["refund_create"]
    amount = "args.amount"
    limit = {{ EUR = "{limit}" }}
    above = "approval"
"""


def _write(path: Path, version: str, limit: str) -> None:
    path.write_text(textwrap.dedent(CAP.format(version=version, limit=limit)))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_changed_file_is_loaded_at_the_next_check(tmp_path: Path) -> None:
    path, clock = tmp_path / "policy.toml", Clock()
    _write(path, "v1", "100.00")
    runtime = PolicyRuntime(path, check_every=1.0, monotonic=clock)
    assert runtime.current().version.startswith("v1+")
    _write(path, "v2", "200.00")
    clock.now = 0.5
    assert runtime.current().version.startswith("v1+"), "checked again before check_every passed"
    clock.now = 1.0
    assert runtime.current().version.startswith("v2+")


def test_an_invalid_file_keeps_the_last_good_policy_and_logs_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, clock = tmp_path / "policy.toml", Clock()
    _write(path, "v1", "100.00")
    runtime = PolicyRuntime(path, check_every=1.0, monotonic=clock)
    _write(path, "v2", "1,000.00")
    clock.now = 1.0
    with caplog.at_level(logging.ERROR, logger="server.policy_runtime"):
        assert runtime.current().version.startswith("v1+")
    assert "rule 'refund-cap' (rules[0]): field limit" in caplog.text
    assert runtime.last_error is not None and runtime.last_error.startswith(f"{path}: rule 'refund-cap'")
    path.unlink()
    clock.now = 2.0
    assert runtime.current().version.startswith("v1+")
    _write(path, "v3", "300.00")
    clock.now = 3.0
    assert runtime.current().version.startswith("v3+") and runtime.last_error is None


def test_a_policy_that_does_not_load_at_start_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('version = "v1"\ntimezone = "Mars/Olympus"\n')
    with pytest.raises(PolicyError, match="unknown time zone"):
        PolicyRuntime(path)


@pytest.mark.anyio
async def test_a_running_server_decides_with_the_new_policy_and_records_its_version(
    policy_harness: PolicyHarness,
) -> None:
    harness = await policy_harness(CAP.format(version="v1", limit="100.00"))
    runtime = harness.mandate.enforcer.policies
    assert isinstance(runtime, PolicyRuntime)
    arguments = {"order_id": "ord_5002", "amount": "150.00", "currency": "EUR", "reason": "damaged"}
    async with harness.client("refunds") as client:
        before = await client.call_tool("refund_create", arguments)
        _write(runtime.path, "v2", "200.00")
        runtime.reload()
        after = await client.call_tool("refund_create", arguments)
    assert before.structured_content is not None and before.structured_content["status"] == "pending_approval"
    assert not after.is_error and after.structured_content is not None
    assert after.structured_content["amount"] == "150.00"
    async with harness.mandate.db.session() as session:
        versions = (
            await session.exec(
                select(AuditRecord.policy_version)
                .where(AuditRecord.tool == "refund_create")
                .order_by(col(AuditRecord.seq))
            )
        ).all()
    assert [v is not None and v.split("+")[0] for v in versions] == ["v1", "v2"]


def test_a_successful_reload_is_logged_at_info_not_as_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, clock = tmp_path / "policy.toml", Clock()
    _write(path, "v1", "100.00")
    runtime = PolicyRuntime(path, check_every=1.0, monotonic=clock)
    _write(path, "v2", "200.00")
    clock.now = 1.0
    with caplog.at_level(logging.DEBUG, logger="server.policy_runtime"):
        assert runtime.current().version.startswith("v2+")
    (reloaded,) = [record for record in caplog.records if "policy reloaded" in record.getMessage()]
    assert reloaded.levelno == logging.INFO
