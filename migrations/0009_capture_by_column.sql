-- Capture of updates, faster: which fields an update changed is now worked out by
-- comparing the old and new row column by column, instead of turning both rows into
-- jsonb and diffing those key by key (syncd.changed_fields), which cost more per row
-- than the rest of capture together (a bulk update ran at ~15,000 rows/s). The result
-- is the same: the changed columns but modified_time and custom, and custom.<key> for
-- each custom key that changed, appeared or went away, sorted as before. Custom keys
-- are only diffed for rows whose custom value changed.
--
-- The comparison is built per statement from the table's columns: for the types the
-- stores use, with the type's own equality, which agrees with jsonb equality on
-- them; for any other type through jsonb, as before.

CREATE FUNCTION syncd.custom_changed(nc jsonb, oc jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg(f), '{}') FROM (
        SELECT 'custom.' || key AS f FROM jsonb_each(coalesce(nc, '{}'))
         WHERE value IS DISTINCT FROM oc -> key
        UNION
        SELECT 'custom.' || key FROM jsonb_each(coalesce(oc, '{}'))
         WHERE NOT coalesce(nc, '{}') ? key
    ) AS fields
$$;

CREATE FUNCTION syncd.sorted_fields(fields text[]) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg(f ORDER BY f), '{}') FROM unnest(fields) AS f
$$;

CREATE OR REPLACE FUNCTION syncd.capture_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    columns_changed text;
    has_custom boolean;
    changed text;
BEGIN
    IF syncd.origin() = 'sync' THEN RETURN NULL; END IF;
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
