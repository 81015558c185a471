"""Start-up failures are one clear line and exit status 2, naming the setting that changes what failed."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.support import mandate


@pytest.fixture
def occupied_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (bound, then released): connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("command", ["serve", "dev"])
def test_a_port_in_use_is_one_line_naming_the_flag_and_the_variable(
    command: str, occupied_port: int, tmp_path: Path
) -> None:
    extra = ["--dev-issuer"] if command == "serve" else []
    done = mandate(command, *extra, "--port", str(occupied_port), data_dir=tmp_path)

    assert done.returncode == 2
    line = _one_line(done.stderr)
    assert line.startswith(f"mandate: port {occupied_port} on 127.0.0.1 is already in use")
    assert "--port" in line and "MANDATE_PORT" in line
    assert "serving" not in done.stderr + done.stdout  # nothing was announced before the bind failed


def test_an_unreachable_postgresql_is_one_line_naming_the_database_and_the_setting(
    closed_port: int, tmp_path: Path
) -> None:
    url = f"postgresql://mandate:hunter2-secret@127.0.0.1:{closed_port}/mandate"
    done = mandate("serve", "--dev-issuer", "--port", "0", data_dir=tmp_path, env={"MANDATE_DATABASE_URL": url})

    assert done.returncode == 2
    line = _one_line(done.stderr)
    assert line.startswith(f"mandate: cannot reach database postgresql+psycopg://mandate:***@127.0.0.1:{closed_port}/")
    assert "Connection refused" in line
    assert "MANDATE_DATABASE_URL" in line
    assert "hunter2-secret" not in done.stderr


def test_seeding_an_unreachable_database_is_one_line_too(closed_port: int, tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{closed_port}/test"
    done = mandate("seed", "--database-url", url, data_dir=tmp_path)

    assert done.returncode == 2
    assert _one_line(done.stderr).startswith("mandate: cannot reach database")
