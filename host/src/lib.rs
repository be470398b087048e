//! hookwasm: a webhook transformer host.
//!
//! Events arrive over HTTP, are stored durably, fan out to the webhooks subscribed to them,
//! pass through each webhook's optional WebAssembly plugin, and are delivered signed
//! (Standard Webhooks) with retries.
//!
//! # Layout
//!
//! - [`config`]: defaults -> TOML file -> `HOOKWASM_*` env, validated with errors naming the key.
//! - [`model`]: the event envelope every other module speaks.
//! - [`ingest`]: `POST /v1/events` -> validate -> store (durable) -> 202.
//! - [`store`]: the [`store::Store`] trait, its SQLite implementation (versioned schema, group
//!   commit, read connections, leases) and retention.
//! - [`webhooks`]: the webhooks in effect, their secrets and runtime state.
//! - [`plugins`]: the sandboxed Wasm runtime and the registry of loaded plugin versions.
//! - [`delivery`]: the worker (claim, transform, send), signing, retries, the HTTP client.
//! - [`deploy`]: plugin versions: deploy (upload or file), activate, canary, and the registry
//!   brought in line with the versions the store says serve.
//! - [`dryrun`]: replays stored events through the serving version and a candidate, and diffs.
//! - [`reload`]: hot reload of plugin files and the config file's webhooks.
//! - [`metrics`]: Prometheus counters, histograms and gauges for `/metrics`.
//! - [`timeline`]: the last hour of those counters, sampled every 10 s, for the console.
//! - [`api`]: routes, shared state and JSON errors.
//! - [`console`]: the operator console's page and assets, served at `/console`.
//! - [`sync`]: hosts sharing a PostgreSQL store poll its webhooks and disabled state.
//! - [`server`]: wires it all together for `hookwasm serve`.
//! - [`allocator`]: glibc's allocator settings for a long-running host.
//! - [`client`]: the CLI's client for a running server, and its tables.
//! - [`devtools`]: `hookwasm plugin test|check|new`, the plugin author's local loop.
//!
//! Data flows one way: ingest -> store -> worker -> plugin runtime -> worker -> HTTP -> store.
//! `main.rs` only parses the command line and calls into these.

pub mod allocator;
pub mod api;
pub mod client;
pub mod config;
pub mod console;
pub mod delivery;
pub mod deploy;
pub mod devtools;
pub mod dryrun;
pub mod filter;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod plugins;
pub mod presence;
pub mod reload;
pub mod sealing;
pub mod server;
pub mod store;
pub mod sync;
pub mod timeline;
pub mod webhooks;
