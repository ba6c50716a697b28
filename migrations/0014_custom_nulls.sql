-- A custom field that is absent and one that is null are the same value everywhere
-- (the sync's merge reads both as null, its writes remove a key set to null): capture
-- no longer reports a custom key as changed when it only appears or goes away with a
-- null value, so an update that adds "seats": null to a row is no change at all.
CREATE OR REPLACE FUNCTION syncd.custom_changed(nc jsonb, oc jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg(f), '{}') FROM (
        SELECT 'custom.' || key AS f FROM jsonb_each(coalesce(nc, '{}'))
         WHERE nullif(value, 'null') IS DISTINCT FROM nullif(oc -> key, 'null')
        UNION
        SELECT 'custom.' || key FROM jsonb_each(coalesce(oc, '{}'))
         WHERE value <> 'null' AND NOT coalesce(nc, '{}') ? key
    ) AS fields
$$;
