-- What desk agents see of the CRM (PERM-01 … PERM-04): the crm_view projection's tables,
-- and capture of the sync's own writes to crm.accounts.
--
-- Capture: the embedded CRM's notes, calls, events and tasks are captured like every
-- other table of the crm schema (0002 gave every table its triggers), so nothing is
-- added for them. But the sync's writes are skipped by capture (SYNC-14), except on
-- crm.contacts (0013): a CRM account the sync created from a desk account would never
-- reach the event log, and a desk agent would see no account information for it. So
-- crm.accounts now captures the sync's writes too, with origin 'sync', as crm.contacts
-- does. SYNC-14 still holds: the sync projection ignores events with origin 'sync'.
DROP TRIGGER capture_insert ON crm.accounts;
DROP TRIGGER capture_update ON crm.accounts;
DROP TRIGGER capture_delete ON crm.accounts;
CREATE TRIGGER capture_insert AFTER INSERT ON crm.accounts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION syncd.capture_insert('with_sync');
CREATE TRIGGER capture_update AFTER UPDATE ON crm.accounts
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION syncd.capture_update('with_sync');
CREATE TRIGGER capture_delete AFTER DELETE ON crm.accounts
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION syncd.capture_delete('with_sync');

-- Projection side: derived from the CRM's events only (rebuilt by `syncd replay
-- --projection crm_view`). Which CRM record a desk contact or account is, is read from
-- sync.links at read time (daemon/service/crm_view.py), never kept here.
CREATE SCHEMA crm_view;

-- One row per live CRM record the view shows: contacts and accounts (the information),
-- deals, notes, calls, events and tasks. A deleted record (or one in the recycle bin)
-- has no row. contact_id and account_id say what the record hangs off: a contact's
-- account; a deal's contact and account; a note's or activity's parent.
CREATE TABLE crm_view.records (
    module     text NOT NULL CHECK (module IN ('contacts', 'accounts', 'deals', 'notes',
                                               'calls', 'events', 'tasks')),
    record_id  text NOT NULL,
    "values"   jsonb NOT NULL,       -- the record's values, as its last event gave them
    contact_id text,
    account_id text,
    PRIMARY KEY (module, record_id)
);
CREATE INDEX crm_view_records_contact ON crm_view.records (contact_id, module)
    WHERE contact_id IS NOT NULL;
CREATE INDEX crm_view_records_account ON crm_view.records (account_id, module)
    WHERE account_id IS NOT NULL;
