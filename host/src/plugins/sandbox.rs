//! The per-call sandbox: the store data a plugin instance sees. WASI (made on a plugin's
//! first WASI call, so a plugin that imports none pays nothing for it) with no preopened
//! directories, no environment, no arguments, no network and no inherited stdio; stdout and
//! stderr captured into a capped buffer; memory growth checked against the limit; and both
//! contracts' `host` interfaces (0.2.0: clock, randomness, trap message; 0.1.0: logging and
//! read-only `plugin_config`).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{v0_1, v0_2};
use super::{LogLevel, LogLine, PluginConfig};

/// Bytes of a trap message kept per call.
const TRAP_MESSAGE_BYTES: usize = 4 << 10;

/// Store data for one plugin call.
pub struct PluginState {
    /// When the call's deadline passes; WASI timers are clamped to it.
    pub deadline: std::time::Instant,
    /// The plugin asked to wait past its deadline: the call timed out, whatever it returns.
    pub overslept: bool,
    wasi: Option<Box<Wasi>>,
    table: ResourceTable,
    pub limiter: MemoryLimiter,
    config: PluginConfig,
    pub logs: LogBuffer,
    trap_message: Vec<u8>,
}

/// WASI for one call, and the plugin's captured stdout and stderr.
struct Wasi {
    ctx: WasiCtx,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
}

impl Wasi {
    fn new(log_bytes: usize) -> Wasi {
        let stdout = CapturedOutput::new(log_bytes);
        let stderr = CapturedOutput::new(log_bytes);
        // The builder's defaults are the sandbox: no args, env, preopens, sockets or name
        // lookup; stdin is empty.
        let ctx = WasiCtxBuilder::new().stdout(stdout.clone()).stderr(stderr.clone()).build();
        Wasi { ctx, stdout, stderr }
    }
}

impl PluginState {
    pub fn new(config: PluginConfig, memory_bytes: usize, log_bytes: usize, deadline: std::time::Instant) -> Self {
        PluginState {
            deadline,
            overslept: false,
            wasi: None,
            table: ResourceTable::new(),
            limiter: MemoryLimiter { cap: memory_bytes, hit: false, total: 0 },
            config,
            logs: LogBuffer::new(log_bytes),
            trap_message: Vec::new(),
        }
    }

    /// Keeps the lines a 0.2.0 plugin returned with its result.
    pub fn returned_logs(&mut self, lines: Vec<v0_2::LogLine>) {
        for line in lines {
            self.logs.push(line.level.into(), line.message);
        }
    }

    /// Nanoseconds until the call's deadline (0 once it has passed).
    fn nanos_left(&self) -> u64 {
        self.deadline.saturating_duration_since(std::time::Instant::now()).as_nanos() as u64
    }

    /// The log lines of the call: `host.log` lines, then stdout, then stderr.
    pub fn take_logs(&mut self) -> Vec<LogLine> {
        let Some(wasi) = &self.wasi else { return self.logs.finish() };
        for (output, level) in [(&wasi.stdout, LogLevel::Stdout), (&wasi.stderr, LogLevel::Stderr)] {
            let (bytes, dropped) = output.take();
            for line in String::from_utf8_lossy(&bytes).lines() {
                self.logs.push(level, line.to_string());
            }
            if dropped > 0 {
                self.logs.dropped += dropped;
            }
        }
        self.logs.finish()
    }

    /// What the plugin said before trapping: its trap message (0.2.0), else a Rust panic's
    /// location and message on stderr (`panicked at src/lib.rs:7:9: boom`), else the last
    /// line there.
    pub fn last_words(&self) -> Option<String> {
        if !self.trap_message.is_empty() {
            return Some(String::from_utf8_lossy(&self.trap_message).split_whitespace().collect::<Vec<_>>().join(" "));
        }
        // A 0.1.0 plugin without WASI reported its panic through `host.log`.
        let logged = self.logs.lines.iter().rev().find(|line| line.message.starts_with("panicked at "));
        if let Some(line) = logged {
            return Some(line.message.split_whitespace().collect::<Vec<_>>().join(" "));
        }
        let bytes = self.wasi.as_ref()?.stderr.buffer.lock().ok()?.bytes.clone();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("note: ")).collect();
        match lines.iter().rposition(|l| l.contains(" panicked at ")) {
            Some(start) => {
                let at = lines[start].split_once(" panicked at ").map_or(lines[start], |(_, at)| at);
                Some(format!("panicked at {} {}", at, lines[start + 1..].join(" ")).trim().to_string())
            }
            None => lines.last().map(|l| l.to_string()),
        }
    }
}

/// Sleeping blocks the calling thread inside WASI's `poll`, where epoch interruption cannot
/// reach. Every timer a plugin sets is clamped to what is left of its deadline, so a sleep
/// ends at the deadline, and a call that asked to wait past it is a timeout.
pub fn clamp_timers_to_deadline(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::clocks::WasiClocksView;
    use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::Host;
    linker.allow_shadowing(true);
    let mut clock = linker.instance("wasi:clocks/monotonic-clock@0.2.12")?;
    clock.func_wrap("subscribe-duration", |mut store: StoreContextMut<'_, PluginState>, (nanos,): (u64,)| {
        let state = store.data_mut();
        let left = state.nanos_left();
        state.overslept |= nanos > left;
        Ok((state.clocks().subscribe_duration(nanos.min(left))?,))
    })?;
    clock.func_wrap("subscribe-instant", |mut store: StoreContextMut<'_, PluginState>, (when,): (u64,)| {
        let state = store.data_mut();
        let latest = state.clocks().now()?.saturating_add(state.nanos_left());
        state.overslept |= when > latest;
        Ok((state.clocks().subscribe_instant(when.min(latest))?,))
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let log_bytes = self.logs.cap;
        let wasi = self.wasi.get_or_insert_with(|| Box::new(Wasi::new(log_bytes)));
        WasiCtxView { ctx: &mut wasi.ctx, table: &mut self.table }
    }
}

impl v0_2::hookwasm::plugin::types::Host for PluginState {}

impl v0_2::hookwasm::plugin::host::Host for PluginState {
    fn now_ms(&mut self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }

    fn random_u64(&mut self) -> u64 {
        rand::random()
    }

    fn trap_message(&mut self, bytes: u64, len: u8) {
        let len = usize::from(len.min(8)).min(TRAP_MESSAGE_BYTES.saturating_sub(self.trap_message.len()));
        self.trap_message.extend_from_slice(&bytes.to_le_bytes()[..len]);
    }
}

impl v0_1::hookwasm::plugin::types::Host for PluginState {}

impl v0_1::hookwasm::plugin::host::Host for PluginState {
    fn log(&mut self, level: v0_1::Level, message: String) {
        self.logs.push(level.into(), message);
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }

    fn config_keys(&mut self) -> Vec<String> {
        self.config.keys().cloned().collect()
    }
}

/// Refuses growth that would take the instance's linear memory, across its memories, past the
/// cap, and remembers that it did, so the resulting trap (a Rust guest aborts when allocation
/// fails) is reported as a memory-limit error.
pub struct MemoryLimiter {
    cap: usize,
    pub hit: bool,
    pub total: usize,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.total - current.min(self.total) + desired;
        if total > self.cap {
            self.hit = true;
            return Ok(false);
        }
        self.total = total;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 16)
    }
}

/// Log lines of one call, capped in bytes; what does not fit is counted, not kept.
pub struct LogBuffer {
    lines: Vec<LogLine>,
    bytes: usize,
    cap: usize,
    dropped: usize,
}

impl LogBuffer {
    fn new(cap: usize) -> Self {
        LogBuffer { lines: Vec::new(), bytes: 0, cap, dropped: 0 }
    }

    fn push(&mut self, level: LogLevel, message: String) {
        if self.bytes + message.len() > self.cap {
            self.dropped += message.len();
            return;
        }
        self.bytes += message.len();
        self.lines.push(LogLine { level, message });
    }

    fn finish(&mut self) -> Vec<LogLine> {
        let mut lines = std::mem::take(&mut self.lines);
        if self.dropped > 0 {
            lines.push(LogLine {
                level: LogLevel::Warn,
                message: format!(
                    "hookwasm: {} bytes of plugin output dropped (log limit {} bytes)",
                    self.dropped, self.cap
                ),
            });
        }
        lines
    }
}

/// A plugin's stdout or stderr: kept up to a cap, the rest silently counted and dropped so a
/// chatty plugin neither fails nor fills the host's memory.
#[derive(Clone)]
pub struct CapturedOutput {
    buffer: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    cap: usize,
    dropped: usize,
}

impl CapturedOutput {
    fn new(cap: usize) -> Self {
        CapturedOutput { buffer: Arc::new(Mutex::new(Captured { cap, ..Captured::default() })) }
    }

    fn write(&self, bytes: &[u8]) {
        let Ok(mut captured) = self.buffer.lock() else { return };
        let room = captured.cap.saturating_sub(captured.bytes.len());
        let kept = bytes.len().min(room);
        captured.bytes.extend_from_slice(&bytes[..kept]);
        captured.dropped += bytes.len() - kept;
    }

    fn take(&self) -> (Vec<u8>, usize) {
        match self.buffer.lock() {
            Ok(mut captured) => (std::mem::take(&mut captured.bytes), std::mem::take(&mut captured.dropped)),
            Err(_) => (Vec::new(), 0),
        }
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        CapturedOutput::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        CapturedOutput::write(&self, buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
