//! The time and randomness a plugin may use. Without WASI (`hookwasm plugin build`), std's
//! `SystemTime::now()` panics and there is no source of random numbers, so these ask the host;
//! natively (tests) they use std.

use std::time::{Duration, SystemTime};

/// The current wall-clock time.
pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(imp::now_ms())
}

/// 64 random bits: from the host's cryptographically secure generator in a plugin; natively
/// (tests), from std's randomly keyed hasher.
pub fn random_u64() -> u64 {
    imp::random_u64()
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use crate::__private::bindings::hookwasm::plugin::host;

    pub fn now_ms() -> u64 {
        host::now_ms()
    }

    pub fn random_u64() -> u64 {
        host::random_u64()
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::hash::{BuildHasher, Hasher};

    pub fn now_ms() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }

    pub fn random_u64() -> u64 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(now_ms());
        hasher.finish()
    }
}
