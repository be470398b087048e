//! Logging to the host: lines go back with the call's result and appear in the host's log
//! tagged with the plugin and event, and in `hookwasm plugin test` output. A call that traps
//! loses its lines (its panic message still reaches the host). Natively they are captured by
//! [`crate::testing`].

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// Logs `message` at `level`.
pub fn log(level: Level, message: impl AsRef<str>) {
    imp::log(level, message.as_ref());
}

/// Logs at debug level.
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message);
}

/// Logs at info level.
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message);
}

/// Logs at warn level.
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message);
}

/// Logs at error level.
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message);
}

/// The lines logged so far in this call, which go back to the host with its result.
#[cfg(target_arch = "wasm32")]
pub(crate) fn take() -> Vec<crate::__private::bindings::hookwasm::plugin::types::LogLine> {
    imp::LINES.with(|lines| std::mem::take(&mut *lines.borrow_mut()))
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use std::cell::RefCell;

    use super::Level;
    use crate::__private::bindings::hookwasm::plugin::types as wit;

    thread_local! {
        pub static LINES: RefCell<Vec<wit::LogLine>> = const { RefCell::new(Vec::new()) };
    }

    pub fn log(level: Level, message: &str) {
        let level = match level {
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        LINES.with(|lines| lines.borrow_mut().push(wit::LogLine { level, message: message.to_string() }));
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::Level;

    pub fn log(level: Level, message: &str) {
        crate::testing::with_context(|ctx| ctx.logs.push((level, message.to_string())));
    }
}
