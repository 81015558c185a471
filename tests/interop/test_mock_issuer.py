"""oauth2-mock-server (a real OAuth 2 authorization server with RS256 keys) as a trusted issuer of Mandate."""

from __future__ import annotations

from pathlib import Path

import pytest

from .peers import (
    Inspector,
    MandateInstance,
    MockIssuer,
    contract_tools,
    inspector_call_result,
    inspector_tool_names,
    mcp_initialize,
    new_mandate,
    start_mock_issuer,
    tools_for,
)

pytestmark = [pytest.mark.interop]


def assert_bearer_challenge(response_status: int, www_authenticate: str | None, mandate: MandateInstance) -> None:
    assert response_status == 401
    assert www_authenticate is not None
    assert www_authenticate.lower().startswith("bearer")
    assert "resource_metadata=" in www_authenticate
    assert mandate.metadata_url in www_authenticate


def test_a_mock_issuer_token_for_this_resource_shows_exactly_its_scoped_tools_and_can_call_one(
    mandate: MandateInstance, mock_issuer: MockIssuer, inspector: Inspector
) -> None:
    token = mock_issuer.mint(scope="orders:read", aud=mandate.mcp_url, client_id="ext-orders-bot")

    names = inspector_tool_names(inspector.http(mandate.mcp_url, token, "--method", "tools/list"))
    assert contract_tools(names) == tools_for(["orders:read"])

    call = inspector.http(
        mandate.mcp_url,
        token,
        "--method",
        "tools/call",
        "--tool-name",
        "orders_list",
        "--tool-args-json",
        '{"customer_id": "cus_1001"}',
    )
    assert "ord_" in str(inspector_call_result(call)), call.describe()


def test_a_mock_issuer_token_with_more_scopes_shows_more_tools(
    mandate: MandateInstance, mock_issuer: MockIssuer, inspector: Inspector
) -> None:
    scopes = ["customers:read", "orders:read", "orders:cancel", "refunds:create", "accounts:write"]
    token = mock_issuer.mint(scope=" ".join(scopes), aud=mandate.mcp_url)
    names = inspector_tool_names(inspector.http(mandate.mcp_url, token, "--method", "tools/list"))
    assert contract_tools(names) == tools_for(scopes)


def test_a_mock_issuer_token_for_another_audience_is_refused_with_401(
    mandate: MandateInstance, mock_issuer: MockIssuer, inspector: Inspector
) -> None:
    right = mock_issuer.mint(scope="orders:read", aud=mandate.mcp_url)
    assert mcp_initialize(mandate.mcp_url, right).status == 200

    wrong = mock_issuer.mint(scope="orders:read", aud="http://127.0.0.1:1/mcp")
    response = mcp_initialize(mandate.mcp_url, wrong)
    assert_bearer_challenge(response.status, response.header("WWW-Authenticate"), mandate)

    missing = mock_issuer.mint(scope="orders:read", aud="")
    assert mcp_initialize(mandate.mcp_url, missing).status == 401

    result = inspector.http(mandate.mcp_url, wrong, "--method", "tools/list")
    assert result.returncode == 3, result.describe()


def test_an_expired_mock_issuer_token_is_refused_with_401(
    mandate: MandateInstance, mock_issuer: MockIssuer, inspector: Inspector
) -> None:
    expired = mock_issuer.mint(scope="orders:read", aud=mandate.mcp_url, expired=True)
    response = mcp_initialize(mandate.mcp_url, expired)
    assert_bearer_challenge(response.status, response.header("WWW-Authenticate"), mandate)

    result = inspector.http(mandate.mcp_url, expired, "--method", "tools/list")
    assert result.returncode == 3, result.describe()


def test_a_token_from_an_untrusted_issuer_is_refused_even_with_the_right_audience(
    mandate: MandateInstance, mock_issuer: MockIssuer, tmp_path: Path
) -> None:
    # A second oauth2-mock-server that Mandate's config does not name: its own key and its own `iss`.
    with start_mock_issuer(tmp_path) as stranger:
        assert stranger.url != mock_issuer.url
        token = stranger.mint(scope="orders:read", aud=mandate.mcp_url)
        response = mcp_initialize(mandate.mcp_url, token)
    assert_bearer_challenge(response.status, response.header("WWW-Authenticate"), mandate)


def test_a_dev_issuer_token_is_refused_once_the_config_sets_dev_issuer_false(
    tmp_path: Path, mock_issuer: MockIssuer, inspector: Inspector
) -> None:
    instance = new_mandate(tmp_path / "mandate", dev_issuer=True, issuers=[mock_issuer])
    token = instance.mint_agent("support")

    with instance.serve():
        assert mcp_initialize(instance.mcp_url, token).status == 200

    instance.write_config(dev_issuer=False, issuers=[mock_issuer])
    with instance.serve():
        response = mcp_initialize(instance.mcp_url, token)
        assert_bearer_challenge(response.status, response.header("WWW-Authenticate"), instance)
        refused = inspector.http(instance.mcp_url, token, "--method", "tools/list")
        assert refused.returncode == 3, refused.describe()
        # The external issuer is still trusted on this instance.
        external = mock_issuer.mint(scope="orders:read", aud=instance.mcp_url)
        assert mcp_initialize(instance.mcp_url, external).status == 200


def test_an_issuer_configured_for_at_jwt_only_refuses_the_mock_issuers_plain_jwt_typ(
    tmp_path: Path, mock_issuer: MockIssuer
) -> None:
    instance = new_mandate(tmp_path / "mandate", dev_issuer=False, issuers=[mock_issuer], accepted_types=["at+jwt"])
    with instance.serve():
        plain = mock_issuer.mint(scope="orders:read", aud=instance.mcp_url)  # typ: JWT, the library's default
        response = mcp_initialize(instance.mcp_url, plain)
        assert_bearer_challenge(response.status, response.header("WWW-Authenticate"), instance)

        rfc9068 = mock_issuer.mint(scope="orders:read", aud=instance.mcp_url, typ="at+jwt")
        assert mcp_initialize(instance.mcp_url, rfc9068).status == 200
