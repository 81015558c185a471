"""docs/authorization-servers.md, checked against a real authorization server (oauth2-mock-server): scopes carried
in the claims Entra ID, Okta and Auth0 use, an API identifier as the audience, and the `typ` refusal log line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .peers import (
    Inspector,
    MandateInstance,
    MockIssuer,
    contract_tools,
    inspector_tool_names,
    mcp_initialize,
    new_mandate,
    tools_for,
)

pytestmark = [pytest.mark.interop]

API_IDENTIFIER = "api://mandate-interop"


@pytest.fixture(scope="module")
def mapped(tmp_path_factory: pytest.TempPathFactory, mock_issuer: MockIssuer) -> Iterator[MandateInstance]:
    """A Mandate configured as docs/authorization-servers.md says for an issuer writing scp, roles or permissions."""
    instance = new_mandate(
        tmp_path_factory.mktemp("mapped"),
        dev_issuer=False,
        issuers=[mock_issuer],
        settings=[f'audiences = ["{API_IDENTIFIER}"]'],
        issuer_settings=['scope_claims = ["scp", "roles", "permissions"]'],
    )
    with instance.serve():
        yield instance


@pytest.mark.parametrize("scope_as", ["scp", "scp_list", "roles", "permissions"])
def test_scopes_in_the_claim_a_real_server_uses_show_exactly_their_tools(
    mapped: MandateInstance, mock_issuer: MockIssuer, inspector: Inspector, scope_as: str
) -> None:
    scopes = ["customers:read", "orders:read"]
    token = mock_issuer.mint(scope=" ".join(scopes), aud=API_IDENTIFIER, scope_as=scope_as)

    names = inspector_tool_names(inspector.http(mapped.mcp_url, token, "--method", "tools/list"))
    assert contract_tools(names) == tools_for(scopes)


def test_once_scope_claims_are_configured_a_plain_scope_claim_grants_nothing(
    mapped: MandateInstance, mock_issuer: MockIssuer, inspector: Inspector
) -> None:
    token = mock_issuer.mint(scope="orders:read", aud=mapped.mcp_url)
    names = inspector_tool_names(inspector.http(mapped.mcp_url, token, "--method", "tools/list"))
    assert contract_tools(names) == tools_for([])


def test_an_audience_neither_the_resource_url_nor_configured_is_refused(
    mapped: MandateInstance, mock_issuer: MockIssuer
) -> None:
    token = mock_issuer.mint(scope="orders:read", aud="api://another-api", scope_as="scp")
    assert mcp_initialize(mapped.mcp_url, token).status == 401


def test_a_refused_jwt_typ_is_logged_on_the_server_with_the_setting_that_accepts_it(
    tmp_path: Path, mock_issuer: MockIssuer
) -> None:
    instance = new_mandate(tmp_path / "strict", dev_issuer=False, issuers=[mock_issuer], accepted_types=["at+jwt"])
    with instance.serve():
        response = mcp_initialize(instance.mcp_url, mock_issuer.mint(scope="orders:read", aud=instance.mcp_url))
    assert response.status == 401
    assert "token type JWT not accepted; expected typ at+jwt" in (response.header("WWW-Authenticate") or "")
    log = (instance.data_dir.parent / f"mandate-serve-{instance.port}.log").read_text()
    assert f"token type JWT not accepted from issuer {mock_issuer.url}" in log
    assert "accepted_types" in log
