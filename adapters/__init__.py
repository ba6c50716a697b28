"""The edges of the system: PostgreSQL, Kafka, the stores and their change capture."""
