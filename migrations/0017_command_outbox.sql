-- The command outbox (issue 15): the writes a batch decided for a store that no
-- PostgreSQL transaction covers (a hosted desk or CRM over HTTP), recorded in the
-- batch transaction beside the events, links and offsets, and delivered by that
-- store's writer task (adapters/command_writer.py). A row goes when its write
-- landed (its outcome is then in the store's outbox, on its way to the projector)
-- or failed for good (in the failure log); until then it is retried.
CREATE TABLE sync.commands (
    seq             bigserial PRIMARY KEY,
    store           text NOT NULL CHECK (store IN ('desk', 'crm')),  -- the target
    module          text NOT NULL,
    record_key      text NOT NULL,  -- one record's commands are delivered in seq order
    idempotency_key uuid NOT NULL UNIQUE,  -- sent with every attempt: one effect however many
    op              text NOT NULL CHECK (op IN ('create', 'update')),
    record_id       text,  -- the target's id of the record an update writes to
    payload         jsonb NOT NULL,  -- the values to write
    seen            timestamptz,  -- the guard: write only if the record is not newer
    cause_event     uuid,  -- the event the write was decided for (its failure entry)
    cause_source    text,
    cause_module    text,
    cause_record    text,
    enqueued_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_error      text
);
CREATE INDEX commands_per_record ON sync.commands (store, record_key, seq);
CREATE INDEX commands_due ON sync.commands (store, next_attempt_at);
