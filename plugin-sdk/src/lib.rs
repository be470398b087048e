//! The hookwasm plugin SDK: everything a plugin author needs and nothing more.
//!
//! A plugin is a type implementing [`Plugin`], exported with [`export_plugin!`] and built with
//! `hookwasm plugin build` (or `cargo build --target wasm32-wasip2 --release`). The same code
//! compiles natively, where [`config`] and [`log`] read from and write to a test context that
//! [`testing::run`] sets up, so plugin logic is unit-tested with plain `cargo test`.
//!
//! ```
//! use hookwasm_plugin_sdk::prelude::*;
//!
//! struct VipOnly;
//! impl Plugin for VipOnly {
//!     fn transform(event: Event) -> Result<Action> {
//!         let data: serde_json::Value = event.json()?;
//!         let vip = data["conversation"]["labels"].as_array().is_some_and(|l| l.iter().any(|x| x == "vip"));
//!         if !vip {
//!             return Ok(Action::skip("not a VIP conversation"));
//!         }
//!         Action::deliver_json(&serde_json::json!({ "text": format!("VIP: {}", data["message"]["body"]) }))
//!     }
//! }
//! export_plugin!(VipOnly);
//! ```
//!
//! The contract itself lives in `wit/plugin.wit`; `README.md` documents it for authors.

mod action;
#[cfg(any(target_arch = "wasm32", test))]
mod arena;
pub mod config;
mod error;
mod event;
pub mod log;
pub mod system;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use action::{Action, Request};
pub use error::{Error, Result};
pub use event::Event;

/// `use hookwasm_plugin_sdk::prelude::*;` brings in what a plugin needs.
pub mod prelude {
    pub use crate::{Action, Error, Event, Plugin, Request, Result, config, export_plugin, log, system};
    pub use serde_json;
}

/// A webhook plugin. Both functions are associated functions: a fresh instance runs for
/// every event, so there is no state to keep between calls.
pub trait Plugin {
    /// Decide what to deliver for one event: a new body, the event unchanged, or nothing.
    /// An `Err` holds the delivery (it is not sent) and is shown to the operator.
    fn transform(event: Event) -> Result<Action>;

    /// Validate the webhook's `plugin_config` (read it with [`config::get`]). Called once when
    /// the plugin is loaded for a webhook; an `Err` keeps the plugin from being used for it.
    fn check_config() -> Result<()> {
        Ok(())
    }
}

/// Exports a [`Plugin`] implementation as the component's `transform` and `check-config`.
/// Use it once per plugin crate. On native targets it only checks that the type is a plugin.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __HookwasmExport;
            impl $crate::__private::bindings::Guest for __HookwasmExport {
                fn transform(
                    event: $crate::__private::bindings::hookwasm::plugin::types::Event,
                    config: $crate::__private::bindings::hookwasm::plugin::types::Config,
                ) -> $crate::__private::bindings::hookwasm::plugin::types::Transformed {
                    $crate::__private::transform::<$plugin>(event, config)
                }
                fn check_config(
                    config: $crate::__private::bindings::hookwasm::plugin::types::Config,
                ) -> $crate::__private::bindings::hookwasm::plugin::types::Checked {
                    $crate::__private::check_config::<$plugin>(config)
                }
            }
            $crate::__private::bindings::__export_transformer!(__HookwasmExport with_types_in $crate::__private::bindings);
        };
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = || {
            fn assert_plugin<P: $crate::Plugin>() {}
            assert_plugin::<$plugin>();
        };
    };
}

#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    #[allow(clippy::too_many_arguments, reason = "generated code")]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "wit",
            world: "transformer",
            pub_export_macro: true,
            export_macro_name: "__export_transformer",
            default_bindings_module: "hookwasm_plugin_sdk::__private::bindings",
        });
    }

    /// Without WASI (`wasm32-unknown-unknown`) a panic's message would go nowhere: it goes
    /// to the host as the call's trap message instead, which hookwasm reports with the trap
    /// (the `panic-messages` feature). With WASI, std prints it to stderr, which the host reads.
    #[cfg(target_arch = "wasm32")]
    fn report_panics() {
        #[cfg(all(target_os = "unknown", feature = "panic-messages"))]
        std::panic::set_hook(Box::new(|info| {
            // Built by hand: `PanicHookInfo`'s `Display` links formatting that costs every
            // instance about a microsecond (BENCHMARKS.md).
            let mut line = String::from("panicked at ");
            if let Some(location) = info.location() {
                line += location.file();
                line += ":";
                line += &location.line().to_string();
                line += ": ";
            }
            line += info.payload_as_str().unwrap_or("(no message)");
            // Eight bytes per call: the import takes only numbers, so the plugin stays one
            // core instance (see `wit/plugin.wit`).
            for chunk in line.as_bytes().chunks(8) {
                let mut bytes = [0u8; 8];
                bytes[..chunk.len()].copy_from_slice(chunk);
                bindings::hookwasm::plugin::host::trap_message(u64::from_le_bytes(bytes), chunk.len() as u8);
            }
        }));
    }

    #[cfg(target_arch = "wasm32")]
    pub fn transform<P: crate::Plugin>(
        event: bindings::hookwasm::plugin::types::Event,
        config: bindings::hookwasm::plugin::types::Config,
    ) -> bindings::hookwasm::plugin::types::Transformed {
        use bindings::hookwasm::plugin::types as wit;
        report_panics();
        crate::config::install(config);
        let event =
            crate::Event { id: event.id, event_type: event.event_type, timestamp: event.timestamp, data: event.data };
        let action = match P::transform(event) {
            Ok(crate::Action::Deliver(request)) => {
                Ok(wit::Action::Deliver(wit::Request { headers: request.headers, body: request.body }))
            }
            Ok(crate::Action::Pass) => Ok(wit::Action::Pass),
            Ok(crate::Action::Skip(reason)) => Ok(wit::Action::Skip(reason)),
            Err(error) => Err(error.to_string()),
        };
        wit::Transformed { action, logs: crate::log::take() }
    }

    #[cfg(target_arch = "wasm32")]
    pub fn check_config<P: crate::Plugin>(
        config: bindings::hookwasm::plugin::types::Config,
    ) -> bindings::hookwasm::plugin::types::Checked {
        report_panics();
        crate::config::install(config);
        let outcome = P::check_config().map_err(|error| error.to_string());
        bindings::hookwasm::plugin::types::Checked { outcome, logs: crate::log::take() }
    }
}
