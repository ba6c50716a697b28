-- Each outbox numbers its rows with a sequence of its own. crm.outbox was made
-- LIKE desk.outbox, which copied the default nextval('desk.outbox_seq_seq'): the two
-- outboxes shared one sequence, so each relay saw the other store's rows as holes in
-- its own numbering, and could not tell them from rows still being committed (which
-- it watches for, adapters/relay.py). The new sequence starts past every number the
-- shared one gave out, so seq still only grows in both outboxes.
CREATE SEQUENCE crm.outbox_seq_seq OWNED BY crm.outbox.seq;
SELECT setval('crm.outbox_seq_seq',
              greatest((SELECT last_value FROM desk.outbox_seq_seq),
                       (SELECT coalesce(max(seq), 1) FROM crm.outbox)));
ALTER TABLE crm.outbox ALTER COLUMN seq SET DEFAULT nextval('crm.outbox_seq_seq');
