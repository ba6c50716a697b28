-- A failure-log entry's id is now the id of the outcome that opened it
-- (sync.outcomes.id), no longer a value of its own sequence: rolled-back batches
-- skip sequence values, so a rebuild of the failure log from sync.outcomes
-- (replay, OWN-03) could not give entries their ids back, and `syncd retry --id`
-- would name other entries after a rebuild.
--
-- Entries recorded before this migration are renumbered the same way: the
-- opening outcome is the first failed outcome of that record and reason at the
-- entry's first failure time. An entry whose outcome cannot be told apart (two
-- episodes of one record and reason first failing at the same microsecond) gets
-- an outcome-sequence value, which no later outcome reuses;
-- `syncd replay --projection failures` then gives it its exact id.

UPDATE sync.failures SET id = -id;

WITH matched AS (
    SELECT f.id AS moved_id,
           (SELECT min(o.id) FROM sync.outcomes o
            WHERE o.outcome = 'failed' AND o.source = f.source AND o.module = f.module
              AND o.record_id = f.record_id AND coalesce(o.reason, '') = f.reason
              AND o.captured_at = f.first_failed_at) AS opening_id
    FROM sync.failures f
), ranked AS (
    SELECT moved_id, opening_id,
           row_number() OVER (PARTITION BY opening_id ORDER BY moved_id DESC) AS n
    FROM matched
)
UPDATE sync.failures f
SET id = CASE WHEN r.opening_id IS NOT NULL AND r.n = 1 THEN r.opening_id
              ELSE nextval(pg_get_serial_sequence('sync.outcomes', 'id')) END
FROM ranked r
WHERE f.id = r.moved_id;
