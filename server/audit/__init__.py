"""The audit trail: one record per invocation, hash-chained, append-only, verifiable (DESIGN.md section 6;
docs/audit.md).

- :mod:`server.audit.models`: the record and the chain head;
- :mod:`server.audit.chain`: the canonical form, the link hash, and ``append``;
- :mod:`server.audit.redaction`: what of the arguments a record keeps;
- :mod:`server.audit.verify`: recomputing the chain and naming the first bad record;
- :mod:`server.audit.checkpoint`: Ed25519-signed checkpoints of the head, kept outside the database;
- :mod:`server.audit.query`, :mod:`server.audit.render`: filters, pages and cursors; lines and JSON for reading;
- :mod:`server.audit.lineage`: from an effect to its record, and from a principal to its records.

The append-only triggers live with the schema (:mod:`server.storage.schema`); the commands in
:mod:`server.cli.audit`; the ``audit_search`` tool and the demo store's side of lineage in :mod:`tools.audit`.
"""
