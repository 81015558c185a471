"""What every group of console pages shares (:class:`PageGroup`): the clock, tool calls as the signed-in person,
the checks in front of a handler (signed in, a posted form's CSRF token, the ``audit:read`` scope) and their
answers, and the one-time message a page shows after a redirect.

- A tool call from a page goes through the enforcer with transport ``console`` (:func:`.web.call_info`), as the
  person whose session it is: the scope, approver-claim and separation-of-duties checks and the audit record are
  those of MCP and the CLI (docs/console.md, docs/decisions.md "The web console decides through the tools").
- Reading the audit trail, agents and the policy needs the scope of the ``audit_search`` tool, read from the catalog.
- The flash message is kept in the session row (:mod:`.sessions`): a form that succeeds stores it and redirects
  (303, Post/Redirect/Get), and the next page shows it once and clears it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from server.auth.principal import Principal
from server.console import sessions
from server.console.web import Signed, call_info, checked_form, login_redirect, render, signed_in

if TYPE_CHECKING:
    from server.app import Mandate

AUDIT_TOOL = "audit_search"
"""The tool whose scope (``audit:read``) the audit, agents and policy pages need."""


class PageGroup:
    """The base of each group of pages: the running server, and the helpers its handlers share."""

    def __init__(self, mandate: Mandate) -> None:
        self.mandate = mandate

    @property
    def _now(self) -> datetime:
        return self.mandate.enforcer.clock()

    async def _call(self, signed: Signed, request: Request, tool: str, arguments: dict[str, Any]) -> tuple[bool, Any]:
        result = await self.mandate.enforcer.call_tool(signed.principal, tool, arguments, call_info(request))
        return (not result.is_error), dict(result.structured_content or {})

    async def _signed(self, request: Request, *, reading: str | None = None) -> Signed | Response:
        """The signed-in person, or the answer instead of the page: the sign-in redirect, or (``reading``: what the
        page does, for the message) the 403 page when their token lacks the ``audit:read`` scope."""
        signed = await signed_in(self.mandate, request)
        if signed is None:
            return login_redirect(request)
        if reading is not None and not self._may_read_audit(signed.principal):
            return self._forbidden(request, signed, reading)
        return signed

    async def _posted(
        self, request: Request, *, reading: str | None = None
    ) -> tuple[Signed, dict[str, str]] | Response:
        """:meth:`_signed` for a form post, with its fields once its CSRF token (and origin) are checked; the scope is
        checked after the form, so a forged post is refused as forged whoever is signed in."""
        signed = await self._signed(request)
        if isinstance(signed, Response):
            return signed
        form = await checked_form(self.mandate, request, signed)
        if isinstance(form, Response):
            return form
        if reading is not None and not self._may_read_audit(signed.principal):
            return self._forbidden(request, signed, reading)
        return signed, form

    def _may_read_audit(self, principal: Principal) -> bool:
        entry = self.mandate.catalog.get(AUDIT_TOOL)
        return entry is not None and entry.spec.requires.is_met_by(principal.scopes)

    def _forbidden(self, request: Request, signed: Signed, what: str) -> Response:
        return self._not_permitted(
            request,
            signed,
            f"Your token does not grant {what}: it needs the audit:read scope. Ask for it, then sign in again.",
        )

    def _not_permitted(self, request: Request, signed: Signed, message: str) -> Response:
        """The 403 page, saying why."""
        return render(self.mandate, request, "error.html", signed, status=403, title="Not permitted", message=message)

    async def _take_flash(self, signed: Signed) -> str | None:
        if signed.row.flash is None:
            return None
        message = signed.row.flash

        async def work(session: Any) -> None:
            row = await sessions.load(session, signed.cookie, self._now)
            if row is not None:
                row.flash = None
                session.add(row)

        await self.mandate.db.run_in_transaction(work)
        return message

    async def _set_flash(self, signed: Signed, message: str) -> None:
        async def work(session: Any) -> None:
            row = await sessions.load(session, signed.cookie, self._now)
            if row is not None:
                row.flash = message
                session.add(row)

        await self.mandate.db.run_in_transaction(work)
