//! The plugin author's local loop: `hookwasm plugin test`, `check`, `new` and `build`.
//!
//! `test` runs a plugin in the same [`Runtime`](crate::plugins::Runtime) and limits as
//! `serve` and reports exactly what would be sent.

mod build;
mod scaffold;
mod scaffold_script;
mod test_report;

pub use build::build;
pub use scaffold::{ScaffoldOptions, scaffold};
pub use scaffold_script::ScriptLang;
pub use test_report::{TestReport, run_plugin_test};

use std::path::{Path, PathBuf};

/// The plugin name a file is known by: its file stem (`slack-notify.wasm` -> `slack-notify`).
pub fn plugin_name(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "plugin".into())
}

/// Where the CLI keeps precompiled plugins: `$XDG_CACHE_HOME/hookwasm` or `~/.cache/hookwasm`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .map(|base| base.join("hookwasm"))
}
