//! The hookwasm plugin SDK: everything a plugin author needs and nothing more.
//!
//! A plugin is a type implementing [`Plugin`], exported with [`export_plugin!`] and built with
//! `cargo build --target wasm32-wasip2 --release`. The same code compiles natively, where the
//! host imports ([`config`], [`log`]) read from and write to a test context that
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
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use action::{Action, Request};
pub use error::{Error, Result};
pub use event::Event;

/// `use hookwasm_plugin_sdk::prelude::*;` brings in what a plugin needs.
pub mod prelude {
    pub use crate::{Action, Error, Event, Plugin, Request, Result, config, export_plugin, log};
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
                ) -> ::core::result::Result<
                    $crate::__private::bindings::hookwasm::plugin::types::Action,
                    ::std::string::String,
                > {
                    $crate::__private::transform::<$plugin>(event)
                }
                fn check_config() -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::check_config::<$plugin>()
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
    /// to the plugin's log instead, where hookwasm reports it with the trap (the
    /// `panic-messages` feature).
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
            crate::log::error(line);
        }));
    }

    #[cfg(target_arch = "wasm32")]
    pub fn transform<P: crate::Plugin>(
        event: bindings::hookwasm::plugin::types::Event,
    ) -> Result<bindings::hookwasm::plugin::types::Action, String> {
        use bindings::hookwasm::plugin::types as wit;
        report_panics();
        let event =
            crate::Event { id: event.id, event_type: event.event_type, timestamp: event.timestamp, data: event.data };
        match P::transform(event) {
            Ok(crate::Action::Deliver(request)) => {
                Ok(wit::Action::Deliver(wit::Request { headers: request.headers, body: request.body }))
            }
            Ok(crate::Action::Pass) => Ok(wit::Action::Pass),
            Ok(crate::Action::Skip(reason)) => Ok(wit::Action::Skip(reason)),
            Err(error) => Err(error.to_string()),
        }
    }

    #[cfg(target_arch = "wasm32")]
    pub fn check_config<P: crate::Plugin>() -> Result<(), String> {
        report_panics();
        P::check_config().map_err(|error| error.to_string())
    }
}
