-- Ticket actions on a hosted desk (Zoho Desk): the projection queues each action for the
-- desk's writer (sync.commands) in the batch that logs its event; until the writer has
-- delivered it, its row says 'pending' (projections/ticket_actions.py).
ALTER TABLE ticket_actions.actions DROP CONSTRAINT actions_outcome_check;
ALTER TABLE ticket_actions.actions ADD CONSTRAINT actions_outcome_check
    CHECK (outcome IN ('applied', 'failed', 'pending'));
