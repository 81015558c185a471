"""Telling people: a signed webhook when an approval is created, decided or expires, through a durable outbox.

Messages follow the Standard Webhooks specification (standardwebhooks.com, v1): an HTTP POST of a JSON body
``{"type", "timestamp", "data"}`` with the headers ``webhook-id`` (the message id, the same on every retry, so a
receiver can drop duplicates), ``webhook-timestamp`` (Unix seconds) and ``webhook-signature`` (``v1,`` + base64
HMAC-SHA256, RFC 2104, over ``"{id}.{timestamp}.{body}"``). A secret written as ``whsec_<base64>`` is used as the
decoded bytes, as the specification says; any other string is used as its UTF-8 bytes.

Delivery never blocks an agent's call and nothing shared lives in process memory: :meth:`Webhooks.enqueue` inserts a
row in the caller's transaction (so a message exists exactly when the approval change committed), and any replica's
background task (:mod:`server.approvals.maintenance`) sends due messages. A sender claims a message with a
conditional ``UPDATE`` that increments ``attempts`` and pushes ``next_attempt_at`` out by the retry delay before it
sends, so two replicas never send the same attempt, and a process that dies mid-send leaves a message that is simply
retried later (delivery is at least once). After ``max_attempts`` the message is given up, with the last error kept.

The secret comes from configuration only; it is never stored, logged or put in an error message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx2
from sqlalchemy import Column, Table, Text, update
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from server.config import WebhookSettings
from server.storage.database import Database
from server.storage.types import UTCDateTime

logger = logging.getLogger(__name__)

MAX_RETRY_DELAY = timedelta(hours=1)


class WebhookMessage(SQLModel, table=True):
    """One message in the outbox, sent (``delivered_at``), waiting for its next attempt, or given up."""

    __tablename__ = "webhook_outbox"

    id: str = Field(primary_key=True, max_length=40)
    event_type: str = Field(max_length=60)
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    next_attempt_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    attempts: int = 0
    delivered_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    given_up_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    last_error: str | None = Field(default=None, max_length=500)


TABLE: Table = SQLModel.metadata.tables[WebhookMessage.__tablename__]


def _key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode()


def signature(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header value for one message."""
    mac = hmac.new(_key(secret), f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return f"v1,{base64.b64encode(mac).decode()}"


def verify(secret: str, headers: Mapping[str, str], body: str) -> bool:
    """What a receiver does: recompute the signature and compare in constant time (for tests and examples)."""
    expected = signature(secret, headers["webhook-id"], int(headers["webhook-timestamp"]), body)
    offered = headers.get("webhook-signature", "").split()
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)


def retry_delay(attempt: int, base: timedelta) -> timedelta:
    """Exponential: base, 2 x base, 4 x base ... capped at an hour."""
    delay: timedelta = base * (2 ** max(attempt - 1, 0))
    return min(delay, MAX_RETRY_DELAY)


class Webhooks:
    """Puts messages in the outbox (in the caller's transaction) and sends the due ones."""

    def __init__(self, settings: WebhookSettings, *, retry_base: timedelta | None = None) -> None:
        self.settings = settings
        self.retry_base = retry_base or timedelta(seconds=max(10.0, 2 * settings.timeout_seconds))

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    async def enqueue(self, session: AsyncSession, event_type: str, data: Mapping[str, Any], now: datetime) -> None:
        """Add a message to the outbox in the caller's transaction; nothing when no webhook is configured."""
        if not self.enabled:
            return
        body = json.dumps(
            {"type": event_type, "timestamp": now.isoformat(), "data": dict(data)},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        message = WebhookMessage(
            id=f"msg_{uuid.uuid4().hex}", event_type=event_type, body=body, created_at=now, next_attempt_at=now
        )
        session.add(message)
        await session.flush()

    async def send_due(self, db: Database, client: httpx2.AsyncClient, now: datetime, limit: int = 20) -> int:
        """Send the messages that are due (each claimed first, so replicas never send the same attempt).

        Returns the number delivered. Errors are recorded on the message and retried; they never raise.
        """
        if not self.enabled:
            return 0
        delivered = 0
        for message in await self._claim_due(db, now, limit):
            error = await self._post(client, message, now)
            await self._settle(db, message, error, now)
            delivered += error is None
        return delivered

    async def _claim_due(self, db: Database, now: datetime, limit: int) -> list[WebhookMessage]:
        async def work(session: AsyncSession) -> list[WebhookMessage]:
            query = (
                select(WebhookMessage)
                .where(
                    col(WebhookMessage.delivered_at).is_(None),
                    col(WebhookMessage.given_up_at).is_(None),
                    col(WebhookMessage.next_attempt_at) <= now,
                )
                .order_by(col(WebhookMessage.next_attempt_at))
                .limit(limit)
            )
            candidates = list((await session.exec(query)).all())
            connection = await session.connection()
            claimed: list[WebhookMessage] = []
            for message in candidates:
                attempt = message.attempts + 1
                statement = (
                    update(TABLE)
                    .where(TABLE.c.id == message.id, TABLE.c.attempts == message.attempts)
                    .where(TABLE.c.delivered_at.is_(None))
                    .values(attempts=attempt, next_attempt_at=now + retry_delay(attempt, self.retry_base))
                )
                if (await connection.execute(statement)).rowcount == 1:
                    message.attempts = attempt
                    claimed.append(message)
            return claimed

        return await db.run_in_transaction(work)

    async def _post(self, client: httpx2.AsyncClient, message: WebhookMessage, now: datetime) -> str | None:
        url = self.settings.url
        secret = self.settings.secret
        if url is None or secret is None:
            return "no webhook configured"
        timestamp = int(now.timestamp())
        headers = {
            "content-type": "application/json",
            "webhook-id": message.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(secret.get_secret_value(), message.id, timestamp, message.body),
        }
        try:
            response = await client.post(
                url, content=message.body.encode(), headers=headers, timeout=self.settings.timeout_seconds
            )
        except httpx2.HTTPError as exc:
            return f"{type(exc).__name__}: could not reach the webhook receiver"
        if 200 <= response.status_code < 300:
            return None
        return f"the webhook receiver answered HTTP {response.status_code}"

    async def _settle(self, db: Database, message: WebhookMessage, error: str | None, now: datetime) -> None:
        values: dict[str, Any]
        if error is None:
            values = {"delivered_at": now, "last_error": None}
        elif message.attempts >= self.settings.max_attempts:
            values = {"given_up_at": now, "last_error": error}
            logger.warning("webhook %s (%s) given up after %d attempts: %s", message.id, message.event_type,
                           message.attempts, error)  # fmt: skip
        else:
            values = {"last_error": error}
            logger.info(
                "webhook %s (%s) attempt %d failed: %s", message.id, message.event_type, message.attempts, error
            )

        async def work(session: AsyncSession) -> None:
            connection = await session.connection()
            await connection.execute(update(TABLE).where(TABLE.c.id == message.id).values(values))

        await db.run_in_transaction(work)
