-- The first sync's progress (SYNC-08) was what it captured less the import rows still in
-- the outboxes: a count of every outbox row, after every chunk it captured and twice a
-- second while it waited for the pipeline. On a large first sync the outboxes hold
-- hundreds of thousands of rows, and PostgreSQL spent a large share of the run counting
-- them. Now the batch that releases an import row (its event logged, or rejected into
-- the failure log) counts it here, per source and Kafka partition: one projector owns a
-- partition at a time, so two replicas' batches never wait on one row.
CREATE TABLE syncd.imports_released (
    source          text NOT NULL,
    kafka_partition integer NOT NULL,  -- -1: released before this migration
    released        bigint NOT NULL,
    PRIMARY KEY (source, kafka_partition)
);

-- A first sync under way keeps its figure: what each source captured, less what waits.
INSERT INTO syncd.imports_released (source, kafka_partition, released)
SELECT 'desk', -1, greatest(0, sum(captured)
                            - (SELECT count(*) FROM desk.outbox WHERE origin = 'import'))
FROM syncd.initial_sync WHERE source = 'desk' HAVING count(*) > 0;
INSERT INTO syncd.imports_released (source, kafka_partition, released)
SELECT 'crm', -1, greatest(0, sum(captured)
                           - (SELECT count(*) FROM crm.outbox WHERE origin = 'import'))
FROM syncd.initial_sync WHERE source = 'crm' HAVING count(*) > 0;
