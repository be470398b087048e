//! `hookwasm plugin build`: a plugin crate built for `wasm32-unknown-unknown` (no WASI: one
//! core instance per call instead of three, so each event costs less) and made a component
//! ahead of deploying, so what is deployed is what runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The target plugins without WASI are built for.
pub const TARGET: &str = "wasm32-unknown-unknown";

/// Builds the plugin crate at `crate_dir` with `profile` and writes its component to
/// `<target dir>/hookwasm/<package>.wasm`; returns that path.
pub fn build(crate_dir: &Path, profile: &str) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = crate_dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!("{} has no Cargo.toml: give the plugin crate's directory", crate_dir.display());
    }
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
        let added = Command::new("rustup").args(["target", "add", TARGET]).status()?;
        if !added.success() {
            bail!("rustup target add {TARGET} failed");
        }
    }
    let built = Command::new(&cargo)
        .args(["build", "--target", TARGET, "--profile", profile, "--manifest-path"])
        .arg(&manifest)
        .args(["-p", &name])
        .status()
        .with_context(|| format!("running {cargo} build"))?;
    if !built.success() {
        bail!("cargo build --target {TARGET} failed");
    }
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
