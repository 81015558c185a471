"""The console's request plumbing: who is signed in, the session cookie, CSRF on every form, rendering.

- Cookie (RFC 6265bis): ``HttpOnly``, ``SameSite=Strict``, ``Path=/console``; over https also ``Secure`` and the
  ``__Host-`` prefix (then ``Path=/``, as the prefix requires). Its value is an opaque id (:mod:`.sessions`).
- CSRF: every POST must carry the session's synchronizer token in the ``csrf`` field (OWASP "Synchronizer Token
  Pattern"), and when the browser sends ``Origin`` it must be this server's. A refused form changes nothing and is
  audited.
- Responses: ``Cache-Control: no-store``, a Content-Security-Policy allowing this origin only (no inline script),
  ``frame-ancestors 'none'``, ``Referrer-Policy: same-origin``, ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from server.auth.errors import InvalidToken
from server.auth.principal import Principal
from server.callpath.record import CallInfo
from server.console import events, sessions
from server.console.sessions import ConsoleSession
from server.display import escape_text, json_text

if TYPE_CHECKING:
    from server.app import Mandate

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'; object-src 'none'",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def _shown(value: Any) -> Any:
    """Every ``{{ }}`` value passes here before HTML escaping: agent-supplied text gets its controls and bidi marks
    escaped (:func:`server.display.escape_text`, docs/decisions.md "Agent-supplied text is stored exactly and
    shown escaped"); markup the templates built themselves (``| json``) is left as it is."""
    if isinstance(value, Markup) or value is None or isinstance(value, bool | int | float):
        return value
    return escape_text(value)


def _json(value: Any) -> Markup:
    """Indented JSON for people (:func:`server.display.json_text`), HTML-escaped."""
    return Markup(escape(json_text(value, indent=2, sort_keys=True)))  # noqa: S704 - escaped just before


templates = Environment(
    loader=PackageLoader("server.console", "templates"),
    autoescape=select_autoescape(default=True),
    auto_reload=False,
    trim_blocks=True,
    lstrip_blocks=True,
    finalize=_shown,
)
templates.filters["json"] = _json


@dataclass(slots=True)
class Signed:
    """A signed-in person on this request: their session row and the principal their token verifies to."""

    row: ConsoleSession
    principal: Principal
    cookie: str


def is_https(mandate: Mandate, request: Request) -> bool:
    return request.url.scheme == "https" or mandate.settings.base_url.startswith("https://")


def cookie_name(secure: bool) -> str:
    return "__Host-mandate_console" if secure else "mandate_console"


def read_cookie(mandate: Mandate, request: Request) -> str | None:
    return request.cookies.get(cookie_name(is_https(mandate, request)))


def set_cookie(mandate: Mandate, request: Request, response: Response, value: str, max_age: int) -> None:
    secure = is_https(mandate, request)
    response.set_cookie(
        cookie_name(secure),
        value,
        max_age=max_age,
        path="/" if secure else "/console",
        secure=secure,
        httponly=True,
        samesite="strict",
    )


def clear_cookie(mandate: Mandate, request: Request, response: Response) -> None:
    secure = is_https(mandate, request)
    response.delete_cookie(
        cookie_name(secure), path="/" if secure else "/console", secure=secure, httponly=True, samesite="strict"
    )


def call_info(request: Request) -> CallInfo:
    return CallInfo(
        transport="console",
        client_address=request.client.host if request.client else None,
        client_name=events.CLIENT_NAME,
        client_version=None,
    )


async def signed_in(mandate: Mandate, request: Request) -> Signed | None:
    """The signed-in person, their token verified again now (the same verifier as MCP), or None."""
    cookie = read_cookie(mandate, request)
    now = mandate.enforcer.clock()
    async with mandate.db.session() as session:
        row = await sessions.load(session, cookie, now)
    if row is None or row.access_token is None or cookie is None:
        return None
    try:
        principal = await mandate.verifier.verify(row.access_token)
    except InvalidToken:
        return None
    return Signed(row, principal, cookie)


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/console/login?next={quote(target, safe='')}", status_code=303)


def safe_return_to(value: str | None) -> str:
    """Only a path of this console (no scheme, no host, no backslash trick): an open redirect is refused."""
    if not value or not value.startswith("/console") or value.startswith("//") or "\\" in value:
        return "/console/approvals"
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else "/console/approvals"


def same_origin(mandate: Mandate, request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    allowed = {mandate.settings.base_url.rstrip("/"), f"{request.url.scheme}://{request.url.netloc}"}
    return origin.rstrip("/") in allowed


async def checked_form(mandate: Mandate, request: Request, signed: Signed) -> dict[str, str] | Response:
    """The posted form when it carries this session's CSRF token (and a same-origin Origin); else a 403 page."""
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    if sessions.csrf_matches(signed.row, form.get("csrf")) and same_origin(mandate, request):
        return form
    await events.record(
        mandate,
        signed.principal,
        call_info(request),
        action="refused",
        allowed=False,
        code="csrf",
        reason="a form was posted without this session's CSRF token (or from another origin); nothing was done",
        details={"path": request.url.path},
    )
    return render(
        mandate,
        request,
        "error.html",
        signed,
        status=403,
        title="Form refused",
        message="This form was refused because it did not carry this session's security token (CSRF protection). "
        "Nothing was done. Reload the page and try again.",
    )


def render(
    mandate: Mandate, request: Request, template: str, signed: Signed | None, *, status: int = 200, **data: Any
) -> HTMLResponse:
    flash = data.pop("flash", None)
    html = templates.get_template(template).render(
        request_path=request.url.path,
        person=signed.principal if signed else None,
        csrf=signed.row.csrf if signed else None,
        flash=flash,
        settings=mandate.settings,
        **data,
    )
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def when(value: datetime | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


templates.filters["when"] = when
