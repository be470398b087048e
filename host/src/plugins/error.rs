//! Typed errors for loading and running plugins. Each names the plugin and the cause.

use std::time::Duration;

/// Why a plugin file could not be loaded. The previous version (if any) keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin `{plugin}`: cannot read {path}: {source}")]
    Read { plugin: String, path: String, source: std::io::Error },
    #[error("plugin `{plugin}`: file is {size} bytes, over the {limit}-byte limit")]
    TooLarge { plugin: String, size: usize, limit: usize },
    #[error("plugin `{plugin}`: not a WebAssembly file (no \\0asm header)")]
    NotWasm { plugin: String },
    #[error(
        "plugin `{plugin}`: this core WebAssembly module does not carry the plugin contract ({reason}); build it with `hookwasm plugin build` or `cargo build --target wasm32-wasip2`"
    )]
    CoreModule { plugin: String, reason: String },
    #[error("plugin `{plugin}`: invalid component: {reason}")]
    Invalid { plugin: String, reason: String },
    #[error(
        "plugin `{plugin}`: imports `{import}`, which hookwasm does not provide (plugins may import only hookwasm:plugin/host and the WASI 0.2 CLI interfaces)"
    )]
    ForbiddenImport { plugin: String, import: String },
    #[error("plugin `{plugin}`: does not implement the hookwasm:plugin/transformer world: {reason}")]
    WrongInterface { plugin: String, reason: String },
}

/// Why one plugin call failed. The delivery is held, never sent untransformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin `{plugin}` ({short_sha}): {kind}")]
pub struct PluginError {
    pub plugin: String,
    pub short_sha: String,
    pub kind: PluginErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginErrorKind {
    #[error("timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("exceeded its {} MiB memory limit", .0 >> 20)]
    MemoryLimit(usize),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("returned an error: {0}")]
    Returned(String),
    #[error("returned a {size}-byte body, over the {limit}-byte output limit")]
    OutputTooLarge { size: usize, limit: usize },
    #[error("returned invalid output: {0}")]
    InvalidOutput(String),
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
}

impl PluginErrorKind {
    /// A short stable name for metrics and JSON output.
    pub fn code(&self) -> &'static str {
        match self {
            PluginErrorKind::Timeout(_) => "timeout",
            PluginErrorKind::MemoryLimit(_) => "memory_limit",
            PluginErrorKind::Trap(_) => "trap",
            PluginErrorKind::Returned(_) => "returned_error",
            PluginErrorKind::OutputTooLarge { .. } => "output_too_large",
            PluginErrorKind::InvalidOutput(_) => "invalid_output",
            PluginErrorKind::Instantiate(_) => "instantiate",
        }
    }
}
