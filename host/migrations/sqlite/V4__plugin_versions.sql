-- Every plugin version deployed (uploaded through the API or dropped in the plugins folder),
-- by content, and which of them serve.
CREATE TABLE plugin_versions (
    plugin TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    wasm BLOB NOT NULL,
    size INTEGER NOT NULL,
    uploaded_at INTEGER NOT NULL,
    uploaded_by TEXT NOT NULL,
    PRIMARY KEY (plugin, sha256)
);
-- One row per plugin that serves: its version, and a canary given `canary_percent` of its
-- deliveries.
CREATE TABLE plugin_activations (
    plugin TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    canary_sha256 TEXT,
    canary_percent INTEGER,
    canary_since INTEGER,
    changed_at INTEGER NOT NULL
);
