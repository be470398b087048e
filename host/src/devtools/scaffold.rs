//! `hookwasm plugin new`: a plugin crate that builds (`hookwasm plugin build`, or for
//! `wasm32-wasip2`) and passes its own test out of the box, with no hookwasm checkout anywhere: until the SDK is published, the
//! binary carries the SDK's sources and the plugin contract (WIT) and writes them into the new
//! crate (`sdk/`), so an installed or copied binary scaffolds crates that build.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::scaffold_script::ScriptLang;

/// Where the generated crate finds the SDK.
#[derive(Debug, Clone)]
pub struct ScaffoldOptions {
    /// A local SDK checkout to depend on by path, for SDK development. `None` writes the SDK
    /// this binary carries into the new crate.
    pub sdk_path: Option<PathBuf>,
    /// Write a JavaScript, TypeScript or Python plugin instead of a Rust crate.
    pub lang: Option<ScriptLang>,
}

/// The SDK as this binary was built with it: its sources, the contract and its README.
const SDK_FILES: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("../../../plugin-sdk/src/lib.rs")),
    ("src/action.rs", include_str!("../../../plugin-sdk/src/action.rs")),
    ("src/arena.rs", include_str!("../../../plugin-sdk/src/arena.rs")),
    ("src/config.rs", include_str!("../../../plugin-sdk/src/config.rs")),
    ("src/error.rs", include_str!("../../../plugin-sdk/src/error.rs")),
    ("src/event.rs", include_str!("../../../plugin-sdk/src/event.rs")),
    ("src/log.rs", include_str!("../../../plugin-sdk/src/log.rs")),
    ("src/system.rs", include_str!("../../../plugin-sdk/src/system.rs")),
    ("src/testing.rs", include_str!("../../../plugin-sdk/src/testing.rs")),
    ("wit/plugin.wit", include_str!("../../../wit/plugin.wit")),
    ("README.md", include_str!("../../../plugin-sdk/README.md")),
];

/// The SDK's manifest outside this repository's workspace: the same dependencies, spelled out
/// (a test checks them against the workspace's).
const SDK_MANIFEST: &str = r#"[package]
name = "hookwasm-plugin-sdk"
description = "Write hookwasm webhook plugins (a copy written by `hookwasm plugin new`)"
version = "{version}"
edition = "2024"
publish = false

[features]
default = ["arena", "panic-messages"]
arena = []
panic-messages = []

[dependencies]
serde = { version = "1", features = ["derive"] }
serde_json = { version = "1", features = ["raw_value"] }

[target.'cfg(target_arch = "wasm32")'.dependencies]
wit-bindgen = { version = "0.63", default-features = false, features = ["macros", "realloc"] }
"#;

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
    if let Some(lang) = options.lang {
        let sdk = match &options.sdk_path {
            Some(path) => Some(path.canonicalize().with_context(|| format!("SDK path {}", path.display()))?),
            None => None,
        };
        return write_files(dir, super::scaffold_script::files(&name, lang, sdk.as_deref()));
    }
    let (sdk, sdk_files) = match &options.sdk_path {
        Some(path) => {
            let path = path.canonicalize().with_context(|| format!("SDK path {}", path.display()))?;
            (format!("{{ path = {:?} }}", path.display().to_string()), Vec::new())
        }
        None => {
            let manifest = ("sdk/Cargo.toml".to_string(), SDK_MANIFEST.replace("{version}", env!("CARGO_PKG_VERSION")));
            let sources = SDK_FILES.iter().map(|(path, text)| (format!("sdk/{path}"), text.to_string()));
            ("{ path = \"sdk\" }".to_string(), std::iter::once(manifest).chain(sources).collect())
        }
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
        ("Cargo.toml".to_string(), CARGO_TOML.replace("{name}", &name).replace("{sdk}", &sdk)),
        ("src/lib.rs".to_string(), LIB_RS.replace("{Type}", &type_name).replace("{name}", &name)),
        ("README.md".to_string(), README.replace("{name}", &name).replace("{module}", &module)),
        (".gitignore".to_string(), "/target\n".to_string()),
        (".cargo/config.toml".to_string(), CARGO_CONFIG.to_string()),
    ]
    .into_iter()
    .chain(sdk_files)
    .map(|(path, contents)| (PathBuf::from(path), contents));
    write_files(dir, files.collect())
}

/// Writes `files` (paths relative to `dir`) and the folders they need; returns their paths.
fn write_files(dir: &Path, files: Vec<(PathBuf, String)>) -> anyhow::Result<Vec<PathBuf>> {
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
[target.wasm32-unknown-unknown]
rustflags = ["-C", "link-arg=-zstack-size=65536"]

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
hookwasm plugin build                                   # -> target/hookwasm/{name}.wasm
hookwasm plugin test target/hookwasm/{name}.wasm --event event.json --config prefix=Ticket
```

`plugin build` builds for `wasm32-unknown-unknown` (no WASI, so each event costs less) and
makes the result a component. `cargo build --target wasm32-wasip2 --release` works too
(-> `target/wasm32-wasip2/release/{module}.wasm`), with WASI's fixed cost per event.

Deploy with `hookwasm plugins deploy {name} target/hookwasm/{name}.wasm`, or by moving the
`.wasm` file into the server's `plugins_dir` as `{name}.wasm`.

`sdk/` is the hookwasm plugin SDK (and the plugin contract, `sdk/wit/plugin.wit`) as the
`hookwasm` that wrote this crate carries it: keep it with the crate.
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// The SDK's manifest written into scaffolds asks for what the SDK's own manifest does.
    #[test]
    fn the_written_sdk_manifest_matches_the_workspace() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let workspace: toml::Table = std::fs::read_to_string(root.join("Cargo.toml")).unwrap().parse().unwrap();
        let sdk: toml::Table = std::fs::read_to_string(root.join("plugin-sdk/Cargo.toml")).unwrap().parse().unwrap();
        let written: toml::Table = SDK_MANIFEST.replace("{version}", "0.0.0").parse().unwrap();
        let shared = &workspace["workspace"]["dependencies"];
        let spelled = |table: &toml::Value, name: &str| {
            let dependency = &table[name];
            dependency.get("workspace").map_or(dependency.clone(), |_| shared[name].clone())
        };
        for name in ["serde", "serde_json"] {
            assert_eq!(spelled(&sdk["dependencies"], name), written["dependencies"][name], "{name}");
        }
        let wasm = "cfg(target_arch = \"wasm32\")";
        assert_eq!(
            spelled(&sdk["target"][wasm]["dependencies"], "wit-bindgen"),
            written["target"][wasm]["dependencies"]["wit-bindgen"]
        );
        assert_eq!(sdk["features"], written["features"]);
        let listed: Vec<&str> = SDK_FILES.iter().map(|(path, _)| *path).filter(|p| p.starts_with("src/")).collect();
        let mut sources: Vec<String> = std::fs::read_dir(root.join("plugin-sdk/src"))
            .unwrap()
            .map(|e| format!("src/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        sources.sort();
        let mut listed: Vec<String> = listed.into_iter().map(String::from).collect();
        listed.sort();
        assert_eq!(listed, sources, "every SDK source is carried");
    }

    #[test]
    fn names_are_checked_and_existing_dirs_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let options = ScaffoldOptions { sdk_path: None, lang: None };
        assert!(scaffold(&tmp.path().join("Bad Name"), &options).is_err());
        let err = scaffold(tmp.path(), &options).unwrap_err().to_string();
        assert!(err.contains("must start with") || err.contains("already exists"), "{err}");
        let files = scaffold(&tmp.path().join("vip-only"), &options).unwrap();
        assert_eq!(files.len(), 5 + 1 + SDK_FILES.len(), "the crate, the SDK's manifest and its files");
        let manifest = std::fs::read_to_string(tmp.path().join("vip-only/Cargo.toml")).unwrap();
        assert!(manifest.contains(r#"hookwasm-plugin-sdk = { path = "sdk" }"#), "{manifest}");
        let lib = std::fs::read_to_string(tmp.path().join("vip-only/src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct VipOnly;"));
        assert!(scaffold(&tmp.path().join("vip-only"), &options).unwrap_err().to_string().contains("already exists"));
    }
}
