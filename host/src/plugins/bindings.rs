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

/// The conversions into and out of each version's generated types, which are distinct types
/// of the same shape.
macro_rules! conversions {
    ($version:ident) => {
        impl From<$version::Action> for super::Action {
            fn from(action: $version::Action) -> Self {
                match action {
                    $version::Action::Deliver(request) => {
                        super::Action::Deliver { headers: request.headers, body: request.body }
                    }
                    $version::Action::Pass => super::Action::Pass,
                    $version::Action::Skip(reason) => super::Action::Skip(reason),
                }
            }
        }

        impl From<&super::PluginEvent> for $version::Event {
            fn from(event: &super::PluginEvent) -> Self {
                $version::Event {
                    id: event.id.clone(),
                    event_type: event.event_type.clone(),
                    timestamp: event.timestamp.clone(),
                    data: event.data.clone(),
                }
            }
        }

        impl From<$version::Level> for super::LogLevel {
            fn from(level: $version::Level) -> Self {
                match level {
                    $version::Level::Debug => super::LogLevel::Debug,
                    $version::Level::Info => super::LogLevel::Info,
                    $version::Level::Warn => super::LogLevel::Warn,
                    $version::Level::Error => super::LogLevel::Error,
                }
            }
        }
    };
}

conversions!(v0_2);
conversions!(v0_1);
