//! Host bindings generated from the contract, one module per supported version:
//! `wit/plugin.wit` (0.2.0, current) and `wit/0.1.0/plugin.wit` (plugins built before it).

/// `hookwasm:plugin@0.2.0`: the config is an argument, logs come back with the result, and
/// the host's imports take and return only numbers.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "transformer",
    });

    pub use hookwasm::plugin::types::{Action, Level, LogLine};
}

/// `hookwasm:plugin@0.1.0`: the config and logging are host imports.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "transformer",
    });

    pub use hookwasm::plugin::host::Level;
}

impl From<v0_2::Action> for super::Action {
    fn from(action: v0_2::Action) -> Self {
        match action {
            v0_2::Action::Deliver(request) => super::Action::Deliver { headers: request.headers, body: request.body },
            v0_2::Action::Pass => super::Action::Pass,
            v0_2::Action::Skip(reason) => super::Action::Skip(reason),
        }
    }
}

impl From<v0_1::Action> for super::Action {
    fn from(action: v0_1::Action) -> Self {
        match action {
            v0_1::Action::Deliver(request) => super::Action::Deliver { headers: request.headers, body: request.body },
            v0_1::Action::Pass => super::Action::Pass,
            v0_1::Action::Skip(reason) => super::Action::Skip(reason),
        }
    }
}
