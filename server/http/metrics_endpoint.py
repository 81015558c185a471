"""``GET /metrics``: the Prometheus text exposition of this process (:mod:`server.observability.metrics`).

Who may scrape (docs/operations.md, "Metrics"; decisions.md): a client on the loopback interface needs nothing
(``metrics.allow_loopback``, the default: a Prometheus or agent on the same host), anyone else presents either the
static scrape token ``metrics.token`` or an access token from a trusted issuer carrying the scope ``metrics:read``
(RFC 6750: a missing or bad credential is 401 with ``WWW-Authenticate: Bearer``, a token without the scope is 403
``insufficient_scope``). Metrics hold no personal data or secrets, but they show who is active and how much, so
they are not public. Behind a reverse proxy on the same host every request looks like loopback: set
``allow_loopback = false`` there.
"""

from __future__ import annotations

import hmac

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.auth.errors import InvalidToken
from server.auth.jwt_verifier import TokenVerifier
from server.config import MetricsSettings
from server.observability.metrics import Metrics

SCOPE = "metrics:read"
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def metrics_route(metrics: Metrics, settings: MetricsSettings, verifier: TokenVerifier) -> Route:
    async def endpoint(request: Request) -> Response:
        refused = await _refusal(request)
        if refused is not None:
            return refused
        return Response(
            await metrics.exposition(), media_type=CONTENT_TYPE_LATEST, headers={"cache-control": "no-store"}
        )

    async def _refusal(request: Request) -> Response | None:
        client = request.client.host if request.client else None
        if settings.allow_loopback and client in _LOOPBACK:
            return None
        token = _bearer(request)
        challenge = {"www-authenticate": f'Bearer scope="{SCOPE}"'}
        if token is None:
            return JSONResponse(
                {"error": "invalid_request", "error_description": "a bearer token is required"},
                status_code=401,
                headers=challenge,
            )
        static = settings.token.get_secret_value() if settings.token else ""
        if static and hmac.compare_digest(token.encode(), static.encode()):
            return None
        try:
            principal = await verifier.verify(token)
        except InvalidToken as exc:
            return JSONResponse(
                {"error": "invalid_token", "error_description": exc.description},
                status_code=401,
                headers={"www-authenticate": f'Bearer error="invalid_token", scope="{SCOPE}"'},
            )
        if SCOPE not in principal.scopes:
            return JSONResponse(
                {"error": "insufficient_scope", "scope": SCOPE},
                status_code=403,
                headers={"www-authenticate": f'Bearer error="insufficient_scope", scope="{SCOPE}"'},
            )
        return None

    return Route("/metrics", endpoint, methods=["GET"])
