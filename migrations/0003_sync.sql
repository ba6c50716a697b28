-- The sync projection's own state: the mapping table, the failure log and the
-- seven-day history. All of it is derived from the event log.

CREATE SCHEMA sync;

-- One row per linked pair (SYNC-10): unique in both directions. "state" holds,
-- per mapped field, the winning value with its source time and source, which
-- is what makes concurrent edits converge (SYNC-15). desk_fp / crm_fp are
-- fingerprints of the values each side is known to hold: an incoming change
-- equal to them is an echo and is dropped. desk_seen / crm_seen are the
-- newest modification time the sync knows each side's record to carry: a
-- write only lands on a row that is not newer than that, because a newer row
-- holds an edit whose event has not been applied yet.
CREATE TABLE sync.links (
    link_id     bigserial PRIMARY KEY,
    module      text NOT NULL,
    desk_id     text NOT NULL,
    crm_id      text NOT NULL,
    state       jsonb NOT NULL DEFAULT '{}',
    desk_fp     text,
    crm_fp      text,
    desk_seen   timestamptz,
    crm_seen    timestamptz,
    desk_gone   text CHECK (desk_gone IN ('soft', 'hard')),
    crm_gone    text CHECK (crm_gone IN ('soft', 'hard')),
    linked_at   timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    UNIQUE (module, desk_id),
    UNIQUE (module, crm_id)
);

-- The failure log (OPS-04). One open entry per record and reason; a repeat
-- bumps attempts and last_failed_at. Times come from the events.
CREATE TABLE sync.failures (
    id              bigserial PRIMARY KEY,
    source          text NOT NULL,
    module          text NOT NULL,
    record_id       text NOT NULL,
    event_id        uuid,
    reason          text NOT NULL,
    detail          text NOT NULL DEFAULT '',
    raw             bytea,
    first_failed_at timestamptz NOT NULL,
    last_failed_at  timestamptz NOT NULL,
    attempts        integer NOT NULL DEFAULT 1,
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    resolved_at     timestamptz
);
CREATE UNIQUE INDEX failures_open_per_record ON sync.failures (source, module, record_id, reason)
    WHERE status = 'open';
CREATE INDEX failures_chronological ON sync.failures (last_failed_at DESC);

-- Seven-day history (OPS-03): per hour (UTC), direction and record type, so
-- that days can be shown in any time zone. Hours more than eight days before
-- the newest one are dropped.
CREATE TABLE sync.history (
    hour       timestamptz NOT NULL,
    direction  text NOT NULL CHECK (direction IN ('desk_to_crm', 'crm_to_desk')),
    module     text NOT NULL,
    added      integer NOT NULL DEFAULT 0,
    updated    integer NOT NULL DEFAULT 0,
    failed     integer NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, direction, module)
);

-- What the sync decided for each logged event (and each rejected message), in
-- decision order. The failure log and the history are folds of this table, so
-- a replay rebuilds them exactly even though the decisions themselves depended
-- on the stores at the time.
CREATE TABLE sync.outcomes (
    id          bigserial PRIMARY KEY,
    seq         bigint,
    event_id    uuid,
    source      text NOT NULL,
    module      text NOT NULL,
    record_id   text NOT NULL,
    outcome     text NOT NULL,
    reason      text,
    detail      text NOT NULL DEFAULT '',
    raw         bytea,
    captured_at timestamptz NOT NULL
);
CREATE INDEX outcomes_seq ON sync.outcomes (seq);
