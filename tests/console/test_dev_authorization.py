"""The development issuer as an authorization server: metadata, the pick-an-identity page, PKCE at the token
endpoint, dynamic client registration, and a real MCP client (the SDK's OAuth client) completing the flow."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from mcp.client import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from server.auth.dev_authorization import DevAuthorizationServer, s256
from server.config import Settings
from tests.live import LiveServer

pytestmark = pytest.mark.anyio

VERIFIER = "v" * 43
LOOPBACK = "http://127.0.0.1:33418/callback"


def _authorize_params(live: LiveServer, **overrides: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": "some-local-tool",
        "redirect_uri": LOOPBACK,
        "state": "s1",
        "code_challenge": s256(VERIFIER),
        "code_challenge_method": "S256",
        "resource": live.url,
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v}


async def _code(http: httpx2.AsyncClient, live: LiveServer, identity: str = "support", **overrides: str) -> str:
    picked = await http.post(
        f"{live.base_url}/dev-issuer/authorize",
        data={**_authorize_params(live, **overrides), "identity": identity, "decision": "allow"},
    )
    assert picked.status_code == 303, picked.text
    answer = parse_qs(urlsplit(picked.headers["location"]).query)
    assert answer["state"] == ["s1"] and answer["iss"] == [f"{live.base_url}/dev-issuer"]
    return answer["code"][0]


async def _token(http: httpx2.AsyncClient, live: LiveServer, code: str, **overrides: str) -> httpx2.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": "some-local-tool",
        "redirect_uri": LOOPBACK,
        "code_verifier": VERIFIER,
        **overrides,
    }
    return await http.post(f"{live.base_url}/dev-issuer/token", data=form)


async def test_the_metadata_lists_both_endpoints_and_says_it_is_for_development(live: LiveServer) -> None:
    async with httpx2.AsyncClient() as http:
        for path in (
            "/.well-known/oauth-authorization-server/dev-issuer",
            "/dev-issuer/.well-known/openid-configuration",
        ):
            metadata = (await http.get(f"{live.base_url}{path}")).json()
            assert metadata["authorization_endpoint"] == f"{live.base_url}/dev-issuer/authorize"
            assert metadata["token_endpoint"] == f"{live.base_url}/dev-issuer/token"
            assert metadata["registration_endpoint"] == f"{live.base_url}/dev-issuer/register"
            assert metadata["code_challenge_methods_supported"] == ["S256"]
            assert metadata["mandate_development_only"] is True


async def test_the_page_lists_the_development_identities_and_warns(live: LiveServer) -> None:
    async with httpx2.AsyncClient() as http:
        page = await http.get(f"{live.base_url}/dev-issuer/authorize", params=_authorize_params(live))
    assert page.status_code == 200 and "Development only." in page.text
    for name in ("support", "refunds", "supervisor", "compliance"):
        assert f'value="{name}"' in page.text


async def test_a_code_gives_one_token_for_this_server_with_the_identitys_scopes(live: LiveServer) -> None:
    async with httpx2.AsyncClient() as http:
        code = await _code(http, live, identity="refunds")
        issued = await _token(http, live, code)
        assert issued.status_code == 200 and issued.headers["cache-control"] == "no-store"
        principal = await live.mandate.verifier.verify(issued.json()["access_token"])
        assert principal.subject == "agent:refunds" and principal.client_id == "some-local-tool"
        assert principal.scopes == {"customers:read", "orders:read", "refunds:create"}
        again = await _token(http, live, code)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"code_verifier": "w" * 43}, "invalid_grant"),
        ({"code_verifier": ""}, "invalid_grant"),
        ({"redirect_uri": "http://127.0.0.1:9/other"}, "invalid_grant"),
        ({"client_id": "another-tool"}, "invalid_grant"),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
    ],
)
async def test_the_token_endpoint_refuses_a_code_without_its_exact_pkce_verifier_client_and_redirect(
    live: LiveServer, change: dict[str, str], error: str
) -> None:
    async with httpx2.AsyncClient() as http:
        response = await _token(http, live, await _code(http, live), **change)
    assert response.status_code == 400 and response.json()["error"] == error


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": ""}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"resource": "https://elsewhere.example/mcp"}, "invalid_target"),
    ],
)
async def test_an_authorization_request_without_s256_pkce_or_for_another_resource_is_sent_back_refused(
    live: LiveServer, change: dict[str, str], error: str
) -> None:
    async with httpx2.AsyncClient() as http:
        response = await http.get(f"{live.base_url}/dev-issuer/authorize", params=_authorize_params(live, **change))
    assert response.status_code == 303
    assert parse_qs(urlsplit(response.headers["location"]).query)["error"] == [error]


async def test_an_unregistered_client_with_a_remote_redirect_is_shown_an_error_and_never_redirected(
    live: LiveServer,
) -> None:
    async with httpx2.AsyncClient() as http:
        response = await http.get(
            f"{live.base_url}/dev-issuer/authorize",
            params=_authorize_params(live, redirect_uri="https://evil.example/cb"),
        )
    assert response.status_code == 400 and "location" not in response.headers
    assert "unknown client" in response.text


async def test_dynamic_registration_gives_a_public_client_bound_to_its_redirect_uris(live: LiveServer) -> None:
    async with httpx2.AsyncClient() as http:
        registered = await http.post(
            f"{live.base_url}/dev-issuer/register",
            json={"redirect_uris": ["https://app.example/cb"], "client_name": "An app"},
        )
        assert registered.status_code == 201
        client_id = registered.json()["client_id"]
        assert registered.json()["token_endpoint_auth_method"] == "none"
        ok = await http.get(
            f"{live.base_url}/dev-issuer/authorize",
            params=_authorize_params(live, client_id=client_id, redirect_uri="https://app.example/cb"),
        )
        assert ok.status_code == 200 and "An app" in ok.text
        other = await http.get(
            f"{live.base_url}/dev-issuer/authorize",
            params=_authorize_params(live, client_id=client_id, redirect_uri="https://app.example/other"),
        )
        assert other.status_code == 400
        bad = await http.post(f"{live.base_url}/dev-issuer/register", json={"redirect_uris": []})
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_redirect_uri"


class _Memory:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


async def test_an_mcp_client_registers_logs_in_and_calls_tools_with_nothing_pasted_by_hand(live: LiveServer) -> None:
    answer: dict[str, Any] = {}

    async def sign_in(url: str) -> None:  # what a person does in the browser the client opens
        async with httpx2.AsyncClient() as http:
            page = await http.get(url)
            assert page.status_code == 200
            params = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
            picked = await http.post(
                f"{live.base_url}/dev-issuer/authorize", data={**params, "identity": "support", "decision": "allow"}
            )
        answer.update({k: v[0] for k, v in parse_qs(urlsplit(picked.headers["location"]).query).items()})

    async def callback() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code=answer["code"], state=answer.get("state"), iss=answer.get("iss"))

    storage = _Memory()
    auth = OAuthClientProvider(
        live.url,
        OAuthClientMetadata(redirect_uris=[LOOPBACK], client_name="SDK test client"),  # type: ignore[list-item]
        storage,
        redirect_handler=sign_in,
        callback_handler=callback,
    )
    async with (
        httpx2.AsyncClient(auth=auth, timeout=20) as http,
        Client(streamable_http_client(live.url, http_client=http)) as client,
    ):
        tools = await client.list_tools()
    assert {"customer_lookup", "order_get"} <= {tool.name for tool in tools.tools}
    assert storage.client is not None and storage.client.client_id.startswith("dev-")


def test_a_scope_catalog_without_matching_agents_leaves_the_page_with_no_identities(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text('[scopes."things:read"]\ndescription = "read things"\n')
    settings = Settings(data_dir=tmp_path / "data", dev_issuer=True, catalog_path=catalog)
    assert DevAuthorizationServer.for_settings(settings).agents.agents == {}
