"""The sign-in pages: ``/console/login``, ``/console/callback`` and ``/console/logout`` (docs/console.md "Login").

The browser's side of the OAuth 2.1 authorization code flow with PKCE that :mod:`.login` runs against the issuer:
the login starts a pre-login session holding ``state`` and the PKCE verifier (RFC 6749 section 10.12, RFC 7636)
and redirects to the issuer; the callback checks ``state`` against this browser's session, exchanges the code,
verifies the token with the same verifier as MCP and replaces the session by a signed-in one under a new id (no
session fixation, :mod:`.sessions`). Signing out is a form, so it carries the CSRF token (:func:`.web.checked_form`).
Signing in and out are recorded (:mod:`.events`: ``signed_in``, ``signed_out``).
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from server.auth.errors import InvalidToken
from server.console import events, sessions
from server.console.login import LoginClient, LoginError, pkce_pair
from server.console.page_group import PageGroup
from server.console.web import (
    call_info,
    checked_form,
    clear_cookie,
    read_cookie,
    render,
    safe_return_to,
    set_cookie,
    signed_in,
)

if TYPE_CHECKING:
    from server.app import Mandate


class LoginPages(PageGroup):
    def __init__(self, mandate: Mandate) -> None:
        super().__init__(mandate)
        self.login = LoginClient(mandate.settings, mandate.http_client)

    async def login_start(self, request: Request) -> Response:
        return_to = safe_return_to(request.query_params.get("next"))
        if await signed_in(self.mandate, request) is not None:
            return RedirectResponse(return_to, status_code=303)
        state = secrets.token_urlsafe(32)
        verifier, challenge = pkce_pair()
        try:
            url = await self.login.authorization_url(state=state, challenge=challenge)
        except LoginError as exc:
            return render(
                self.mandate, request, "error.html", None, status=503, title="Cannot sign in", message=str(exc)
            )

        async def work(session: Any) -> str:
            await sessions.purge_expired(session, self._now)
            return await sessions.start(session, self._now, state=state, verifier=verifier, return_to=return_to)

        cookie = await self.mandate.db.run_in_transaction(work)
        response = RedirectResponse(url, status_code=303)
        set_cookie(self.mandate, request, response, cookie, int(sessions.LOGIN_TTL.total_seconds()))
        return response

    async def callback(self, request: Request) -> Response:
        params = request.query_params
        cookie = read_cookie(self.mandate, request)
        async with self.mandate.db.session() as session:
            pending = await sessions.load(session, cookie, self._now)
        state = params.get("state", "")
        if pending is None or pending.login_state is None or not secrets.compare_digest(pending.login_state, state):
            return self._login_failed(request, "This sign-in was not started in this browser, or took too long.")
        if params.get("error"):
            return self._login_failed(request, f"The issuer did not sign you in ({params.get('error')}).")
        try:
            token = await self.login.exchange(
                code=params.get("code", ""), verifier=pending.login_verifier or "", iss=params.get("iss")
            )
            principal = await self.mandate.verifier.verify(token)
        except LoginError as exc:
            return self._login_failed(request, str(exc))
        except InvalidToken as exc:
            return self._login_failed(request, f"The issuer's token is not accepted here: {exc.description}")
        now = self._now
        ttl = timedelta(seconds=self.mandate.settings.console.session_ttl_seconds)
        expires = min(now + ttl, principal.expires_at)

        async def work(session: Any) -> str:
            row = await sessions.load(session, cookie, now)
            if row is None:
                raise LoginError("the sign-in session ended meanwhile")
            return await sessions.complete(
                session, row, token=token, subject=principal.subject, expires_at=expires, now=now
            )

        try:
            new_cookie = await self.mandate.db.run_in_transaction(work)
        except LoginError as exc:
            return self._login_failed(request, str(exc))
        await events.record(
            self.mandate,
            principal,
            call_info(request),
            action="signed_in",
            allowed=True,
            details={"until": str(expires)},
        )
        response = RedirectResponse(safe_return_to(pending.return_to), status_code=303)
        set_cookie(self.mandate, request, response, new_cookie, max(1, int((expires - now).total_seconds())))
        return response

    def _login_failed(self, request: Request, message: str) -> Response:
        response = render(
            self.mandate, request, "error.html", None, status=400, title="Sign-in failed", message=message
        )
        clear_cookie(self.mandate, request, response)
        return response

    async def logout(self, request: Request) -> Response:
        signed = await signed_in(self.mandate, request)
        if signed is None:
            return RedirectResponse("/console/login", status_code=303)
        form = await checked_form(self.mandate, request, signed)
        if isinstance(form, Response):
            return form

        async def work(session: Any) -> None:
            await sessions.end(session, signed.cookie)

        await self.mandate.db.run_in_transaction(work)
        await events.record(self.mandate, signed.principal, call_info(request), action="signed_out", allowed=True)
        response = render(self.mandate, request, "signed_out.html", None)
        clear_cookie(self.mandate, request, response)
        return response
