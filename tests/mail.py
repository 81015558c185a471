"""Reading the mail Mandate sent in a test: the development outbox (.eml files), and a real SMTP server (aiosmtpd)
on a free 127.0.0.1 port that keeps what it receives."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from tests.live import bound_socket

CODE = re.compile(r"code is (\d{8})")


def outbox(data_dir: Path) -> list[EmailMessage]:
    """Every message in the development outbox, oldest first."""
    folder = data_dir / "outbox"
    paths = sorted(folder.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns) if folder.exists() else []
    return [_parsed(path.read_bytes()) for path in paths]


def _parsed(data: bytes) -> EmailMessage:
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def body(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def code_sent_to(messages: list[EmailMessage], address: str) -> str:
    """The confirmation code of the newest message to ``address``."""
    for message in reversed(messages):
        if message["To"] == address:
            found = CODE.search(body(message))
            if found:
                return found.group(1)
    raise AssertionError(f"no confirmation code was mailed to {address}")


@dataclass
class SmtpSink:
    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list[EmailMessage])
    envelopes: list[Any] = field(default_factory=list[Any])


class _Keep:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.sink.envelopes.append(envelope)
        self.sink.messages.append(_parsed(envelope.content))
        return "250 Message accepted for delivery"


@contextmanager
def smtp_sink() -> Iterator[SmtpSink]:
    sock = bound_socket()
    port = sock.getsockname()[1]
    sock.close()
    sink = SmtpSink("127.0.0.1", port)
    controller = Controller(_Keep(sink), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


async def change_email(client: Any, data_dir: Path, customer_id: str, new_email: str, **extra: Any) -> Any:
    """Ask for the change, read the code from the outbox and confirm it: the whole verified change, as a user does."""
    requested = await client.call_tool(
        "account_email_change", {"customer_id": customer_id, "new_email": new_email, **extra}
    )
    assert not requested.is_error, requested.content
    request_id = requested.structured_content["request_id"]
    code = code_sent_to(outbox(data_dir), new_email)
    return await client.call_tool("account_email_confirm", {"request_id": request_id, "code": code})
