"""Pure projection logic and its SQL. Never imports Kafka, HTTP or metrics."""
