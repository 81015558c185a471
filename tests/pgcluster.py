"""A PostgreSQL cluster of a test's own, which the test may stop and start (the shared server must keep running).

``initdb`` into a temporary directory and ``pg_ctl`` on a free 127.0.0.1 port, run as the ``postgres`` user (the
server refuses to run as root), trust authentication. Skipped where the PostgreSQL 15 binaries are not installed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.live import bound_socket

BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(*argv: str) -> list[str]:
    if os.geteuid() != 0:
        return list(argv)
    return ["runuser", "-u", "postgres", "--", *argv]


@dataclass
class Cluster:
    directory: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *argv: str) -> None:
        subprocess.run(
            _as_postgres(str(BIN / "pg_ctl"), "-D", str(self.directory / "data"), "-w", "-t", "120", *argv),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        log = self.directory / "postgres.log"
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-l", str(log), "-o", options, "start")

    def stop(self) -> None:
        self._ctl("-m", "immediate", "stop")


@contextmanager
def own_cluster() -> Iterator[Cluster]:
    if not (BIN / "initdb").exists() or (os.geteuid() == 0 and shutil.which("runuser") is None):
        pytest.skip("the PostgreSQL 15 server binaries are not installed")
    directory = Path(tempfile.mkdtemp(prefix="mandate-pg-"))
    directory.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    sock = bound_socket()
    port = sock.getsockname()[1]
    sock.close()
    subprocess.run(
        _as_postgres(str(BIN / "initdb"), "-D", str(directory / "data"), "-U", "postgres", "-A", "trust", "-N"),
        check=True,
        capture_output=True,
    )
    cluster = Cluster(directory, port)
    cluster.start()
    try:
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped by the test
            cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
