-- The ticket related list of a CRM contact or account (TICKET-01, TICKET-07): the
-- statistics projection keeps, besides what the statistics need, what a list of tickets
-- shows and filters on: the ticket's status as the desk names it (a custom one too), its
-- priority (the "high priority" filter), its department and its requester's e-mail.
-- Each is a function of the ticket's events, like the other columns; rows kept before
-- this migration hold NULL until `syncd replay --projection statistics` rebuilds them.
ALTER TABLE ticket_stats.tickets
    ADD COLUMN status        text,
    ADD COLUMN priority      text,
    ADD COLUMN department_id text,
    ADD COLUMN requester     text;
