//! The engine, loading (validation + precompiled cache) and per-event execution.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

use super::bindings::{v0_1, v0_2};
use super::sandbox::PluginState;
use super::{Action, Execution, Limits, LoadError, PluginConfig, PluginError, PluginErrorKind, PluginEvent};

/// How often the epoch advances; deadlines are measured in these ticks. The ticker thread
/// wakes every tick, busy or idle: at 1 ms it alone kept an idle host at 2.7% of a core. A
/// call is stopped after its deadline and at most one tick later.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The nice value of the compile threads. A hot reload compiles while events flow; at this
/// priority the compile takes the CPU delivery leaves idle and yields most of it when the
/// host is saturated, so deploying a plugin barely dents throughput (BENCHMARKS.md).
const COMPILE_NICE: i32 = 10;

/// Core instances one plugin may create.
const MAX_CORE_INSTANCES: u32 = 32;

const MAX_HEADERS: usize = 32;
const MAX_HEADER_BYTES: usize = 8 << 10;

/// Import namespaces a plugin may use. Rust's `wasm32-wasip2` std imports the WASI CLI world
/// even when unused, as do the JavaScript and Python runtimes; every capability in it is
/// denied by the sandbox's `WasiCtx`.
const ALLOWED_IMPORTS: &[&str] = &[
    "hookwasm:plugin/host@0.2.",
    "hookwasm:plugin/types@0.2.",
    "hookwasm:plugin/host@0.1.",
    "hookwasm:plugin/types@0.1.",
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:io/",
    "wasi:random/",
    "wasi:sockets/",
];

/// Owns the wasmtime engine and linker; loads plugins. Cheap to share behind an `Arc`.
pub struct Runtime {
    engine: Engine,
    linker: Linker<PluginState>,
    limits: Limits,
    cache_dir: Option<PathBuf>,
    engine_tag: String,
    checks: Arc<CheckSlots>,
}

/// Instance slots reserved for `check-config` calls (hot reload, webhook create).
const CHECK_SLOTS: usize = 2;

/// Idle pool slots that keep their memory warm for the plugin that last used them.
const UNUSED_WARM_SLOTS: u32 = 16;

/// A blocking counting semaphore over the instance slots reserved for config checks.
struct CheckSlots {
    free: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

impl CheckSlots {
    fn new(slots: usize) -> CheckSlots {
        CheckSlots { free: std::sync::Mutex::new(slots), freed: std::sync::Condvar::new() }
    }

    /// Waits for a free slot; it is given back when the guard drops.
    fn acquire(&self) -> CheckSlot<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        CheckSlot(self)
    }
}

struct CheckSlot<'a>(&'a CheckSlots);

impl Drop for CheckSlot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// Where a loaded plugin's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadSource {
    /// Compiled now with Cranelift.
    Compiled,
    /// Read from the precompiled-code cache.
    Cache,
}

/// One loaded plugin version, ready to run. Clones share the compiled code.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    name: String,
    sha256: String,
    contract: Contract,
    limits: Limits,
    engine: Engine,
    checks: Arc<CheckSlots>,
    loaded_at: SystemTime,
    load_source: LoadSource,
    load_time: Duration,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("name", &self.inner.name).field("sha256", &self.inner.sha256).finish()
    }
}

impl Runtime {
    /// An engine with the pooling allocator sized for `limits`, epoch interruption, and (if
    /// `cache_dir` is set) a precompiled-code cache there.
    pub fn new(limits: Limits, cache_dir: Option<PathBuf>) -> anyhow::Result<Runtime> {
        let mut pool = PoolingAllocationConfig::default();
        // Deliveries take at most `max_concurrent` instances (the call threads bound them);
        // config checks have slots of their own, so a pool full of slow deliveries cannot
        // make a good plugin or webhook fail its check.
        let slots = limits.max_concurrent.max(1) + CHECK_SLOTS as u32;
        // Sized so that every slot can hold the largest plugins: a Python component
        // (componentize-py) is 14 core instances, a JavaScript one 4, a Rust one 1-3.
        pool.total_component_instances(slots)
            .total_core_instances(slots * MAX_CORE_INSTANCES)
            .total_memories(slots * 2)
            .total_tables(slots * 8)
            .max_memories_per_component(2)
            .max_tables_per_component(8)
            .max_core_instances_per_component(MAX_CORE_INSTANCES)
            .max_memory_size(limits.largest_memory_bytes().next_multiple_of(64 << 10))
            // Resetting the first MiB of a slot with memset instead of madvise avoids a page
            // fault per page the next instance touches: measured best of 0, 256 KiB, 1 MiB
            // and 4 MiB (BENCHMARKS.md).
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10)
            // A slot keeps that much resident once used. Wasmtime's default prefers a never
            // used slot over another plugin's idle one until 100 are idle, so each redeploy
            // (a new module, with no slots of its own) warmed more slots: RSS crept up by a
            // slot at a time, towards 100 MiB (the soak in BENCHMARKS.md). This bounds the
            // slots ever used to the most instances at once plus these.
            .max_unused_warm_slots(UNUSED_WARM_SLOTS);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .memory_init_cow(true)
            .cranelift_opt_level(wasmtime::OptLevel::Speed)
            .enable_incremental_compilation(Arc::new(FunctionCache::default()))?;
        let engine = Engine::new(&config)?;
        start_epoch_ticker(&engine);

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        super::sandbox::clamp_timers_to_deadline(&mut linker)?;
        v0_2::Transformer::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        v0_1::Transformer::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_tag = format!("{:016x}", hasher.finish());
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir)?;
        }
        let checks = Arc::new(CheckSlots::new(CHECK_SLOTS));
        Ok(Runtime { engine, linker, limits, cache_dir, engine_tag, checks })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Reads and loads a plugin file.
    pub fn load_file(&self, name: &str, path: &Path) -> Result<Plugin, LoadError> {
        self.load(name, &self.read_file(name, path)?)
    }

    /// Reads a plugin file, refusing one over the size limit before reading it.
    pub fn read_file(&self, name: &str, path: &Path) -> Result<Vec<u8>, LoadError> {
        let read_error = |source| LoadError::Read { plugin: name.into(), path: path.display().to_string(), source };
        let size = std::fs::metadata(path).map_err(read_error)?.len() as usize;
        if size > self.limits.plugin_file_bytes {
            return Err(LoadError::TooLarge { plugin: name.into(), size, limit: self.limits.plugin_file_bytes });
        }
        std::fs::read(path).map_err(read_error)
    }

    /// Validates and compiles (or fetches from the cache) a plugin component. Blocking and
    /// CPU-heavy on a cache miss: call it off the async runtime.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<Plugin, LoadError> {
        let started = Instant::now();
        let plugin = || name.to_string();
        if bytes.len() > self.limits.plugin_file_bytes {
            return Err(LoadError::TooLarge {
                plugin: plugin(),
                size: bytes.len(),
                limit: self.limits.plugin_file_bytes,
            });
        }
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(LoadError::NotWasm { plugin: plugin() });
        }
        // The version is named by the bytes as deployed, whatever they are made into.
        let sha256 = hex::encode(Sha256::digest(bytes));
        // Bytes 6..8 are the layer: 0 for a core module, 1 for a component. A core module
        // built for `wasm32-unknown-unknown` carries its contract in a `component-type`
        // section and becomes a component here (what `hookwasm plugin build` does ahead).
        let encoded;
        let bytes = if bytes[6..8] == [0, 0] {
            encoded = encode_component(bytes).map_err(|reason| LoadError::CoreModule { plugin: plugin(), reason })?;
            &encoded[..]
        } else {
            bytes
        };
        let (component, load_source) = self
            .compile_cached(&sha256, bytes)
            .map_err(|e| LoadError::Invalid { plugin: plugin(), reason: format!("{e:#}") })?;

        let ty = component.component_type();
        for (import, _) in ty.imports(&self.engine) {
            if !ALLOWED_IMPORTS.iter().any(|allowed| import.starts_with(allowed)) {
                return Err(LoadError::ForbiddenImport { plugin: plugin(), import: import.to_string() });
            }
        }
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongInterface { plugin: plugin(), reason: format!("{e:#}") })?;
        let contract =
            Contract::new(instance_pre).map_err(|reason| LoadError::WrongInterface { plugin: plugin(), reason })?;
        Ok(Plugin {
            inner: Arc::new(PluginInner {
                name: name.to_string(),
                sha256,
                contract,
                limits: self.limits.for_plugin(name),
                engine: self.engine.clone(),
                checks: self.checks.clone(),
                loaded_at: SystemTime::now(),
                load_source,
                load_time: started.elapsed(),
            }),
        })
    }

    fn compile_cached(&self, sha256: &str, bytes: &[u8]) -> anyhow::Result<(Component, LoadSource)> {
        let Some(dir) = &self.cache_dir else {
            return Ok((self.compile(bytes)?, LoadSource::Compiled));
        };
        let path = dir.join(format!("{sha256}-{}.cwasm", self.engine_tag));
        if path.exists() {
            // SAFETY: the cache directory is hookwasm's own; files are written whole (rename)
            // by `Component::serialize` of this engine configuration, named by its hash.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(component) => return Ok((component, LoadSource::Cache)),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "discarding unreadable precompiled plugin")
                }
            }
        }
        let component = self.compile(bytes)?;
        // Unique per write: two loads of the same version may compile at once.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".{sha256}-{}-{write}.tmp", std::process::id()));
        let written = component
            .serialize()
            .and_then(|code| Ok(std::fs::write(&tmp, code)?))
            .and_then(|()| Ok(std::fs::rename(&tmp, &path)?));
        if let Err(error) = written {
            tracing::warn!(path = %path.display(), %error, "could not write precompiled plugin cache");
            let _ = std::fs::remove_file(&tmp);
        }
        Ok((component, LoadSource::Compiled))
    }

    /// Compiles a component on threads of its own at [`COMPILE_NICE`]. Cranelift compiles a
    /// component's functions in parallel; on a pool shared by all loads, a small plugin's
    /// compile would queue behind every function of a large one compiling at the time.
    fn compile(&self, bytes: &[u8]) -> anyhow::Result<Component> {
        let pool = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("hookwasm-compile-{i}"))
            .start_handler(|_| lower_thread_priority(COMPILE_NICE))
            .build()?;
        Ok(pool.install(|| Component::new(&self.engine, bytes))?)
    }
}

/// A loaded component, pre-instantiated against the contract version it was built for.
enum Contract {
    V0_2(v0_2::TransformerPre<PluginState>),
    V0_1(v0_1::TransformerPre<PluginState>),
}

impl Contract {
    /// Matches the component's exports against the current contract, then the previous one.
    fn new(pre: wasmtime::component::InstancePre<PluginState>) -> Result<Contract, String> {
        let current = match v0_2::TransformerPre::new(pre.clone()) {
            Ok(pre) => return Ok(Contract::V0_2(pre)),
            Err(error) => error,
        };
        v0_1::TransformerPre::new(pre).map(Contract::V0_1).map_err(|previous| {
            format!("not a hookwasm:plugin@0.2.0 plugin ({current:#}), nor a 0.1.0 one ({previous:#})")
        })
    }
}

/// A component made of a core module that carries its WIT world in a `component-type`
/// section (as `wit-bindgen` embeds it). No WASI adapter is added: a module that imports WASI
/// preview 1 is refused.
pub fn encode_component(module: &[u8]) -> Result<Vec<u8>, String> {
    let carries_contract = wasmparser::Parser::new(0).parse_all(module).any(|payload| {
        matches!(payload, Ok(wasmparser::Payload::CustomSection(section)) if section.name().starts_with("component-type"))
    });
    if !carries_contract {
        return Err("no component-type section".into());
    }
    wit_component::ComponentEncoder::default()
        .module(module)
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(|error| format!("{error:#}"))
}

/// Cranelift's incremental compilation cache: compiled machine code per function, keyed by
/// the function's IR. A new version of a plugin usually changes a few functions of its own
/// and none of the standard library, serde_json or the SDK linked into it, so a hot reload
/// recompiles only what changed. Bounded: emptied when it would exceed its budget.
#[derive(Debug, Default)]
struct FunctionCache {
    entries: std::sync::Mutex<CachedFunctions>,
}

#[derive(Debug, Default)]
struct CachedFunctions {
    code: std::collections::HashMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
}

impl FunctionCache {
    const BUDGET_BYTES: usize = 64 << 20;
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.code.get(key).map(|code| std::borrow::Cow::Owned(code.clone()))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let size = key.len() + value.len();
        if entries.bytes + size > Self::BUDGET_BYTES {
            entries.code.clear();
            entries.bytes = 0;
        }
        entries.bytes += size;
        if let Some(old) = entries.code.insert(key.to_vec(), value) {
            entries.bytes -= key.len() + old.len();
        }
        true
    }
}

/// Lowers the calling thread's scheduling priority to `nice` (Linux: per thread).
fn lower_thread_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority has no memory-safety preconditions; `0` means the calling thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower the compile thread's priority");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// Advances the engine's epoch every tick until the engine is dropped.
fn start_epoch_ticker(engine: &Engine) {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("hookwasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Hex sha256 of the plugin file: the version identity recorded on deliveries.
    pub fn sha256(&self) -> &str {
        &self.inner.sha256
    }

    pub fn loaded_at(&self) -> SystemTime {
        self.inner.loaded_at
    }

    pub fn load_source(&self) -> LoadSource {
        self.inner.load_source
    }

    /// How long validation plus compilation (or cache load) took.
    pub fn load_time(&self) -> Duration {
        self.inner.load_time
    }

    /// The contract version the plugin was built against (`0.2.0` or `0.1.0`).
    pub fn contract(&self) -> &'static str {
        match self.inner.contract {
            Contract::V0_2(_) => "0.2.0",
            Contract::V0_1(_) => "0.1.0",
        }
    }

    /// Runs `transform` on a fresh instance. Blocking (up to the deadline): call it from a
    /// blocking thread, not an async task.
    pub fn transform(&self, event: &PluginEvent, config: &PluginConfig) -> Execution {
        let execution = match &self.inner.contract {
            Contract::V0_2(pre) => self.call(
                config,
                |store| pre.instantiate(store),
                |bindings, store| {
                    let event = v0_2::Event::from(event);
                    let transformed = bindings.call_transform(&mut *store, &event, &config_pairs(config))?;
                    store.data_mut().returned_logs(transformed.logs);
                    Ok(transformed.action.map(Action::from))
                },
            ),
            Contract::V0_1(pre) => self.call(
                config,
                |store| pre.instantiate(store),
                |bindings, store| {
                    let event = v0_1::Event::from(event);
                    Ok(bindings.call_transform(store, &event)?.map(Action::from))
                },
            ),
        };
        execution.and_then_result(|action| self.validate(action))
    }

    /// Runs `check-config` with `config` on a fresh instance, once one of the instance
    /// slots reserved for checks is free. Blocking.
    pub fn check_config(&self, config: &PluginConfig) -> Execution<()> {
        let _slot = self.inner.checks.acquire();
        match &self.inner.contract {
            Contract::V0_2(pre) => self.call(
                config,
                |store| pre.instantiate(store),
                |bindings, store| {
                    let checked = bindings.call_check_config(&mut *store, &config_pairs(config))?;
                    store.data_mut().returned_logs(checked.logs);
                    Ok(checked.outcome)
                },
            ),
            Contract::V0_1(pre) => {
                self.call(config, |store| pre.instantiate(store), |bindings, store| bindings.call_check_config(store))
            }
        }
    }

    fn call<B, T>(
        &self,
        config: &PluginConfig,
        instantiate: impl FnOnce(&mut Store<PluginState>) -> wasmtime::Result<B>,
        run: impl FnOnce(&B, &mut Store<PluginState>) -> wasmtime::Result<Result<T, String>>,
    ) -> Execution<T> {
        let started = Instant::now();
        let limits = &self.inner.limits;
        let state = PluginState::new(config.clone(), limits.memory_bytes, limits.log_bytes, started + limits.deadline);
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|state| &mut state.limiter);
        // One tick more than the deadline holds: the first tick may come at once.
        let ticks = limits.deadline.as_micros().div_ceil(EPOCH_TICK.as_micros()) as u64 + 1;
        store.set_epoch_deadline(ticks);

        let outcome = match instantiate(&mut store) {
            Err(error) => Err(self.classify(error, &store, true)),
            Ok(bindings) => match run(&bindings, &mut store) {
                Ok(Ok(value)) => Ok(value),
                // A runtime that catches its own out-of-memory (SpiderMonkey, CPython) returns
                // an error where a Rust plugin traps: the limiter knows which it was.
                Ok(Err(_)) if store.data().limiter.hit => {
                    Err(self.error(PluginErrorKind::MemoryLimit(limits.memory_bytes)))
                }
                Ok(Err(message)) => Err(self.error(PluginErrorKind::Returned(message))),
                Err(error) => Err(self.classify(error, &store, false)),
            },
        };
        let outcome = match outcome {
            Ok(_) if store.data().overslept => Err(self.error(PluginErrorKind::Timeout(limits.deadline))),
            outcome => outcome,
        };
        let logs = store.data_mut().take_logs();
        Execution { result: outcome, logs, duration: started.elapsed(), memory_bytes: store.data().limiter.total }
    }

    pub(super) fn error(&self, kind: PluginErrorKind) -> PluginError {
        PluginError { plugin: self.inner.name.clone(), short_sha: self.inner.sha256[..12].to_string(), kind }
    }

    fn classify(&self, error: wasmtime::Error, store: &Store<PluginState>, instantiating: bool) -> PluginError {
        let limits = &self.inner.limits;
        let kind = match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PluginErrorKind::Timeout(limits.deadline),
            _ if store.data().limiter.hit => PluginErrorKind::MemoryLimit(limits.memory_bytes),
            Some(trap) => {
                let mut message = trap.to_string();
                if let Some(words) = store.data().last_words() {
                    message = format!("{message}; {words}");
                }
                PluginErrorKind::Trap(message)
            }
            None if instantiating => PluginErrorKind::Instantiate(format!("{error:#}")),
            None => PluginErrorKind::Trap(format!("{error:#}")),
        };
        self.error(kind)
    }

    /// Checks what the plugin returned against the limits and the header rules.
    fn validate(&self, action: Action) -> Result<Action, PluginError> {
        checked_output(action, self.inner.limits.output_bytes).map_err(|kind| self.error(kind))
    }
}

/// A plugin's action checked: a body within `output_bytes`, at most [`MAX_HEADERS`] headers
/// of [`MAX_HEADER_BYTES`] in all, each valid in HTTP and not reserved (names lower-cased), and
/// a JSON body unless a `content-type` is given.
fn checked_output(action: Action, output_bytes: usize) -> Result<Action, PluginErrorKind> {
    let invalid = PluginErrorKind::InvalidOutput;
    let (returned_headers, body) = match action {
        Action::Deliver { headers, body } => (headers, body),
        decided => return Ok(decided),
    };
    if body.len() > output_bytes {
        return Err(PluginErrorKind::OutputTooLarge { size: body.len(), limit: output_bytes });
    }
    if returned_headers.len() > MAX_HEADERS {
        return Err(invalid(format!("{} headers, at most {MAX_HEADERS} allowed", returned_headers.len())));
    }
    let header_bytes: usize = returned_headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(invalid(format!("{header_bytes} bytes of headers, at most {MAX_HEADER_BYTES} allowed")));
    }
    let mut headers = Vec::with_capacity(returned_headers.len());
    let mut content_type = false;
    for (name, value) in returned_headers {
        let name = name.to_ascii_lowercase();
        if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(invalid(format!("header name {name:?} is not a valid HTTP header name")));
        }
        if axum::http::HeaderValue::from_str(&value).is_err() {
            return Err(invalid(format!("header {name} has a value that is not valid in HTTP")));
        }
        if crate::model::is_reserved_header(&name) {
            return Err(invalid(format!("header {name} is reserved by hookwasm")));
        }
        content_type |= name == "content-type";
        headers.push((name, value));
    }
    if !content_type && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
        return Err(invalid("body is not JSON; set a content-type header to send anything else".to_string()));
    }
    Ok(Action::Deliver { headers, body })
}

/// The webhook's `plugin_config` as a 0.2.0 plugin receives it: pairs sorted by key.
fn config_pairs(config: &PluginConfig) -> Vec<(String, String)> {
    config.iter().map(|(key, value)| (key.clone(), value.clone())).collect()
}

impl<T> Execution<T> {
    fn and_then_result<U>(self, f: impl FnOnce(T) -> Result<U, PluginError>) -> Execution<U> {
        Execution {
            result: self.result.and_then(f),
            logs: self.logs,
            duration: self.duration,
            memory_bytes: self.memory_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn deliver(headers: Vec<(String, String)>, body: Vec<u8>) -> Action {
        Action::Deliver { headers, body }
    }

    proptest! {
        /// Whatever a plugin returns, the check answers (never panics); what it lets through
        /// can be sent: every header valid and unreserved, the body JSON or typed, within limits.
        #[test]
        fn any_output_is_checked_and_what_passes_can_be_sent(
            headers in proptest::collection::vec(("[ -~]{0,12}", "[ -~\\t]{0,20}"), 0..40),
            body in proptest::collection::vec(any::<u8>(), 0..64),
            limit in 0usize..128,
        ) {
            if let Ok(Action::Deliver { headers, body }) = checked_output(deliver(headers, body), limit) {
                prop_assert!(body.len() <= limit && headers.len() <= MAX_HEADERS);
                let mut typed = false;
                for (name, value) in &headers {
                    prop_assert!(axum::http::HeaderName::from_bytes(name.as_bytes()).is_ok());
                    prop_assert!(axum::http::HeaderValue::from_str(value).is_ok());
                    prop_assert!(!crate::model::is_reserved_header(name), "{}", name);
                    prop_assert_eq!(name.to_ascii_lowercase(), name.clone());
                    typed |= name == "content-type";
                }
                prop_assert!(typed || serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok());
            }
        }

        /// A reserved header is refused in any letter case, whatever comes with it.
        #[test]
        fn reserved_headers_are_refused_in_any_case(
            name in prop_oneof![
                Just("webhook-id"), Just("Webhook-Signature"), Just("WEBHOOK-TIMESTAMP"), Just("webhook-x"),
                Just("Content-Length"), Just("host"), Just("User-Agent"), Just("transfer-encoding"), Just("Connection"),
            ],
            value in "[a-z0-9]{0,10}",
        ) {
            let result = checked_output(deliver(vec![(name.to_string(), value)], b"{}".to_vec()), 1024);
            prop_assert!(matches!(result, Err(PluginErrorKind::InvalidOutput(m)) if m.contains("reserved")));
        }
    }
}
