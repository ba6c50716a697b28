-- Lighter writes for the projector's batches (issue 7; measured with per-statement
-- timings on `syncd bench --scenario steady`).
--
-- 1. The event log keeps each payload as json (the text as it arrived, checked to be
--    JSON) instead of jsonb: nothing ever looks inside it in SQL, it is only read back
--    whole, and converting every event to jsonb's binary form was a good part of the
--    cost of appending. This rewrites the table once.
ALTER TABLE syncd.event_log ALTER COLUMN payload TYPE json USING payload::json;

-- 2. Room on each page for updated rows: the links and the synced store tables are
--    updated in place by every batch, and with free space on the page (and no indexed
--    column changed) an update is HOT, adding nothing to the indexes. Applies to
--    pages written from now on; no rewrite.
ALTER TABLE sync.links SET (fillfactor = 80);
ALTER TABLE desk.contacts SET (fillfactor = 80);
ALTER TABLE crm.contacts SET (fillfactor = 80);
ALTER TABLE desk.accounts SET (fillfactor = 80);
ALTER TABLE crm.accounts SET (fillfactor = 80);
