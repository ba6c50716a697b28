-- What desk agents see of the CRM (PERM-03): notes, calls, events and tasks attached to a
-- deal. They are shown on the contact and the account the deal belongs to, found at read
-- time (daemon/service/crm_view.py) from the activity's own values (parent_module
-- 'deals', parent_id), so a deal given to another contact takes its activities along
-- and a rebuild from each record's last event gives the same rows (nothing derived from
-- another record is kept).
--
-- The embedded CRM may now attach them to a deal, as Zoho CRM does (its poll captured
-- them already, named so: adapters/zoho/crm_fields.py). The four tables were made LIKE
-- crm.notes, so each holds a copy of the same named check.
ALTER TABLE crm.notes DROP CONSTRAINT notes_parent_module_check,
    ADD CONSTRAINT notes_parent_module_check
        CHECK (parent_module IN ('contacts', 'accounts', 'deals'));
ALTER TABLE crm.calls DROP CONSTRAINT notes_parent_module_check,
    ADD CONSTRAINT notes_parent_module_check
        CHECK (parent_module IN ('contacts', 'accounts', 'deals'));
ALTER TABLE crm.events DROP CONSTRAINT notes_parent_module_check,
    ADD CONSTRAINT notes_parent_module_check
        CHECK (parent_module IN ('contacts', 'accounts', 'deals'));
ALTER TABLE crm.tasks DROP CONSTRAINT notes_parent_module_check,
    ADD CONSTRAINT notes_parent_module_check
        CHECK (parent_module IN ('contacts', 'accounts', 'deals'));

-- A deal's activities, by the deal's id as the activity names it.
CREATE INDEX crm_view_records_deal ON crm_view.records (("values"->>'parent_id'), module)
    WHERE "values"->>'parent_module' = 'deals';
