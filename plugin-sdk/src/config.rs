//! Read access to the webhook's `plugin_config`.
//!
//! In a plugin these read the configuration the host passed to the call. Natively (unit
//! tests) they read the configuration that [`crate::testing::run`] installed for the thread.

use crate::{Error, Result};

/// The value of `key` in the webhook's `plugin_config`.
pub fn get(key: &str) -> Option<String> {
    imp::get(key)
}

/// Every key in the webhook's `plugin_config`, sorted.
pub fn keys() -> Vec<String> {
    imp::keys()
}

/// The value of `key`, or an error naming the missing key.
pub fn require(key: &str) -> Result<String> {
    get(key).ok_or_else(|| Error::msg(format!("plugin_config.{key} is required")))
}

/// Comma-separated list in `key`, trimmed, empty items dropped; empty if unset.
pub fn list(key: &str) -> Vec<String> {
    get(key)
        .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
        .unwrap_or_default()
}

/// Boolean in `key` (`true`/`false`), `default` if unset, an error otherwise.
pub fn flag(key: &str, default: bool) -> Result<bool> {
    match get(key).as_deref() {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(Error::msg(format!("plugin_config.{key} must be true or false, got {other:?}"))),
    }
}

/// Keeps the configuration the host passed to this call (sorted by key) for [`get`].
#[cfg(target_arch = "wasm32")]
pub(crate) fn install(config: Vec<(String, String)>) {
    imp::CONFIG.with(|installed| *installed.borrow_mut() = config);
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use std::cell::RefCell;

    thread_local! {
        pub static CONFIG: RefCell<Vec<(String, String)>> = const { RefCell::new(Vec::new()) };
    }

    pub fn get(key: &str) -> Option<String> {
        CONFIG.with(|config| {
            let config = config.borrow();
            let found = config.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok()?;
            Some(config[found].1.clone())
        })
    }

    pub fn keys() -> Vec<String> {
        CONFIG.with(|config| config.borrow().iter().map(|(k, _)| k.clone()).collect())
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    pub fn get(key: &str) -> Option<String> {
        crate::testing::with_context(|ctx| ctx.config.get(key).cloned())
    }

    pub fn keys() -> Vec<String> {
        crate::testing::with_context(|ctx| ctx.config.keys().cloned().collect())
    }
}
