//! Native test helpers: run a plugin on an event with a given `plugin_config`, as the host
//! would, and inspect the action and log lines. Only on native targets.
//!
//! ```
//! use hookwasm_plugin_sdk::{prelude::*, testing};
//!
//! struct Echo;
//! impl Plugin for Echo {
//!     fn transform(event: Event) -> Result<Action> {
//!         log::info(format!("prefix={}", config::get("prefix").unwrap_or_default()));
//!         Ok(Action::Pass)
//!     }
//! }
//!
//! let event = testing::event("message.created", serde_json::json!({"x": 1}));
//! let outcome = testing::run::<Echo>(&event, &[("prefix", "hi")]);
//! assert_eq!(outcome.result.unwrap(), Action::Pass);
//! assert_eq!(outcome.logs[0].1, "prefix=hi");
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;

use crate::log::Level;
use crate::{Action, Event, Plugin, Result};

/// What a plugin did for one event.
#[derive(Debug)]
pub struct Outcome<T = Action> {
    /// The plugin's return value.
    pub result: Result<T>,
    /// Log lines written during the call, in order.
    pub logs: Vec<(Level, String)>,
}

#[derive(Default)]
pub(crate) struct Context {
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) logs: Vec<(Level, String)>,
}

thread_local! {
    static CONTEXT: RefCell<Context> = RefCell::new(Context::default());
}

pub(crate) fn with_context<R>(f: impl FnOnce(&mut Context) -> R) -> R {
    CONTEXT.with(|ctx| f(&mut ctx.borrow_mut()))
}

fn with_config<T>(config: &[(&str, &str)], call: impl FnOnce() -> Result<T>) -> Outcome<T> {
    with_context(|ctx| {
        *ctx =
            Context { config: config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), logs: Vec::new() }
    });
    let result = call();
    let logs = with_context(|ctx| std::mem::take(&mut ctx.logs));
    Outcome { result, logs }
}

/// Runs `P::transform` on `event` with `config` as the webhook's `plugin_config`.
pub fn run<P: Plugin>(event: &Event, config: &[(&str, &str)]) -> Outcome {
    with_config(config, || P::transform(event.clone()))
}

/// Runs `P::check_config` with `config` as the webhook's `plugin_config`.
pub fn check_config<P: Plugin>(config: &[(&str, &str)]) -> Outcome<()> {
    with_config(config, P::check_config)
}

/// An event of `event_type` with `data`, a fixed id and timestamp.
pub fn event(event_type: &str, data: serde_json::Value) -> Event {
    Event {
        id: "evt_test".into(),
        event_type: event_type.into(),
        timestamp: "2026-01-01T00:00:00Z".into(),
        data: serde_json::to_vec(&data).expect("a Value always serializes"),
    }
}

/// Reads an event envelope file (e.g. one of the repository's sample events).
///
/// # Panics
/// If the file cannot be read or is not an event envelope: this is a test helper.
pub fn load_event(path: impl AsRef<Path>) -> Event {
    let path = path.as_ref();
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    Event::from_envelope(&bytes).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// Parses a delivered JSON body, for assertions.
///
/// # Panics
/// If the action is not `Deliver` or its body is not JSON.
pub fn delivered_json(action: &Action) -> serde_json::Value {
    match action {
        Action::Deliver(request) => serde_json::from_slice(&request.body).expect("body is JSON"),
        other => panic!("expected Action::Deliver, got {other:?}"),
    }
}
