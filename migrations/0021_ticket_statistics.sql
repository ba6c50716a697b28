-- Customer statistics (TICKET-06): the customer's rating of a desk ticket, and the
-- statistics projection's own tables.
--
-- Desk side: desk.tickets.rating, the customer's happiness rating of the ticket, named
-- as Zoho Desk's customer happiness names them (its feedback form: Good, Okay, Bad;
-- CustomerHappiness.json counts goodCount, okCount, badCount); NULL: not rated. The
-- capture triggers take every column of the row, so a rating is captured like any
-- other ticket change.
ALTER TABLE desk.tickets ADD COLUMN rating text CHECK (rating IN ('good', 'okay', 'bad'));

-- Projection side: the ticket_stats schema, derived from the event log only (rebuilt by
-- `syncd replay --projection statistics`). Ids are the source's record ids (text), as in
-- events. A CRM record's statistics are read from these rows through sync.links at read
-- time (daemon/service/ticket_stats.py); nothing here names a CRM contact's link.
CREATE SCHEMA ticket_stats;

-- One row per desk ticket ever seen; a deleted ticket stays (live false), so a restore
-- keeps its first close.
CREATE TABLE ticket_stats.tickets (
    ticket_id       text PRIMARY KEY,
    contact_id      text,                 -- the desk contact (desk.tickets.contact_id)
    live            boolean NOT NULL,     -- neither deleted nor in the recycle bin
    subject         text,
    status_type     text,                 -- Open, On Hold, Escalated, Closed; NULL unknown
    created_at      timestamptz NOT NULL, -- the desk's creation time of the ticket
    due_at          timestamptz,
    first_closed_at timestamptz,          -- the desk's time of the first change to Closed
    rating          text CHECK (rating IN ('good', 'okay', 'bad'))
);
CREATE INDEX ticket_stats_tickets_contact ON ticket_stats.tickets (contact_id) WHERE live;

-- The agents' replies to the customer (threads out, kind reply), live ones only: a
-- ticket's first response is the earliest of its rows.
CREATE TABLE ticket_stats.replies (
    thread_id text PRIMARY KEY,
    ticket_id text NOT NULL,
    sent_at   timestamptz NOT NULL
);
CREATE INDEX ticket_stats_replies_ticket ON ticket_stats.replies (ticket_id, sent_at);

-- Each live CRM contact's account, from the CRM's contact events (every origin: the
-- sync's writes to the CRM's contacts are captured too, migration 0013).
CREATE TABLE ticket_stats.crm_contacts (
    contact_id text PRIMARY KEY,
    account_id text
);
CREATE INDEX ticket_stats_crm_contacts_account ON ticket_stats.crm_contacts (account_id);

-- The event time statistics are computed at: the newest capture time of any event the
-- projection applied. "Overdue" compares due dates with it, never with the wall clock.
CREATE TABLE ticket_stats.clock (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    at  timestamptz NOT NULL
);
