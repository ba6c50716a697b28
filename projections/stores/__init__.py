"""The store port (``port``) and the embedded PostgreSQL stores' adapter (``embedded``).

The sync decides; a store adapter reads and writes one store. The embedded desk
and CRM live in the daemon's own database (schemas ``desk`` and ``crm``), so
their adapter runs on the batch's connection, inside the batch transaction:
exactly once holds because the store writes commit with the event log, the links
and the offsets.
"""
