-- The PostgreSQL schema, the same tables as SQLite's version 2. Times are milliseconds since
-- the Unix epoch, as in SQLite, so both backends share the store's types.
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    type TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    data TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX events_received ON events (received_at, seq);
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL REFERENCES events(id),
    webhook_id TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0,
    body BYTEA,
    headers TEXT,
    plugin_sha TEXT,
    reason TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    replay_requested BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state IN ('pending', 'retrying');
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_held ON deliveries (webhook_id) WHERE state = 'held';
CREATE INDEX deliveries_expiry ON deliveries (updated_at) WHERE state IN ('delivered', 'filtered', 'dead');
CREATE TABLE attempts (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id TEXT NOT NULL REFERENCES deliveries(id),
    at BIGINT NOT NULL,
    status INTEGER,
    latency_ms BIGINT NOT NULL,
    response_excerpt TEXT NOT NULL,
    error TEXT
);
CREATE INDEX attempts_delivery ON attempts (delivery_id);
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE disabled_webhooks (
    webhook_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    reason TEXT NOT NULL,
    disabled_at BIGINT NOT NULL
);
