-- The sync's own writes to crm.contacts are captured too, as events with origin
-- 'sync' (OWN-03, issue 13).
--
-- The handshake board places tickets by the CRM's contacts. Until now the sync's
-- writes were never captured (SYNC-14), so for a CRM contact the sync created or
-- updated from a desk contact the event log held nothing, and the board read the
-- CRM row from the store instead, in the batch of the desk event. That made the
-- board depend on a store read rather than on the log: a desk edit deferred while
-- paused was written to the CRM by the resume drain, which does not run the board,
-- and a rebuild read the CRM rows as they were at rebuild time. Now every change to
-- crm.contacts, whoever made it, is in the event log, and the board is a function of
-- the log alone.
--
-- SYNC-14 still holds: the sync projection ignores events with origin 'sync'
-- (projections/sync.py), so nothing is synced back; echo fingerprints stay the
-- second line of defence.
--
-- How: the capture functions take a trigger argument. A table whose triggers pass
-- 'with_sync' captures writes made with syncd.origin = 'sync' too (with that
-- origin); the others skip them as before. Only crm.contacts passes it: it is the
-- only table the board reads that the sync writes (the sync never writes leads,
-- deals, tickets or departments; the board does not read accounts or products).
--
-- Records loaded as pre-existing data (the demo seed, benchmark seeding, a restore
-- from a backup in tests) are not changes: such a transaction sets
-- syncd.capture = 'off', and nothing it writes is captured, on any table. Setting
-- only syncd.origin = 'sync' no longer keeps crm.contacts rows out of the outbox.

CREATE FUNCTION syncd.capture_skipped(args text[]) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('syncd.capture', true) = 'off', false)
        OR (syncd.origin() = 'sync' AND NOT coalesce('with_sync' = ANY (args), false))
$$;

CREATE OR REPLACE FUNCTION syncd.capture_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF syncd.capture_skipped(TG_ARGV) THEN RETURN NULL; END IF;
    EXECUTE format($q$
        INSERT INTO %I.outbox (module, record_id, op, "values", changed, modified_at,
                               created_at, origin)
        SELECT %L, n.id::text, 'create', to_jsonb(n), NULL, n.modified_time, n.created_time,
               syncd.origin()
        FROM new_rows n ORDER BY n.id $q$, TG_TABLE_SCHEMA, TG_TABLE_NAME);
    PERFORM pg_notify('syncd_outbox', TG_TABLE_SCHEMA);
    RETURN NULL;
END $$;

-- As in 0009_capture_by_column.sql, but for the guard.
CREATE OR REPLACE FUNCTION syncd.capture_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    columns_changed text;
    has_custom boolean;
    changed text;
BEGIN
    IF syncd.capture_skipped(TG_ARGV) THEN RETURN NULL; END IF;
    SELECT string_agg(format(
               CASE WHEN a.atttypid IN ('text'::regtype, 'bigint'::regtype, 'integer'::regtype,
                                        'smallint'::regtype, 'numeric'::regtype,
                                        'boolean'::regtype, 'timestamptz'::regtype,
                                        'timestamp'::regtype, 'date'::regtype, 'uuid'::regtype,
                                        'double precision'::regtype, 'real'::regtype)
                    THEN 'CASE WHEN n.%1$I IS DISTINCT FROM o.%1$I THEN %2$L END'
                    ELSE 'CASE WHEN to_jsonb(n.%1$I) IS DISTINCT FROM to_jsonb(o.%1$I)'
                         ' THEN %2$L END' END,
               a.attname, a.attname::text), ', ' ORDER BY a.attname::text COLLATE "default"),
           bool_or(a.attname = 'custom')
      INTO columns_changed, has_custom
      FROM pg_attribute a
     WHERE a.attrelid = TG_RELID AND a.attnum > 0 AND NOT a.attisdropped
       AND a.attname NOT IN ('modified_time', 'custom');
    -- Columns come sorted; custom keys, when a row has any, are merged in and sorted.
    changed := format('array_remove(ARRAY[%s]::text[], NULL)', coalesce(columns_changed, ''));
    IF has_custom OR EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = TG_RELID
                             AND attname = 'custom' AND NOT attisdropped) THEN
        changed := format('CASE WHEN n.custom IS DISTINCT FROM o.custom'
                          ' THEN syncd.sorted_fields(%1$s || syncd.custom_changed(n.custom,'
                          ' o.custom)) ELSE %1$s END', changed);
    END IF;
    EXECUTE format($q$
        INSERT INTO %I.outbox (module, record_id, op, "values", changed, modified_at,
                               created_at, origin)
        SELECT %L, c.id::text,
               CASE WHEN c.was_deleted = c.is_deleted THEN 'update'
                    WHEN c.is_deleted THEN 'delete' ELSE 'restore' END,
               c.nv, c.changed, c.modified_time, c.created_time, syncd.origin()
        FROM (
            SELECT n.id, n.modified_time, n.created_time, n.deleted AS is_deleted,
                   o.deleted AS was_deleted, to_jsonb(n) AS nv, %s AS changed
            FROM new_rows n JOIN old_rows o ON o.id = n.id
        ) c
        WHERE cardinality(c.changed) > 0
        ORDER BY c.id $q$, TG_TABLE_SCHEMA, TG_TABLE_NAME, changed);
    PERFORM pg_notify('syncd_outbox', TG_TABLE_SCHEMA);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION syncd.capture_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF syncd.capture_skipped(TG_ARGV) THEN RETURN NULL; END IF;
    -- A hard delete: the values are the row as it was, with "deleted" left false;
    -- the projector tells it from a recycle-bin delete by that flag.
    EXECUTE format($q$
        INSERT INTO %I.outbox (module, record_id, op, "values", changed, modified_at,
                               created_at, origin)
        SELECT %L, o.id::text, 'delete', to_jsonb(o) || '{"hard_deleted": true}', NULL,
               clock_timestamp(), o.created_time, syncd.origin()
        FROM old_rows o ORDER BY o.id $q$, TG_TABLE_SCHEMA, TG_TABLE_NAME);
    PERFORM pg_notify('syncd_outbox', TG_TABLE_SCHEMA);
    RETURN NULL;
END $$;

DROP TRIGGER capture_insert ON crm.contacts;
DROP TRIGGER capture_update ON crm.contacts;
DROP TRIGGER capture_delete ON crm.contacts;
CREATE TRIGGER capture_insert AFTER INSERT ON crm.contacts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION syncd.capture_insert('with_sync');
CREATE TRIGGER capture_update AFTER UPDATE ON crm.contacts
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION syncd.capture_update('with_sync');
CREATE TRIGGER capture_delete AFTER DELETE ON crm.contacts
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION syncd.capture_delete('with_sync');
