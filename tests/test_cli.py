"""The command line: the scope table for security teams, development tokens, and clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.cli import main


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for variable in ("MANDATE_CONFIG", "MANDATE_ISSUER", "MANDATE_DATABASE_URL", "MANDATE_DEV_ISSUER"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("MANDATE_DATA_DIR", str(tmp_path / "data"))


def test_the_scope_table_names_each_scope_with_the_tools_that_need_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scopes"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "refund_create" in rows["refunds:create"]
    assert "refund_create" in rows["refunds:create:large"]
    assert "order_get" in rows["orders:read"] and "orders_list" in rows["orders:read"]


def test_a_minted_token_for_an_agent_carries_the_agents_scopes(capsys: pytest.CaptureFixture[str]) -> None:
    import json
    from base64 import urlsafe_b64decode

    assert main(["token", "mint", "--agent", "refunds"]) == 0
    token = capsys.readouterr().out.strip()
    payload = token.split(".")[1]
    claims = json.loads(urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["scope"] == "customers:read orders:read refunds:create"
    assert claims["aud"] == "http://127.0.0.1:8000/mcp"
    assert claims["iss"] == "http://127.0.0.1:8000/dev-issuer"
    assert (claims["client_id"], claims["sub"]) == ("refunds-agent", "agent:refunds")


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["token", "mint", "--agent", "nobody"], "unknown agent 'nobody'"),
        (["token", "mint", "--scope", "refunds:everything"], "unknown scope(s): refunds:everything"),
        (["token", "mint"], "give --agent NAME or --scope"),
        (["serve"], "no trusted issuer is configured"),
    ],
)
def test_bad_input_gets_one_clear_line_and_exit_code_2(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert said in err
    assert "Traceback" not in err


def test_an_invalid_config_file_is_named_with_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mandate.toml"
    config.write_text('[[issuers]]\nissuer = "https://auth.example"\nalgorithms = ["HS256"]\n')
    monkeypatch.setenv("MANDATE_CONFIG", str(config))
    assert main(["scopes"]) == 2
    err = capsys.readouterr().err
    assert str(config) in err
    assert "issuers.0.algorithms" in err
    assert "HS256" in err
