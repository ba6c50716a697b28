-- The first sync (SYNC-08) imports the records that existed when it started, and no
-- others: each plan row now keeps the highest id of its table at that moment.
-- Records created later are captured live by the triggers already, and the ones the
-- sync itself creates while the first sync runs (the other side's counterparts) are
-- linked already; importing them too would feed every one through the pipeline a
-- second time (as many events again as the first sync's own) for nothing.
-- NULL: a plan recorded before this migration, imported without the bound as before.
ALTER TABLE syncd.initial_sync ADD COLUMN until_id bigint;
