"""One-shot commands print their result, not the machinery's INFO lines (the server keeps its INFO log)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.support import mandate


@pytest.mark.parametrize("argv", [["policy", "check"], ["scopes"], ["seed"]])
def test_a_cli_command_logs_no_info_lines(argv: list[str], tmp_path: Path) -> None:
    done = mandate(*argv, data_dir=tmp_path / "data")
    assert done.returncode == 0, done.stderr
    assert " INFO " not in done.stderr, done.stderr
