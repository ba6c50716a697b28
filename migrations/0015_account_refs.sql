-- A contact's account reference is synced through the mapping table (issue 15): a
-- contact pointing at account A gets, on the other side, the account linked to A.
-- A reference to an account that is not linked yet waits here until the account
-- links, then the contact on the other side is written and the row goes. Written and
-- resolved by the sync projection in the batch transaction (projections/refs.py).
CREATE TABLE sync.pending_refs (
    side       text NOT NULL CHECK (side IN ('desk', 'crm')),  -- the side whose contact waits
    contact_id text NOT NULL,  -- that contact (sync.links.desk_id / crm_id)
    account_id text NOT NULL,  -- the account it waits for, on the other side
    seq        bigint NOT NULL,  -- the event that set the reference (syncd.event_log)
    PRIMARY KEY (side, contact_id)
);
CREATE INDEX pending_refs_account ON sync.pending_refs (account_id);
