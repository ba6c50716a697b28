-- The projector's own bookkeeping: the durable event log and the consumed
-- offsets, written in the same transaction as every projection.

CREATE TABLE syncd.event_log (
    seq          bigserial PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE,
    source       text NOT NULL,
    module       text NOT NULL,
    record_id    text NOT NULL,
    op           text NOT NULL,
    origin       text NOT NULL,
    modified_at  timestamptz NOT NULL,
    captured_at  timestamptz NOT NULL,
    payload      jsonb NOT NULL,
    kafka_topic     text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_log_modified_at ON syncd.event_log (modified_at);

-- Offsets are the truth for where each partition resumes; Kafka's own commit
-- is advisory (lag metrics only). Updated by compare-and-set from the offset
-- a batch started at, so a fenced consumer cannot commit a stale batch.
CREATE TABLE syncd.consumer_offsets (
    group_id    text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
