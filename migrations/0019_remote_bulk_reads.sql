-- A remote store's first sync by its bulk read (issue 16, adapters/remote_bulk.py):
-- where each module's read stands, so a daemon killed mid-way goes on from there.
-- A row lives while its module's read runs.
CREATE TABLE syncd.remote_bulk_reads (
    store    text NOT NULL CHECK (store IN ('desk', 'crm')),
    module   text NOT NULL,
    asked_at timestamptz NOT NULL,  -- the first job's: the poll's cursor once it is done
    page     integer NOT NULL DEFAULT 1,
    job_id   text,                  -- the page's job; null: not asked for yet
    captured integer NOT NULL DEFAULT 0,  -- rows of the job's file captured
    PRIMARY KEY (store, module)
);
