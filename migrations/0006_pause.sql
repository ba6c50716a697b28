-- While sync is paused (OPS-01) capture goes on and events are logged; the sync
-- projection only notes which logged events it has not applied yet. On resume
-- they are applied in log order before anything newer.
CREATE TABLE sync.deferred (
    seq bigint PRIMARY KEY REFERENCES syncd.event_log (seq)
);
