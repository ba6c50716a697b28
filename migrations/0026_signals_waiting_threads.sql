-- Sales signals: a comment or customer reply logged before its ticket (a ticket and its
-- threads have different Kafka keys, so different partitions; a hosted desk's poll reads
-- them apart) waits here and is signalled when the ticket comes (projections/sales_signals.py).
CREATE TABLE sales_signals.waiting_threads (
    thread_id  text NOT NULL,
    ticket_id  text NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('new_comment', 'new_reply')),
    at         timestamptz NOT NULL,  -- the thread's capture time: the signal's time
    event_id   uuid,
    position   integer NOT NULL,      -- log order among the ticket's waiting threads
    PRIMARY KEY (ticket_id, thread_id)
);
