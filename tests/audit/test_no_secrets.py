"""No access token, key or secret ever appears in an audit record, a log line or an error.

Real calls with real tokens, good and bad, over the in-memory client and over HTTP; then the database (its files on
SQLite, every row of every table on both engines), every log record captured at DEBUG, every error text and
response, and the CLI's output are searched for the token strings, the development issuer's private key ``d`` and
the checkpoint signing key.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import inspect, text

from server.audit.checkpoint import default_key_path, load_or_create_signing_key
from tests.audit.conftest import Cli
from tests.live import LiveServer, live_server

pytestmark = pytest.mark.anyio

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
REFUND = {"order_id": "ord_5001", "amount": "2.00", "currency": "EUR", "reason": "damaged"}


@pytest.fixture
async def live(tmp_path: Path, database_url: str) -> AsyncIterator[LiveServer]:
    async with live_server(tmp_path / "data", database_url) as server:
        yield server


def _tokens(live: LiveServer) -> tuple[list[str], list[str]]:
    harness = live.harness
    now = int(time.time())
    good = [harness.token(agent) for agent in ("support", "refunds", "senior", "supervisor")]
    valid = harness.token("refunds")
    foreign = ECKey.generate_key("P-256", private=True)
    bad = [
        harness.signed(harness.claims(iat=now - 7200, nbf=now - 7200, exp=now - 3600)),  # expired
        valid[:-4] + ("AAAA" if not valid.endswith("AAAA") else "BBBB"),  # signature tampered
        harness.signed(harness.claims(aud="https://elsewhere.example/mcp")),
        harness.signed(harness.claims(iss="https://evil.example")),
        jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": harness.issuer.kid}, harness.claims(), foreign),
        "not-a-jwt-" + valid[-20:],
    ]
    return good, bad


def _call(name: str, arguments: dict[str, object]) -> str:
    return json.dumps(
        {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": arguments}}
    )


async def _exercise(live: LiveServer, good: list[str], bad: list[str]) -> list[str]:
    """Make every kind of call with every token; return every text the callers saw."""
    seen: list[str] = []
    for token in good + bad:
        async with live.harness.client_with_token(token) as client:
            listing = await client.list_tools()
            seen.append(listing.model_dump_json())
            for name, arguments in (
                ("refund_create", REFUND),
                ("orders_list", {"customer_id": "cus_1001"}),
                ("account_email_change", {"customer_id": "cus_1003", "new_email": "a.t@example.org"}),
                ("audit_search", {"limit": 5}),
                ("order_get", {"order_id": 5001}),
            ):
                result = await client.call_tool(name, arguments)
                seen.append(result.model_dump_json())
    async with httpx2.AsyncClient(timeout=10) as http:
        for token in good + bad:
            for name, arguments in (("refund_create", REFUND), ("orders_list", {"customer_id": "cus_1001"})):
                response = await http.post(
                    live.url, content=_call(name, arguments), headers={**ACCEPT, "Authorization": f"Bearer {token}"}
                )
                seen.append(f"{response.status_code} {dict(response.headers)} {response.text}")
    async with live.client(good[0]) as client:
        seen.append((await client.call_tool("orders_list", {"customer_id": "cus_1001"})).model_dump_json())
    return seen


async def _database_text(live: LiveServer, database_url: str) -> str:
    db = live.mandate.db
    parts: list[str] = []
    if db.is_sqlite:
        path = Path(database_url.split("///", 1)[1])
        for suffix in ("", "-wal", "-shm"):
            candidate = path.with_name(path.name + suffix)
            if candidate.exists():
                parts.append(candidate.read_bytes().decode("latin-1"))
    async with db.engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        assert "audit_records" in tables and "refunds" in tables
        for table in tables:
            result = await connection.execute(text(f'SELECT * FROM "{table}"'))  # noqa: S608 - names from the catalog
            parts.extend(repr(tuple(row)) for row in result)
    return "\n".join(parts)


def _needles(tokens: list[str], data_dir: Path, checkpoint_key_path: Path) -> dict[str, str]:
    needles: dict[str, str] = {}
    for index, token in enumerate(tokens):
        needles[f"token {index}"] = token
        signature = token.rsplit(".", 1)[-1]
        if len(signature) >= 16:
            needles[f"token {index} signature"] = signature
    issuer_key = json.loads((data_dir / "dev-issuer" / "signing-key.json").read_text())
    needles["dev issuer d"] = issuer_key["d"]
    key, _ = load_or_create_signing_key(checkpoint_key_path)
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    needles["checkpoint key hex"] = raw.hex()
    needles["checkpoint key base64"] = base64.b64encode(raw).decode().rstrip("=")
    needles["checkpoint key base64url"] = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    pem = checkpoint_key_path.read_text()
    needles["checkpoint key PEM"] = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    return needles


async def test_no_token_key_or_secret_appears_in_records_logs_or_errors(
    live: LiveServer, database_url: str, cli: Cli, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good, bad = _tokens(live)
    seen = await _exercise(live, good, bad)
    data_dir = live.mandate.settings.data_dir
    outputs = []
    signed = await cli("audit", "checkpoint")
    assert signed.code == 0, signed.err
    checkpoint = next((data_dir / "audit-checkpoints").glob("*.json"))
    for argv in (
        ("audit", "verify", "--checkpoint", str(checkpoint)),
        ("audit", "tail", "-n", "200"),
        ("audit", "export", "--format", "jsonl"),
        ("audit", "show", "1"),
        ("audit", "lineage", "--client-id", "refunds-agent"),
    ):
        result = await cli(*argv)
        assert result.code == 0, (argv, result.out, result.err)
        outputs.append(result.out + result.err)
    outputs.append(signed.out + signed.err)
    checkpoint_files = [path.read_text() for path in (data_dir / "audit-checkpoints").glob("*.json")]
    logs = "\n".join(logging.Formatter().format(record) for record in caplog.records)
    haystacks = {
        "database": await _database_text(live, database_url),
        "logs": logs,
        "errors and responses": "\n".join(seen),
        "CLI output": "\n".join(outputs),
        "checkpoint files": "\n".join(checkpoint_files),
    }
    # the search finds what is there: the token ids (not secrets) of the good tokens are in the records
    token_ids = [json.loads(base64.urlsafe_b64decode(t.split(".")[1] + "==").decode())["jti"] for t in good]
    assert all(token_id in haystacks["database"] for token_id in token_ids)
    assert len(haystacks["logs"]) > 1000
    needles = _needles(good + bad, data_dir, default_key_path(data_dir))
    leaks = [
        f"{needle_name} in {where}"
        for needle_name, needle in needles.items()
        for where, haystack in haystacks.items()
        if needle in haystack
    ]
    assert leaks == []


def test_the_settings_summary_hides_database_passwords_in_the_url_and_in_its_query() -> None:
    from server.config import Settings

    url = "postgresql://mandate:pw-in-url@db.internal/mandate?password=pw-in-query&sslmode=require"
    summary = Settings(database_url=url).describe()
    assert "pw-in-url" not in summary and "pw-in-query" not in summary
    assert "db.internal/mandate" in summary
