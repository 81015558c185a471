"""Console sessions, kept server-side: the cookie carries an opaque random id, the database keeps the rest.

OWASP Session Management: the cookie value is 256 random bits; the table stores only its SHA-256, so a database
reader cannot replay a cookie. A session starts before login (holding the OAuth ``state`` and PKCE verifier of the
login in flight, RFC 6749 section 10.12 and RFC 7636), and gets a new id when the login completes (no session
fixation). It ends at ``console.session_ttl_seconds`` or when the person's access token expires, whichever is first.

The access token is kept in the row (never in the cookie, a URL or a log line) and verified again on every request
by the same verifier as MCP, so an expired or no-longer-trusted token ends the session. The synchronizer token for
CSRF (OWASP CSRF Prevention, "Synchronizer Token Pattern") lives here too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import Column, Table, Text, delete
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from server.storage.types import UTCDateTime


class ConsoleSession(SQLModel, table=True):
    __tablename__ = "console_sessions"

    id: str = Field(primary_key=True, max_length=64, description="SHA-256 (hex) of the cookie value")
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    csrf: str = Field(max_length=64)
    login_state: str | None = Field(default=None, max_length=64)
    login_verifier: str | None = Field(default=None, max_length=128)
    return_to: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    access_token: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    subject: str | None = Field(default=None, max_length=400)
    flash: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


TABLE: Table = SQLModel.metadata.tables[ConsoleSession.__tablename__]
LOGIN_TTL = timedelta(minutes=10)


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


def new_cookie() -> str:
    return secrets.token_urlsafe(32)


async def start(session: AsyncSession, now: datetime, *, state: str, verifier: str, return_to: str) -> str:
    """A pre-login session holding a login in flight; returns the cookie value."""
    cookie = new_cookie()
    session.add(
        ConsoleSession(
            id=_digest(cookie),
            created_at=now,
            expires_at=now + LOGIN_TTL,
            csrf=secrets.token_urlsafe(32),
            login_state=state,
            login_verifier=verifier,
            return_to=return_to,
        )
    )
    await session.flush()
    return cookie


async def load(session: AsyncSession, cookie: str | None, now: datetime) -> ConsoleSession | None:
    if not cookie or len(cookie) > 100:
        return None
    row = await session.get(ConsoleSession, _digest(cookie))
    if row is None or row.expires_at <= now:
        return None
    return row


async def complete(
    session: AsyncSession, pending: ConsoleSession, *, token: str, subject: str, expires_at: datetime, now: datetime
) -> str:
    """Replace the pre-login session by a signed-in one under a new id; returns the new cookie value."""
    await session.delete(pending)
    cookie = new_cookie()
    session.add(
        ConsoleSession(
            id=_digest(cookie),
            created_at=now,
            expires_at=expires_at,
            csrf=secrets.token_urlsafe(32),
            access_token=token,
            subject=subject,
        )
    )
    await session.flush()
    return cookie


async def end(session: AsyncSession, cookie: str | None) -> None:
    if cookie:
        connection = await session.connection()
        await connection.execute(delete(TABLE).where(TABLE.c.id == _digest(cookie)))


async def purge_expired(session: AsyncSession, now: datetime) -> int:
    connection = await session.connection()
    result = await connection.execute(delete(TABLE).where(TABLE.c.expires_at <= now))
    return int(result.rowcount or 0)


def csrf_matches(row: ConsoleSession, offered: str | None) -> bool:
    return bool(offered) and hmac.compare_digest(row.csrf.encode(), (offered or "").encode())
