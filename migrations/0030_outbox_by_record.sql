-- The sync's guard asks, for the writes it held back, which of their records have a
-- change still waiting in the store's outbox (projections/stores/outbox.py,
-- changes_in_flight and deletes_in_flight). Without an index each ask read the whole
-- outbox: 94 ms an ask, four asks a batch, with a backlog of 1,000,000 changes (the
-- steady benchmark's, and an outage's). The index costs each captured change an entry.
CREATE INDEX outbox_record ON desk.outbox (module, record_id);
CREATE INDEX outbox_record ON crm.outbox (module, record_id);
