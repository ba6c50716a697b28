-- A remote store's capture (issue 16): the values the daemon last saw of each of its
-- records (fetched by the reconciliation poll, or landed by the sync's own writer), so
-- a record fetched again becomes a change event naming only the fields that changed,
-- and an old copy is recognised as old; and each module's poll cursor. The daemon's
-- own capture state, like the outbox (adapters/remote_capture.py).
CREATE TABLE syncd.remote_records (
    store         text NOT NULL CHECK (store IN ('desk', 'crm')),
    module        text NOT NULL,
    record_id     text NOT NULL,
    "values"      jsonb NOT NULL,
    modified_time timestamptz NOT NULL,
    PRIMARY KEY (store, module, record_id)
);
CREATE TABLE syncd.remote_cursors (
    store          text NOT NULL CHECK (store IN ('desk', 'crm')),
    module         text NOT NULL,
    modified_since timestamptz NOT NULL,  -- the next poll asks for records modified since
    PRIMARY KEY (store, module)
);
