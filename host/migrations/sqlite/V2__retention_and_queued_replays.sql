-- Retention deletes final deliveries by when they last changed, and events by when they
-- arrived.
CREATE INDEX deliveries_expiry ON deliveries (updated_at) WHERE state IN ('delivered', 'filtered', 'dead');
CREATE INDEX events_received ON events (received_at);
-- A replay asked for while a worker holds the delivery's lease waits for that worker's
-- result instead of making the delivery claimable (and sent twice at once).
ALTER TABLE deliveries ADD COLUMN replay_requested INTEGER NOT NULL DEFAULT 0;
