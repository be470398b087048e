-- Since when every attempt to a webhook has failed (no row: its last attempt succeeded).
-- A webhook failing for `disable_after` is disabled.
CREATE TABLE failing_webhooks (
    webhook_id TEXT PRIMARY KEY,
    since INTEGER NOT NULL
);
