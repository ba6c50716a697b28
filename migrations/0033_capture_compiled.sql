-- Capture compiled per table (issue 19; docs/performance.md, "Capture compiled per table").
--
-- Why: the capture trigger functions (0002, 0009, 0013) built their statement again at
-- every statement a writer ran: the update's read the table's columns from
-- pg_attribute and formatted a comparison of each, and EXECUTE parsed and planned the
-- result. That was most of what capture cost a statement: measured on desk.contacts,
-- 0.9 ms of a one-row update's 1.3 ms, and a fifth of a 100-row update's. The statement
-- depends only on the table's columns, which only migrations change, so it is now built
-- once a table, here, into a trigger function of the table's own that holds it written
-- out (PL/pgSQL prepares it once a session); the table's capture triggers call that
-- function, with the arguments they had ('with_sync').
--
-- What capture records is unchanged, and its rules are written once:
-- syncd.capture_sql(op, table) builds the statement (the text the generic functions
-- built at every statement), syncd.compile_capture(table) writes a table's functions and
-- points its capture triggers at them, and the generic functions, which a captured table
-- not compiled yet would call, run the same statement.
--
-- A migration that creates a captured table, or adds, drops or retypes a column of one,
-- must end with SELECT syncd.compile_captures(): a compiled function holds the columns it
-- was built from. tests/integration/test_capture_compiled.py fails when a captured
-- table's triggers or functions are not what syncd.capture_sql builds now.

CREATE FUNCTION syncd.capture_sql(op text, rel regclass) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    store text;
    module text;
    columns_changed text;
    changed text;
BEGIN
    SELECT n.nspname, c.relname INTO store, module
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel;
    IF op = 'insert' THEN
        RETURN format($q$
        INSERT INTO %I.outbox (module, record_id, op, "values", changed, modified_at,
                               created_at, origin)
        SELECT %L, n.id::text, 'create', to_jsonb(n), NULL, n.modified_time, n.created_time,
               syncd.origin()
        FROM new_rows n ORDER BY n.id $q$, store, module);
    ELSIF op = 'delete' THEN
        -- A hard delete: the values are the row as it was, with "deleted" left false;
        -- the projector tells it from a recycle-bin delete by that flag.
        RETURN format($q$
        INSERT INTO %I.outbox (module, record_id, op, "values", changed, modified_at,
                               created_at, origin)
        SELECT %L, o.id::text, 'delete', to_jsonb(o) || '{"hard_deleted": true}', NULL,
               clock_timestamp(), o.created_time, syncd.origin()
        FROM old_rows o ORDER BY o.id $q$, store, module);
    ELSIF op <> 'update' THEN
        RAISE EXCEPTION 'syncd.capture_sql: no capture for %', op;
    END IF;
    -- Which fields an update changed, column by column (0009): the changed columns but
    -- modified_time and custom, sorted, with custom.<key> for each custom key that
    -- changed, appeared or went away (0014), merged in and sorted when custom changed.
    SELECT string_agg(format(
               CASE WHEN a.atttypid IN ('text'::regtype, 'bigint'::regtype, 'integer'::regtype,
                                        'smallint'::regtype, 'numeric'::regtype,
                                        'boolean'::regtype, 'timestamptz'::regtype,
                                        'timestamp'::regtype, 'date'::regtype, 'uuid'::regtype,
                                        'double precision'::regtype, 'real'::regtype)
                    THEN 'CASE WHEN n.%1$I IS DISTINCT FROM o.%1$I THEN %2$L END'
                    ELSE 'CASE WHEN to_jsonb(n.%1$I) IS DISTINCT FROM to_jsonb(o.%1$I)'
                         ' THEN %2$L END' END,
               a.attname, a.attname::text), ', ' ORDER BY a.attname::text COLLATE "default")
      INTO columns_changed
      FROM pg_attribute a
     WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
       AND a.attname NOT IN ('modified_time', 'custom');
    changed := format('array_remove(ARRAY[%s]::text[], NULL)', coalesce(columns_changed, ''));
    IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = rel AND attname = 'custom'
               AND attnum > 0 AND NOT attisdropped) THEN
        changed := format('CASE WHEN n.custom IS DISTINCT FROM o.custom'
                          ' THEN syncd.sorted_fields(%1$s || syncd.custom_changed(n.custom,'
                          ' o.custom)) ELSE %1$s END', changed);
    END IF;
    RETURN format($q$
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
        ORDER BY c.id $q$, store, module, changed);
END $$;

-- The compiled trigger function of one table and operation.
CREATE FUNCTION syncd.capture_function(op text, rel regclass) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT format('capture_%s_%s_%s', op, n.nspname, c.relname)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel
$$;

CREATE FUNCTION syncd.compile_capture(rel regclass) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    op text;
    fn text;
    compiled integer := 0;
BEGIN
    FOR t IN SELECT tgname, pg_get_triggerdef(oid) AS def FROM pg_trigger
             WHERE tgrelid = rel AND NOT tgisinternal
               AND tgname IN ('capture_insert', 'capture_update', 'capture_delete')
             ORDER BY tgname
    LOOP
        op := substr(t.tgname, length('capture_') + 1);
        fn := syncd.capture_function(op, rel);
        EXECUTE format($f$
            CREATE OR REPLACE FUNCTION syncd.%I() RETURNS trigger LANGUAGE plpgsql AS $body$
            BEGIN
                IF syncd.capture_skipped(TG_ARGV) THEN RETURN NULL; END IF;
                %s;
                PERFORM pg_notify('syncd_outbox', %L);
                RETURN NULL;
            END $body$ $f$,
            fn, syncd.capture_sql(op, rel),
            (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.oid = rel));
        -- The same trigger (its name, so its firing order, its transition tables, its
        -- arguments), calling the compiled function.
        EXECUTE format('DROP TRIGGER %I ON %s', t.tgname, rel);
        EXECUTE regexp_replace(t.def, 'EXECUTE FUNCTION syncd\.capture_[a-z0-9_]+\(',
                               format('EXECUTE FUNCTION syncd.%I(', fn));
        compiled := compiled + 1;
    END LOOP;
    RETURN compiled;
END $$;

-- Every captured table of the stores; how many trigger functions were written.
CREATE FUNCTION syncd.compile_captures() RETURNS integer
LANGUAGE sql AS $$
    SELECT coalesce(sum(syncd.compile_capture(c.oid)), 0)::integer
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname IN ('desk', 'crm') AND c.relkind = 'r'
      AND EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid
                  AND t.tgname IN ('capture_insert', 'capture_update', 'capture_delete'))
$$;

-- The generic functions run the same statements, built at each statement (a captured
-- table not compiled yet).
DO $$
DECLARE
    op text;
BEGIN
    FOREACH op IN ARRAY ARRAY['insert', 'update', 'delete'] LOOP
        EXECUTE format($f$
            CREATE OR REPLACE FUNCTION syncd.%I() RETURNS trigger LANGUAGE plpgsql AS $body$
            BEGIN
                IF syncd.capture_skipped(TG_ARGV) THEN RETURN NULL; END IF;
                EXECUTE syncd.capture_sql(%L, TG_RELID);
                PERFORM pg_notify('syncd_outbox', TG_TABLE_SCHEMA);
                RETURN NULL;
            END $body$ $f$, 'capture_' || op, op);
    END LOOP;
END $$;

SELECT syncd.compile_captures();
