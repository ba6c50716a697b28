-- Progress of the first sync (SYNC-08), one row per source and module, so a
-- killed run resumes where it stopped: each chunk's capture and its progress
-- row commit together.
CREATE TABLE syncd.initial_sync (
    source      text NOT NULL,
    module      text NOT NULL,
    cutoff      timestamptz NOT NULL,
    last_id     bigint NOT NULL DEFAULT 0,
    total       bigint NOT NULL,
    captured    bigint NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (source, module)
);
