-- The related list of a CRM lead (TICKET-01, TICKET-07): a lead's tickets are those whose
-- requester e-mail has the lead's e-mail key (projections/keys.py; the board matches
-- requesters to leads the same way). The statistics projection keeps each live lead's
-- key from the CRM's lead events, like each CRM contact's account; rows are a function
-- of the events only, rebuilt by `syncd replay --projection statistics` (which a
-- database holding lead events from before this migration needs, to fill the table).
CREATE TABLE ticket_stats.crm_leads (
    lead_id   text PRIMARY KEY,
    email_key text NOT NULL   -- projections.keys.email_key of the lead's e-mail
);
CREATE INDEX ticket_stats_crm_leads_email ON ticket_stats.crm_leads (email_key);

-- A lead's tickets are found by the requester's key (syncd.email_key agrees with the
-- Python key to the character: migration 0012).
CREATE INDEX ticket_stats_tickets_requester ON ticket_stats.tickets
    (syncd.email_key(requester)) WHERE live;
