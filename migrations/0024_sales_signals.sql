-- Sales signals (TICKET-09): the signals projection's tables (projections/sales_signals.py),
-- derived from the event log only and rebuilt by `syncd replay --projection signals`,
-- and the position of the publisher that sends them to Kafka (adapters/signal_publisher.py).
CREATE SCHEMA sales_signals;

-- The state the derivation reads: every desk ticket ever seen (a deleted one stays, live
-- false, so a restore is not a new ticket), as its last event left it.
CREATE TABLE sales_signals.tickets (
    ticket_id     text PRIMARY KEY,
    live          boolean NOT NULL,
    status_type   text,         -- Open, On Hold, Escalated, Closed; NULL unknown
    department_id text,
    subject       text,
    email_key     text,         -- the requester's match keys (projections.keys, handshake)
    phone_key     text,
    due_at        timestamptz,
    rating        text,
    overdue_for   timestamptz   -- the due date an overdue signal was decided for
);
-- The open tickets the clock may make overdue next.
CREATE INDEX sales_signals_tickets_due ON sales_signals.tickets (due_at)
    WHERE live AND status_type IS DISTINCT FROM 'Closed';

-- The CRM's live contacts and unconverted leads, by the match keys they hold.
CREATE TABLE sales_signals.people (
    kind       text NOT NULL CHECK (kind IN ('contact', 'lead')),
    record_id  text NOT NULL,
    email_keys text[] NOT NULL,
    phone_keys text[] NOT NULL,
    PRIMARY KEY (kind, record_id)
);
CREATE INDEX sales_signals_people_email ON sales_signals.people USING gin (email_keys);
CREATE INDEX sales_signals_people_phone ON sales_signals.people USING gin (phone_keys);

-- The CRM's live deals (open, won or lost), for a contact's standing.
CREATE TABLE sales_signals.deals (
    deal_id    text PRIMARY KEY,
    contact_id text,
    stage      text NOT NULL
);
CREATE INDEX sales_signals_deals_contact ON sales_signals.deals (contact_id);

-- The signals. seq is allocated by the projection from clock.last_seq under that row's
-- lock, held to the commit: gap-free, visible in order, and the same in a rebuild.
CREATE TABLE sales_signals.signals (
    seq           bigint PRIMARY KEY,
    id            uuid NOT NULL UNIQUE,  -- uuid5 of the cause: one cause, one signal
    kind          text NOT NULL CHECK (kind IN ('new_ticket', 'new_comment', 'new_reply',
                                                'overdue_ticket', 'escalated_ticket',
                                                'new_rating')),
    ticket_id     text NOT NULL,
    department_id text,
    origin        text NOT NULL CHECK (origin IN ('lead', 'contact', 'customer')),
    subject       text,
    at            timestamptz NOT NULL,  -- event time (an overdue signal: the due date)
    event_id      uuid                   -- the event that caused it
);

-- The event-time clock (the newest capture time applied: "overdue" is decided by it,
-- never by the wall clock) and the last sequence number allocated.
CREATE TABLE sales_signals.clock (
    one      boolean PRIMARY KEY DEFAULT true CHECK (one),
    at       timestamptz,
    last_seq bigint NOT NULL
);

-- The last seq the publisher has had acknowledged by Kafka (acks=all). Not rebuilt: a
-- stream position, like the board's.
CREATE TABLE sales_signals.published (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    through bigint NOT NULL
);
INSERT INTO sales_signals.published (through) VALUES (0);
