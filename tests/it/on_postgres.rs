//! The integration tests that hold for any store, run again with every `TestHost` on its own
//! database on a throwaway PostgreSQL server (`it-postgres`). Tests of what only SQLite or
//! the config file's `[[webhooks]]` do live in `sqlite.rs`, included only by `main.rs`.

// Helpers shared with `main.rs` that only the tests left out here use.
#![allow(dead_code)]

/// Whether every `TestHost` runs on PostgreSQL (this target) or SQLite (`it`).
pub const ON_POSTGRES: bool = true;

mod admin;
mod crash;
mod host;
mod pipeline;
mod reload;
mod store;
mod support;
mod versions;
