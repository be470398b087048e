//! Integration tests: real plugins compiled to Wasm, the real runtime and the real binary.

mod admin;
mod cli;
mod cluster;
mod crash;
mod host;
mod pipeline;
mod reload;
mod runtime;
mod store;
mod support;
