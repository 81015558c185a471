"""Running ``mandate`` as a user does: a separate process with a clean ``MANDATE_*`` environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def mandate(
    *argv: str, data_dir: Path, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("MANDATE_")}
    clean.update({"MANDATE_DATA_DIR": str(data_dir), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *argv],
        capture_output=True,
        text=True,
        env=clean,
        cwd=REPO_ROOT,
        timeout=timeout,
        check=False,
    )
