//! `hookwasm plugin new`: a plugin crate that builds for `wasm32-wasip2` and passes its own
//! test out of the box.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Where the generated crate finds the SDK.
#[derive(Debug, Clone)]
pub struct ScaffoldOptions {
    /// A local SDK checkout to depend on by path. `None` uses the SDK next to this binary's
    /// sources if they exist, else the published crate.
    pub sdk_path: Option<PathBuf>,
}

/// The SDK directory of the source tree this binary was built from, if it still exists.
fn bundled_sdk() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
    path.join("Cargo.toml").is_file().then(|| path.canonicalize().ok()).flatten()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Creates `dir` (which must not exist) holding a plugin crate called after its last path
/// component. Returns the files written.
pub fn scaffold(dir: &Path, options: &ScaffoldOptions) -> anyhow::Result<Vec<PathBuf>> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    if !valid_name(&name) {
        bail!("plugin name {name:?} must start with a-z and use only a-z, 0-9, - and _ (at most 64)");
    }
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let sdk = match options.sdk_path.clone().or_else(bundled_sdk) {
        Some(path) => {
            let path = path.canonicalize().with_context(|| format!("SDK path {}", path.display()))?;
            format!("{{ path = {:?} }}", path.display().to_string())
        }
        None => format!("\"{}\"", env!("CARGO_PKG_VERSION")),
    };
    let module = name.replace('-', "_");
    let type_name: String = name
        .split(['-', '_'])
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect();

    let files = [
        ("Cargo.toml", CARGO_TOML.replace("{name}", &name).replace("{sdk}", &sdk)),
        ("src/lib.rs", LIB_RS.replace("{Type}", &type_name).replace("{name}", &name)),
        ("README.md", README.replace("{name}", &name).replace("{module}", &module)),
        (".gitignore", "/target\n".to_string()),
        (".cargo/config.toml", CARGO_CONFIG.to_string()),
    ];
    let mut written = Vec::new();
    for (relative, contents) in files {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

const CARGO_TOML: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
hookwasm-plugin-sdk = {sdk}
serde_json = "1"

# A standalone crate, not part of any enclosing workspace.
[workspace]

# Plugins run once per event: make the guest code as fast as it can be.
[profile.release]
lto = true
codegen-units = 1
opt-level = 3
strip = "debuginfo"
"#;

const CARGO_CONFIG: &str = r#"# A small stack keeps the memory hookwasm resets between events small: faster per event.
# 64 KiB holds serde_json at its nesting limit; raise it if your plugin recurses deeper.
[target.wasm32-wasip2]
rustflags = ["-C", "link-arg=-zstack-size=65536"]
"#;

const LIB_RS: &str = r#"//! `{name}`: a hookwasm plugin. Edit `transform` to filter or reshape events.

use hookwasm_plugin_sdk::prelude::*;

pub struct {Type};

impl Plugin for {Type} {
    fn check_config() -> Result<()> {
        // Validate plugin_config once at load, e.g. `config::require("channel")?;`
        Ok(())
    }

    fn transform(event: Event) -> Result<Action> {
        if event.event_type != "message.created" {
            return Ok(Action::skip(format!("{name} only handles message.created, not {}", event.event_type)));
        }
        let data: serde_json::Value = event.json()?;
        let prefix = config::get("prefix").unwrap_or_else(|| "New message".into());
        log::info(format!("reshaping {}", event.id));
        Action::deliver_json(&serde_json::json!({
            "text": format!("{prefix}: {}", data["message"]["body"].as_str().unwrap_or_default()),
            "conversation": data["conversation"]["id"],
        }))
    }
}

export_plugin!({Type});

#[cfg(test)]
mod tests {
    use super::*;
    use hookwasm_plugin_sdk::testing;

    #[test]
    fn reshapes_new_messages() {
        let event = testing::event(
            "message.created",
            serde_json::json!({ "conversation": { "id": "cnv_1" }, "message": { "body": "Hello" } }),
        );
        let outcome = testing::run::<{Type}>(&event, &[("prefix", "Ticket")]);
        let body = testing::delivered_json(&outcome.result.unwrap());
        assert_eq!(body, serde_json::json!({ "text": "Ticket: Hello", "conversation": "cnv_1" }));
        assert_eq!(outcome.logs.len(), 1);
    }

    #[test]
    fn skips_other_events() {
        let event = testing::event("conversation.created", serde_json::json!({}));
        let action = testing::run::<{Type}>(&event, &[]).result.unwrap();
        assert!(matches!(action, Action::Skip(_)));
    }
}
"#;

const README: &str = r#"# {name}

A [hookwasm](https://github.com/hookwasm/hookwasm) plugin.

```sh
cargo test                                              # unit tests, natively
rustup target add wasm32-wasip2
cargo build --target wasm32-wasip2 --release            # -> target/wasm32-wasip2/release/{module}.wasm
hookwasm plugin test target/wasm32-wasip2/release/{module}.wasm --event event.json --config prefix=Ticket
```

Deploy by moving the `.wasm` file into the server's `plugins_dir` as `{name}.wasm`.
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_existing_dirs_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let options = ScaffoldOptions { sdk_path: None };
        assert!(scaffold(&tmp.path().join("Bad Name"), &options).is_err());
        let err = scaffold(tmp.path(), &options).unwrap_err().to_string();
        assert!(err.contains("must start with") || err.contains("already exists"), "{err}");
        let files = scaffold(&tmp.path().join("vip-only"), &options).unwrap();
        assert_eq!(files.len(), 5);
        let lib = std::fs::read_to_string(tmp.path().join("vip-only/src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct VipOnly;"));
        assert!(scaffold(&tmp.path().join("vip-only"), &options).unwrap_err().to_string().contains("already exists"));
    }
}
