//! Shared test support: building the real plugins to Wasm, sample events, and the runtime.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hookwasm::model::Event;
use hookwasm::plugins::{Limits, Plugin, PluginConfig, Runtime};

pub const PLUGINS: &[&str] = &["event-filter", "slack-notify", "redact-pii", "field-map", "hostile", "pass-through"];

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Builds every plugin for `wasm32-wasip2` once per test binary (a no-op when up to date)
/// and returns the directory holding the `.wasm` files.
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace_root();
        // A separate target dir: the outer `cargo test` may still hold the main one's lock.
        let target = root.join("target/plugins");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        command.current_dir(&root).args(["build", "--quiet", "--target", "wasm32-wasip2", "--profile", "plugin"]);
        for plugin in PLUGINS {
            command.args(["-p", plugin]);
        }
        let status = command.arg("--target-dir").arg(&target).status().expect("running cargo to build the plugins");
        assert!(
            status.success(),
            "building the plugins for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)"
        );
        target.join("wasm32-wasip2/plugin")
    })
}

/// A plugin crate built without WASI by `hookwasm plugin build` (once per test binary and
/// crate), as a component file.
pub fn no_wasi_plugin_path(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = built.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let root = workspace_root();
    let crate_dir = [root.join("plugins").join(name), root.join("tests/plugins").join(name)]
        .into_iter()
        .find(|dir| dir.join("Cargo.toml").is_file())
        .unwrap_or_else(|| panic!("no plugin crate {name}"));
    let output = Command::new(env!("CARGO_BIN_EXE_hookwasm"))
        .args(["plugin", "build", "--profile", "plugin"])
        .arg(&crate_dir)
        .env("CARGO_TARGET_DIR", root.join("target/plugins"))
        .output()
        .expect("running hookwasm plugin build");
    assert!(output.status.success(), "hookwasm plugin build {name}: {}", String::from_utf8_lossy(&output.stderr));
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    built.push((name.to_string(), path.clone()));
    path
}

/// The built `.wasm` file of a plugin crate.
pub fn plugin_path(name: &str) -> PathBuf {
    plugin_dir().join(format!("{}.wasm", name.replace('-', "_")))
}

/// The sha256 of a built plugin crate's `.wasm`: the version hookwasm names it by.
pub fn plugin_sha(name: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(plugin_path(name)).unwrap()))
}

/// The plugin's bytes with a custom section appended: the same code under a new sha256, a
/// new version to the host (not in its precompiled-code cache).
pub fn variant(bytes: &[u8], n: u64) -> Vec<u8> {
    let name = b"hookwasm-bench";
    let payload = n.to_le_bytes();
    let mut out = bytes.to_vec();
    out.push(0); // custom section
    out.push((1 + name.len() + payload.len()) as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&payload);
    out
}

/// The names of every sample event in `examples/events/`.
pub fn sample_names() -> Vec<String> {
    let samples = std::fs::read_dir(workspace_root().join("examples/events")).unwrap();
    samples.filter_map(|e| e.ok()?.path().file_stem().map(|s| s.to_string_lossy().into_owned())).collect()
}

pub fn sample_path(name: &str) -> PathBuf {
    workspace_root().join(format!("examples/events/{name}.json"))
}

pub fn sample(name: &str) -> Event {
    Event::parse_envelope(&std::fs::read(sample_path(name)).unwrap()).unwrap()
}

pub fn config(pairs: &[(&str, &str)]) -> PluginConfig {
    Arc::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// A runtime with default limits but a generous deadline, shared by the tests of one
/// binary: tests run in parallel on two cores, and only the deadline tests should depend on
/// how busy the machine is.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| Runtime::new(Limits { deadline: Duration::from_secs(10), ..Limits::default() }, None).unwrap())
}

/// A runtime with exactly the default limits (the 50 ms deadline).
pub fn default_runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(Limits::default(), None).unwrap())
}

/// Loads a built plugin into the shared runtime, once.
pub fn plugin(name: &str) -> Plugin {
    plugin_in(runtime(), name)
}

/// Loads a built plugin into `runtime`, once per runtime.
pub fn plugin_in(runtime: &'static Runtime, name: &str) -> Plugin {
    type Loaded = std::sync::Mutex<std::collections::HashMap<(usize, String), Plugin>>;
    static LOADED: OnceLock<Loaded> = OnceLock::new();
    let key = (runtime as *const Runtime as usize, name.to_string());
    let mut loaded = LOADED.get_or_init(Default::default).lock().unwrap();
    loaded.entry(key).or_insert_with(|| runtime.load_file(name, &plugin_path(name)).unwrap()).clone()
}

/// Runs a setup step, installing `packages` from Debian first if `probe` fails (the README's
/// test command works on a fresh machine). Panics with the output if the step fails.
fn setup_step(probe: &[&str], packages: &[&str]) {
    let works = |args: &[&str]| Command::new(args[0]).args(&args[1..]).output().is_ok_and(|out| out.status.success());
    if !works(probe) {
        let installed = Command::new("apt-get").args(["install", "-y", "-q"]).args(packages).status();
        assert!(installed.is_ok_and(|s| s.success()), "{probe:?} fails and apt-get install {packages:?} failed");
        assert!(works(probe), "{probe:?} still fails after installing {packages:?}");
    }
}

fn run_ok(command: &mut Command, what: &str) -> String {
    let output = command.output().unwrap_or_else(|error| panic!("{what}: {error}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The repository's npm workspace (the JavaScript SDK and example plugins) installed from its
/// lockfile, once per test binary.
pub fn npm_workspace() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        setup_step(&["npm", "--version"], &["nodejs", "npm"]);
        let root = workspace_root();
        if !root.join("node_modules/@bytecodealliance/componentize-js").is_dir() {
            run_ok(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&root), "npm ci");
        }
        root
    })
}

/// A virtualenv with componentize-py and the Python SDK (`target/py-venv`), once per test
/// binary.
pub fn python_venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let venv = workspace_root().join("target/py-venv");
        if !venv.join("bin/componentize-py").exists() {
            setup_step(&["python3", "-c", "import ensurepip, venv"], &["python3-venv", "python3-pip"]);
            run_ok(Command::new("python3").args(["-m", "venv"]).arg(&venv), "python3 -m venv");
            run_ok(
                Command::new(venv.join("bin/pip"))
                    .args(["install", "--quiet", "-r", "requirements.txt"])
                    .current_dir(workspace_root().join("plugins/redact-pii-py")),
                "pip install -r plugins/redact-pii-py/requirements.txt",
            );
        }
        venv
    })
}

/// A JavaScript, TypeScript or Python example plugin (`plugins/NAME`) built by
/// `hookwasm plugin build`, once per test binary and plugin.
pub fn script_plugin_path(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = built.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let dir = workspace_root().join("plugins").join(name);
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookwasm"));
    command.args(["plugin", "build"]).arg(&dir);
    if dir.join("plugin.py").is_file() {
        command.env("VIRTUAL_ENV", python_venv());
    } else {
        npm_workspace();
    }
    let path = PathBuf::from(run_ok(&mut command, &format!("hookwasm plugin build plugins/{name}")).trim());
    built.push((name.to_string(), path.clone()));
    path
}

/// User plus system CPU time process `pid` (or `self`) has used so far, from `/proc`.
pub fn process_cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields resume after the command name's ")": state is field 3, utime 14, stime 15.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default().split_whitespace().collect();
    let ticks = |field: usize| fields.get(field - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64((ticks(14) + ticks(15)) as f64 / hz)
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `RssAnon:`, `VmHWM:`), in KiB; 0 if absent.
pub fn process_status_kib(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Waits for a host started with `serve` and its stdout piped to print where it listens;
/// its URL.
pub fn listening_url(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout piped")).read_line(&mut line).unwrap();
    line.trim().strip_prefix("hookwasm listening on ").expect("host started").to_string()
}

/// The `p` quantile (0 to 1) of `sorted`; zero if it is empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted.get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1))).copied().unwrap_or_default()
}
