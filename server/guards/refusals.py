"""Auth refusals under a flood: one audit record per (source address, error, description) per interval, with a count.

Every refused authentication used to write its own audit record, and every audit record is appended at the chain's
head, one writer at a time; a flood of invalid tokens would then queue legitimate writes behind thousands of
refusal records. So refusals are aggregated, not sampled: the first refusal of a (source, error, description) in an
interval is recorded at once (a single bad token is visible immediately, with its own audit id), the ones after it
in the same interval are only counted in memory, and when the interval ends (or the next refusal of that key comes
after it) one record ``refusals_aggregated`` carries how many there were (``summary.count``) and the interval.
Counting loses nothing: the sum of the first records and the counts is the number of refusals. A process that stops
records what it has counted (:meth:`RefusalAggregator.flush`, called on shutdown); at most ``max_keys`` keys are
held, beyond which new sources share the key ``"*"``. Every refusal still counts in ``mandate_auth_refusals_total``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

logger = logging.getLogger(__name__)

Writer = Callable[[str | None, str, str, dict[str, Any]], Awaitable[str | None]]
"""Writes one auth refusal record: (client address, error, description, summary) -> its audit id."""


@dataclass
class _Window:
    started: float
    address: str | None
    error: str
    description: str
    count: int = 0
    first_audit_id: str | None = None
    lock: anyio.Lock = field(default_factory=anyio.Lock)


class RefusalAggregator:
    def __init__(self, write: Writer, *, interval: float = 60.0, max_keys: int = 10_000) -> None:
        self.write = write
        self.interval = interval
        self.max_keys = max_keys
        self._windows: dict[tuple[str, str, str], _Window] = {}

    async def refused(self, address: str | None, error: str, description: str) -> str | None:
        """Account for one refusal; the audit id when this one was recorded on its own, None when it was counted."""
        source = address or "-"
        key = (source, error, description[:200])
        if key not in self._windows and len(self._windows) >= self.max_keys:
            key = ("*", error, "(many sources)")
        now = time.monotonic()
        window = self._windows.get(key)
        if window is not None and now - window.started < self.interval:
            window.count += 1
            return None
        if window is not None:
            await self._close(key, window)
        fresh = _Window(now, address if key[0] != "*" else None, error, key[2])
        self._windows[key] = fresh
        fresh.first_audit_id = await self.write(fresh.address, error, description, {})
        return fresh.first_audit_id

    async def flush(self, *, everything: bool = False) -> int:
        """Record the counts of windows that have ended (or all of them); how many records were written."""
        now = time.monotonic()
        written = 0
        for key, window in list(self._windows.items()):
            if everything or now - window.started >= self.interval:
                written += await self._close(key, window)
        return written

    async def _close(self, key: tuple[str, str, str], window: _Window) -> int:
        if self._windows.get(key) is window:
            del self._windows[key]
        if window.count == 0:
            return 0
        summary = {
            "aggregated": True,
            "count": window.count,
            "interval_seconds": self.interval,
            "first_audit_id": window.first_audit_id,
        }
        description = f"{window.count} more refusals like {window.first_audit_id} within {self.interval:g} s"
        try:
            await self.write(window.address, window.error, description, summary)
        except Exception:
            logger.exception("an aggregated refusal record could not be written (%d refusals)", window.count)
            return 0
        return 1
