-- The CRM view's rows are decided in SQL from the logged events (projections/crm_view.py,
-- issue 19): the live projection and its rebuild run the same statement, over a batch's
-- events or over each record's last event, and no event is decoded in Python for it.
-- These two functions are the rules Python applied to a decoded event's values, read
-- from the event's JSON text (json, not jsonb, so a number keeps how it was written).

-- A foreign record id as text, or NULL (projections.handshake.record_ref): an integer
-- as its decimal text; a string of at most 200 characters that is not blank, stripped
-- of what Python's str.strip() strips (the 29 characters str.isspace() accepts); any
-- other value (true, false, null, a fraction or a number with an exponent, which
-- Python reads as a float, an array, an object) is no id.
CREATE FUNCTION crm_view.ref(v json) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE json_typeof(v)
        WHEN 'number' THEN
            CASE WHEN btrim(v::text) ~ '^-?[0-9]+$' THEN btrim(v::text)::numeric::text END
        WHEN 'string' THEN
            CASE WHEN length(v #>> '{}') <= 200
                  AND btrim(v #>> '{}', U&'\0009\000A\000B\000C\000D\001C\001D\001E\001F\0020\0085\00A0\1680\2000\2001\2002\2003\2004\2005\2006\2007\2008\2009\200A\2028\2029\202F\205F\3000') <> ''
                 THEN btrim(v #>> '{}', U&'\0009\000A\000B\000C\000D\001C\001D\001E\001F\0020\0085\00A0\1680\2000\2001\2002\2003\2004\2005\2006\2007\2008\2009\200A\2028\2029\202F\205F\3000')
            END
    END
$$;

-- Whether a JSON value is true as Python reads it (projections.handshake.is_live asks
-- it of "deleted"): false, null, a zero, an empty string, array or object are not.
-- (A number too small for a float, which Python reads as 0.0, counts as true here.)
CREATE FUNCTION crm_view.truthy(v json) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE json_typeof(v)
        WHEN 'boolean' THEN btrim(v::text)::boolean
        WHEN 'number' THEN btrim(v::text)::numeric <> 0
        WHEN 'string' THEN v #>> '{}' <> ''
        WHEN 'array' THEN json_array_length(v) > 0
        WHEN 'object' THEN v::jsonb <> '{}'::jsonb
        ELSE false
    END
$$;
