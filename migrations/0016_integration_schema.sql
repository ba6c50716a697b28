-- The integration aggregate's schema (adapters/integration_store.py keeps its events
-- there, in the eventsourcing library's tables). Created by the migrations, so that
-- `syncd migrate` run as the owner leaves nothing for the daemon's own role to create:
-- the tables inside are created by `syncd migrate` too (it opens the store once).
CREATE SCHEMA IF NOT EXISTS integration;
