//! Plugins: the sandboxed WebAssembly runtime that runs one plugin on one event.
//!
//! [`Runtime`] owns the single wasmtime `Engine` and compiles plugin files into [`Plugin`]s
//! (one `InstancePre` per plugin version, identified by the file's sha256). [`Plugin::transform`]
//! runs a fresh instance per call under the [`Limits`] and returns an [`Execution`]. Nothing
//! outside this module sees a wasmtime or WIT type: callers get [`Action`] and [`PluginError`].

mod bindings;
mod error;
pub mod registry;
mod runtime;
mod sandbox;
mod threads;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use error::{LoadError, PluginError, PluginErrorKind};
pub use registry::{
    CanaryStatus, Outcome, PluginState, PluginStatus, Registry, RegistryError, VersionCounts, in_canary,
    list_plugin_files, plugin_files, plugin_name,
};
pub use runtime::{LoadSource, Plugin, Runtime, encode_component};

/// The webhook's `plugin_config`, as the plugin reads it through `host.config`.
pub type PluginConfig = Arc<BTreeMap<String, String>>;

/// What a plugin decided for an event, validated against [`Limits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `body` with these extra headers (names lower-cased, reserved ones refused).
    Deliver { headers: Vec<(String, String)>, body: Vec<u8> },
    /// Send the event envelope unchanged.
    Pass,
    /// Send nothing; the reason is recorded.
    Skip(String),
}

/// Severity or origin of a line a plugin wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
    Stdout,
    Stderr,
}

/// One line a plugin logged (through `host.log`, or printed to stdout/stderr).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

/// The result of running a plugin once.
#[derive(Debug)]
pub struct Execution<T = Action> {
    pub result: Result<T, PluginError>,
    pub logs: Vec<LogLine>,
    /// Wall-clock time of the whole call: store setup, instantiation, the call, validation.
    pub duration: Duration,
    /// Linear memory the instance held at the end of the call, across its memories.
    pub memory_bytes: usize,
}

/// Sandbox limits applied to every plugin call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock deadline for one call (instantiation plus `transform`).
    pub deadline: Duration,
    /// Linear memory cap per instance, in bytes.
    pub memory_bytes: usize,
    /// Plugins (by name) whose instances have a memory cap of their own.
    pub memory_bytes_by_plugin: BTreeMap<String, usize>,
    /// Largest body a plugin may return, in bytes.
    pub output_bytes: usize,
    /// Log, stdout and stderr bytes kept per call; the rest is dropped and counted.
    pub log_bytes: usize,
    /// Largest plugin file accepted, in bytes.
    pub plugin_file_bytes: usize,
    /// Plugin calls that may run at once (sizes the instance pool).
    pub max_concurrent: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_millis(50),
            memory_bytes: 32 << 20,
            memory_bytes_by_plugin: BTreeMap::new(),
            output_bytes: 1 << 20,
            log_bytes: 64 << 10,
            plugin_file_bytes: 64 << 20,
            max_concurrent: 64,
        }
    }
}

impl Limits {
    /// The limits for the plugin called `name`: its own memory cap, if it has one.
    pub fn for_plugin(&self, name: &str) -> Limits {
        let memory_bytes = self.memory_bytes_by_plugin.get(name).copied().unwrap_or(self.memory_bytes);
        Limits { memory_bytes, ..self.clone() }
    }

    /// The largest memory cap any plugin has: what an instance slot must hold.
    pub fn largest_memory_bytes(&self) -> usize {
        self.memory_bytes_by_plugin.values().copied().fold(self.memory_bytes, usize::max)
    }
}

/// The event as a plugin receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginEvent {
    pub id: String,
    pub event_type: String,
    pub timestamp: String,
    /// The `data` object as JSON text.
    pub data: Vec<u8>,
}
