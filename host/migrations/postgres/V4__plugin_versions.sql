-- Every plugin version deployed (uploaded through the API or dropped in the plugins folder),
-- by content, and which of them serve.
CREATE TABLE plugin_versions (
    plugin TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    wasm BYTEA NOT NULL,
    size BIGINT NOT NULL,
    uploaded_at BIGINT NOT NULL,
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
    canary_since BIGINT,
    -- `file` when a file in the plugins folder made this version serve: removing the file
    -- then withdraws the plugin. Anything else (an upload, an activation) is not undone by
    -- removing a file.
    activated_by TEXT NOT NULL,
    changed_at BIGINT NOT NULL
);
-- The content of each plugin's file in the plugins folder as last deployed, kept however
-- many versions are pruned: a host starting with that same file does not serve it again
-- over a version activated since.
CREATE TABLE plugin_files (
    plugin TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL
);
