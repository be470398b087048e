//! Integration tests: real plugins compiled to Wasm, the real runtime and the real binary.

/// Whether every `TestHost` runs on PostgreSQL (the `it-postgres` target) or SQLite (this one).
pub const ON_POSTGRES: bool = false;

mod admin;
mod chaos;
mod cli;
mod cluster;
mod console;
mod crash;
mod host;
mod languages;
mod pipeline;
mod properties;
mod reload;
mod runtime;
mod soak;
mod sqlite;
mod store;
mod support;
mod versions;
