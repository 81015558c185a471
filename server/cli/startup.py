"""Start-up failures as one line a person can act on: the database that cannot be reached, the port in use.

A command that cannot start prints ``mandate: <what failed>: <why> (<the setting that changes it>)`` and exits
with status 2, instead of a traceback. The database URL is shown with its password hidden.
"""

from __future__ import annotations

import errno
import socket
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.config import Settings


class StartupError(Exception):
    """The process cannot start; the message names what failed and how to change it."""


def bind_socket(settings: Settings) -> socket.socket:
    """The listening socket for ``settings.host``:``settings.port``, bound before anything is announced."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.host, settings.port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        where = f"{settings.host}:{settings.port}"
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {settings.port} on {settings.host} is already in use: choose another with --port "
                "or MANDATE_PORT (0 picks a free one)"
            ) from None
        if exc.errno == errno.EACCES:
            raise StartupError(
                f"not allowed to listen on {where}: choose a port above 1023 with --port or MANDATE_PORT"
            ) from None
        raise StartupError(
            f"cannot listen on {where}: {exc.strerror or exc} (--host/MANDATE_HOST, --port/MANDATE_PORT)"
        ) from None
    sock.set_inheritable(False)
    return sock


def explain(exc: BaseException, settings: Settings | None) -> StartupError | None:
    """A one-line ``StartupError`` for a failure to reach the database or a database at the wrong schema revision,
    or None for anything else."""
    if "sqlalchemy" not in sys.modules:
        return None
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    from server.storage.database import DatabaseUnavailable
    from server.storage.drift import SchemaOutOfDate
    from server.storage.migrate import SchemaNotAtHead

    if isinstance(exc, SchemaNotAtHead | SchemaOutOfDate):
        return StartupError(str(exc))

    if not isinstance(exc, OperationalError | InterfaceError | DatabaseUnavailable):
        return None
    cause: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if isinstance(exc, DatabaseUnavailable) and exc.__cause__ is not None:
        cause = exc.__cause__
        if isinstance(cause, DBAPIError) and cause.orig is not None:
            cause = cause.orig
    reason = next((line.strip() for line in str(cause).splitlines() if line.strip()), type(cause).__name__)
    reason = reason.removeprefix("connection failed: ")
    where = settings.describe_database() if settings is not None else "the database"
    return StartupError(f"cannot reach {where}: {reason} (database_url / MANDATE_DATABASE_URL / --database-url)")
