"""A serving replica's sequencer alone: ``python -m tests.audit.sequencer_process DATABASE_URL NAME``.

Prints ``NAME standby`` at start and ``NAME active`` once it holds the sequencer lock, then integrates until killed.
"""

from __future__ import annotations

import sys

import anyio

from server.audit.sequencer import Sequencer, sequencing
from server.storage.database import Database


async def main(url: str, name: str) -> None:
    db = Database(url)
    sequencer = Sequencer(db, instance=name, key=None, interval=0.2)
    print(f"{name} standby", flush=True)
    async with sequencing(sequencer):
        await sequencer.activated.wait()
        print(f"{name} active", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
