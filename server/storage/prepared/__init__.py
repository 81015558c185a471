"""Statements built once and run on the transaction's own driver connection: the call path's hot statements.

A tools/call commits one transaction of a handful of statements (the order's facts, the ledger totals and
reservation, the effect, the audit record). Run through SQLAlchemy, each statement costs more Python than the
database's own work: the expression is compiled or looked up in the cache, parameters and results pass through the
execution context, and on SQLite every statement is a round trip to aiosqlite's worker thread
(docs/performance.md). The statements here are compiled once, with the column types' own processors, and run
directly on the DBAPI connection under the session's transaction:

============  =========================================================================================================
``forms``     :class:`Prepared`: a Core statement compiled once per dialect, its bind and result processors applied
``driver``    the transaction's DBAPI connection, found once (and why calling SQLite's on the loop's thread is safe)
``running``   :func:`run`, :func:`run_all`, :func:`run_many`: statements run in the transaction, and their
              :class:`Result`
``deferred``  :func:`defer`, :func:`defer_many`: writes sent with the transaction's next statement or at its commit;
              :func:`begin_savepoint`: a savepoint that respects them
============  =========================================================================================================

Dependencies point one way: ``forms`` and ``driver`` use no other module of this package, ``deferred`` uses both,
``running`` all three. The rest of the code imports the names below from this package; the names with a leading
underscore are the modules' own, shared among them (and read by their tests and ``bench/bench_statements.py``).

Statements here bypass the ORM's unit of work, so each flushes the session first when it holds pending changes, and
callers must not mix these statements with ORM objects of the same rows in one transaction.
"""

from server.storage.prepared.deferred import (
    Savepoint,
    begin_savepoint,
    commit_deferred,
    defer,
    defer_many,
    flush_deferred,
)
from server.storage.prepared.driver import bind_direct, bind_driver
from server.storage.prepared.forms import Prepared, Processor, Row
from server.storage.prepared.running import Result, run, run_all, run_many

__all__ = [
    "Prepared",
    "Processor",
    "Result",
    "Row",
    "Savepoint",
    "begin_savepoint",
    "bind_direct",
    "bind_driver",
    "commit_deferred",
    "defer",
    "defer_many",
    "flush_deferred",
    "run",
    "run_all",
    "run_many",
]
