"""The mail senders: SMTP, a development outbox (files under the data directory), and none."""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Protocol

import anyio

from server.config import MailSettings, Settings

logger = logging.getLogger(__name__)


class MailUnavailable(Exception):
    """The message could not be handed to the mail system (or no sender is configured); nothing was sent."""


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    to: str
    subject: str
    body: str


class MailSender(Protocol):
    """Hands a message to the mail system; raises MailUnavailable when it cannot."""

    @property
    def configured(self) -> bool: ...

    @property
    def settings(self) -> MailSettings: ...

    async def send(self, mail: OutgoingMail) -> None: ...


def _mask(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def _message(settings: MailSettings, mail: OutgoingMail) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.from_address
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=settings.from_address.partition("@")[2] or None)
    message.set_content(mail.body)
    return message


class SmtpSender:
    """RFC 5321 submission with the standard library's client, in a worker thread (it blocks)."""

    configured = True

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings

    def _password(self) -> str | None:
        name = self.settings.password_env
        if not name:
            return None
        value = os.environ.get(name)
        if not value:
            raise MailUnavailable(f"the SMTP password variable {name} is not set")
        return value

    def _send_blocking(self, message: EmailMessage) -> None:
        s = self.settings
        assert s.smtp_host is not None
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.timeout_seconds) as client:
            if s.starttls:
                client.starttls(context=ssl.create_default_context())
            password = self._password()
            if s.username and password is not None:
                client.login(s.username, password)
            client.send_message(message)

    async def send(self, mail: OutgoingMail) -> None:
        try:
            await anyio.to_thread.run_sync(self._send_blocking, _message(self.settings, mail))
        except MailUnavailable:
            raise
        except (OSError, smtplib.SMTPException) as exc:
            # the exception names the server's reply or the socket error, never the message body
            logger.warning("mail to %s could not be sent: %s", _mask(mail.to), type(exc).__name__)
            raise MailUnavailable("the mail server did not accept the message") from None
        logger.info("mail sent to %s (%s)", _mask(mail.to), mail.subject)


class OutboxSender:
    """Development: each message is written as an .eml file (mode 0600) in a directory, never sent, never logged."""

    configured = True

    def __init__(self, settings: MailSettings, directory: Path) -> None:
        self.settings = settings
        self.directory = directory

    async def send(self, mail: OutgoingMail) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.directory / f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.eml"
        data = bytes(_message(self.settings, mail))
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        logger.info("mail to %s (%s) written to the development outbox %s", _mask(mail.to), mail.subject, path)


class NoSender:
    """No mail configured: anything that needs mail is refused with a clear reason."""

    configured = False

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings

    async def send(self, mail: OutgoingMail) -> None:
        raise MailUnavailable("no mail sender is configured ([mail] in the configuration)")


def build_sender(settings: Settings) -> MailSender:
    """``[mail] sender``: ``smtp``, ``outbox`` or ``none``; unset: SMTP when a host is set, else the outbox with the
    development issuer, else none."""
    mail = settings.mail
    kind = mail.sender or ("smtp" if mail.smtp_host else "outbox" if settings.dev_issuer else "none")
    if kind == "smtp":
        return SmtpSender(mail)
    if kind == "outbox":
        return OutboxSender(mail, mail.outbox_dir or settings.data_dir / "outbox")
    return NoSender(mail)
