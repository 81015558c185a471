"""A progress bar for long audit runs, drawn on stderr only (stdout stays clean for the result and for pipes).

Shown when stderr is a terminal or when asked for (``--progress``); redrawn at most ten times a second.
"""

from __future__ import annotations

import time
from typing import TextIO

WIDTH = 30


class ProgressBar:
    def __init__(self, stream: TextIO, *, label: str, enabled: bool) -> None:
        self.stream = stream
        self.label = label
        self.enabled = enabled
        self.started = time.perf_counter()
        self._last_draw = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last_draw < 0.1 and done < total:
            return
        self._last_draw = now
        fraction = min(done / total, 1.0) if total else 1.0
        filled = int(fraction * WIDTH)
        rate = done / (now - self.started) if now > self.started else 0.0
        bar = "#" * filled + "." * (WIDTH - filled)
        self.stream.write(f"\r{self.label} [{bar}] {fraction:4.0%} {done:,}/{total:,} records, {rate:,.0f}/s")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
