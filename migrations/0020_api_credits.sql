-- The API credits each hosted store's organisation was charged by the daemon, a
-- row a minute (adapters/credit_ledger.py): a restarted daemon, and every replica,
-- counts what was spent in the window before it, not from nought.
CREATE TABLE syncd.api_credits (
    store  text NOT NULL CHECK (store IN ('desk', 'crm')),
    minute timestamptz NOT NULL,   -- the start of the minute the credits were spent in
    spent  integer NOT NULL CHECK (spent >= 0),
    PRIMARY KEY (store, minute)
);
