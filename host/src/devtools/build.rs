//! `hookwasm plugin build`: a plugin project made a component ahead of deploying, so what is
//! deployed is what runs. A Rust crate is built for `wasm32-unknown-unknown` (no WASI: one
//! core instance per call instead of three, so each event costs less); a JavaScript or
//! TypeScript project (`package.json`) and a Python one (`plugin.py`) are built by their SDK's
//! own build (componentize-js, componentize-py), after installing its tools if they are not.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// The target plugins without WASI are built for.
pub const TARGET: &str = "wasm32-unknown-unknown";

/// Builds the plugin project at `dir` (a Rust crate with `profile`) and writes its component
/// to `target/hookwasm/<name>.wasm` (a crate's target directory); returns that path.
pub fn build(dir: &Path, profile: &str) -> anyhow::Result<PathBuf> {
    if dir.join("Cargo.toml").is_file() {
        build_crate(dir, profile)
    } else if dir.join("package.json").is_file() {
        build_javascript(dir)
    } else if dir.join("plugin.py").is_file() {
        build_python(dir)
    } else {
        bail!("{} has no Cargo.toml, package.json or plugin.py: give the plugin's directory", dir.display())
    }
}

/// A JavaScript or TypeScript plugin: `npm install` if the SDK is not installed where Node
/// would find it (the project's `node_modules`, or a workspace's above it), then the SDK's
/// build (the package's `build` script).
fn build_javascript(dir: &Path) -> anyhow::Result<PathBuf> {
    if !dir.ancestors().any(|ancestor| ancestor.join("node_modules/@hookwasm/plugin-sdk").is_dir()) {
        let mut install = Command::new("npm");
        install.args(["install", "--no-audit", "--no-fund"]).current_dir(dir);
        run(&mut install, &format!("npm install in {}", dir.display()), "is Node.js with npm installed?")?;
    }
    let mut npm = Command::new("npm");
    npm.args(["run", "--silent", "build"]).current_dir(dir);
    printed_path(npm, "npm run build")
}

/// A Python plugin: the SDK's build run by the project's Python: its `.venv`, else the active
/// virtualenv, else a `.venv` made from `requirements.txt`.
fn build_python(dir: &Path) -> anyhow::Result<PathBuf> {
    let venv = dir.join(".venv");
    let active = std::env::var_os("VIRTUAL_ENV").map(|venv| PathBuf::from(venv).join("bin/python"));
    let python = match active.filter(|python| python.exists()) {
        _ if venv.join("bin/python").exists() => venv.join("bin/python"),
        Some(python) => python,
        None => {
            setup_venv(dir, &venv)?;
            venv.join("bin/python")
        }
    };
    let mut command = Command::new(&python);
    command.args(["-m", "hookwasm.build"]).arg(dir);
    printed_path(command, "python -m hookwasm.build")
}

fn setup_venv(dir: &Path, venv: &Path) -> anyhow::Result<()> {
    if !dir.join("requirements.txt").is_file() {
        bail!("{} has no requirements.txt to set up .venv from; activate a virtualenv with the SDK", dir.display());
    }
    let mut create = Command::new("python3");
    create.args(["-m", "venv"]).arg(venv);
    run(&mut create, &format!("python3 -m venv {}", venv.display()), "is Python 3.11+ with venv installed?")?;
    let mut install = Command::new(venv.join("bin/pip"));
    install.args(["install", "--quiet", "-r", "requirements.txt"]).current_dir(dir);
    run(&mut install, &format!("pip install -r requirements.txt in {}", dir.display()), "is the .venv complete?")
}

/// Runs a setup or build step to the end, its output on stderr (stdout is for the built
/// component's path). `hint` says what to check when the program does not start.
fn run(command: &mut Command, what: &str, hint: &str) -> anyhow::Result<()> {
    let status =
        command.stdout(Stdio::from(std::io::stderr())).status().with_context(|| format!("running {what} ({hint})"))?;
    if !status.success() {
        bail!("{what} failed");
    }
    Ok(())
}

/// Runs a build that prints the component's path last on stdout (its progress goes to
/// stderr), and returns that path.
fn printed_path(mut command: Command, what: &str) -> anyhow::Result<PathBuf> {
    let output = command.stderr(Stdio::inherit()).output().with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!("{what} failed");
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let path = stdout.lines().rev().find(|line| !line.trim().is_empty()).map(|line| PathBuf::from(line.trim()));
    match path {
        Some(path) if path.is_file() => Ok(path),
        _ => bail!("{what} did not print the component it built"),
    }
}

/// Builds the plugin crate at `crate_dir` with `profile` and writes its component to
/// `<target dir>/hookwasm/<package>.wasm`; returns that path.
fn build_crate(crate_dir: &Path, profile: &str) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = crate_dir.join("Cargo.toml");
    let metadata = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--manifest-path"])
        .arg(&manifest)
        .output()
        .with_context(|| format!("running {cargo} metadata"))?;
    if !metadata.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&metadata.stderr).trim());
    }
    let metadata: serde_json::Value = serde_json::from_slice(&metadata.stdout).context("reading cargo metadata")?;
    let manifest = manifest.canonicalize()?;
    let package = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["manifest_path"].as_str().is_some_and(|m| Path::new(m) == manifest))
        .context("no package in that Cargo.toml (a workspace root? give the plugin crate's directory)")?;
    let name = package["name"].as_str().unwrap_or_default().to_string();
    let library = package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["crate_types"].as_array().is_some_and(|types| types.iter().any(|k| k == "cdylib")))
        .and_then(|t| t["name"].as_str())
        .with_context(|| format!("{name} has no cdylib library target (crate-type = [\"cdylib\", \"rlib\"])"))?
        .replace('-', "_");
    let target_dir = PathBuf::from(metadata["target_directory"].as_str().unwrap_or("target"));

    if Command::new("rustup").args(["target", "list", "--installed"]).output().is_ok_and(|out| {
        out.status.success() && !String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == TARGET)
    }) {
        let mut add = Command::new("rustup");
        add.args(["target", "add", TARGET]);
        run(&mut add, &format!("rustup target add {TARGET}"), "is rustup installed?")?;
    }
    let mut build = Command::new(&cargo);
    build
        .args(["build", "--target", TARGET, "--profile", profile, "--manifest-path"])
        .arg(&manifest)
        .args(["-p", &name]);
    run(&mut build, &format!("cargo build --target {TARGET}"), "is Rust installed?")?;
    let profile_dir = if profile == "dev" { "debug" } else { profile };
    let module_path = target_dir.join(TARGET).join(profile_dir).join(format!("{library}.wasm"));
    let module = std::fs::read(&module_path).with_context(|| format!("reading {}", module_path.display()))?;
    let component = crate::plugins::encode_component(&module)
        .map_err(|reason| anyhow::anyhow!("{} is not a hookwasm plugin: {reason}", module_path.display()))?;
    let out_dir = target_dir.join("hookwasm");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let out = out_dir.join(format!("{name}.wasm"));
    std::fs::write(&out, component).with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}
