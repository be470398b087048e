-- Each host sharing the database reports itself every few seconds: when it was last seen
-- and the plugin versions it serves (JSON: plugin name -> sha256, or null when not serving).
-- GET /v1/plugins lists the live ones, so drift between hosts' plugins is visible. Plugin
-- versions are named by sha256 here, as uploaded plugin blobs will be.
CREATE TABLE hosts (
    host TEXT PRIMARY KEY,
    seen_at BIGINT NOT NULL,
    plugins TEXT NOT NULL
);
