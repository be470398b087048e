//! `hookwasm plugin new NAME --lang js|ts|py`: a JavaScript, TypeScript or Python plugin with a
//! native test, and beside it (`sdk/`) the SDK for its language as this binary carries it, so
//! the project builds with no hookwasm checkout present.

use std::path::{Path, PathBuf};

/// A language a plugin can be written in, other than Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptLang {
    JavaScript,
    TypeScript,
    Python,
}

/// The JavaScript/TypeScript SDK as this binary was built with it.
const JS_SDK: &[(&str, &str)] = &[
    ("sdk/package.json", include_str!("../../../plugin-sdk-js/package.json")),
    ("sdk/hookwasm.ts", include_str!("../../../plugin-sdk-js/hookwasm.ts")),
    ("sdk/component.ts", include_str!("../../../plugin-sdk-js/component.ts")),
    ("sdk/testing.ts", include_str!("../../../plugin-sdk-js/testing.ts")),
    ("sdk/build.mjs", include_str!("../../../plugin-sdk-js/build.mjs")),
    ("sdk/wit/plugin.wit", include_str!("../../../wit/plugin.wit")),
];

/// The Python SDK as this binary was built with it.
const PY_SDK: &[(&str, &str)] = &[
    ("sdk/pyproject.toml", include_str!("../../../plugin-sdk-py/pyproject.toml")),
    ("sdk/hookwasm/__init__.py", include_str!("../../../plugin-sdk-py/hookwasm/__init__.py")),
    ("sdk/hookwasm/testing.py", include_str!("../../../plugin-sdk-py/hookwasm/testing.py")),
    ("sdk/hookwasm/_component.py", include_str!("../../../plugin-sdk-py/hookwasm/_component.py")),
    ("sdk/hookwasm/build.py", include_str!("../../../plugin-sdk-py/hookwasm/build.py")),
    ("sdk/hookwasm/wit/plugin.wit", include_str!("../../../wit/plugin.wit")),
];

/// The files of a new plugin called `name` in `lang`, relative to its directory: with the SDK
/// this binary carries in `sdk/`, or depending on the SDK checkout at `sdk_path`.
pub fn files(name: &str, lang: ScriptLang, sdk_path: Option<&Path>) -> Vec<(PathBuf, String)> {
    // npm takes a `file:` path; pip takes a quoted path after `-e`.
    let (js_sdk, py_sdk) = match sdk_path {
        Some(path) => (format!("file:{}", path.display()), format!("{:?}", path.display().to_string())),
        None => ("file:sdk".to_string(), "./sdk".to_string()),
    };
    let fill = |text: &str| {
        text.replace("{name}", name).replace("{js_sdk}", &serde_json::to_string(&js_sdk).unwrap_or_default())
    };
    let mut files: Vec<(&str, String)> = match lang {
        ScriptLang::TypeScript => vec![
            ("package.json", fill(TS_PACKAGE)),
            ("tsconfig.json", TSCONFIG.to_string()),
            ("src/plugin.ts", fill(TS_PLUGIN)),
            ("src/plugin.test.ts", fill(TS_TEST)),
            ("README.md", fill(&JS_README.replace("{ext}", "ts"))),
            (".gitignore", "node_modules/\ntarget/\n".to_string()),
        ],
        ScriptLang::JavaScript => vec![
            ("package.json", fill(JS_PACKAGE)),
            ("src/plugin.js", fill(&strip_types(TS_PLUGIN))),
            ("src/plugin.test.js", fill(&TS_TEST.replace("./plugin.ts", "./plugin.js"))),
            ("README.md", fill(&JS_README.replace("{ext}", "js"))),
            (".gitignore", "node_modules/\ntarget/\n".to_string()),
        ],
        ScriptLang::Python => vec![
            ("pyproject.toml", fill(PY_PROJECT)),
            ("requirements.txt", PY_REQUIREMENTS.replace("{py_sdk}", &py_sdk)),
            ("plugin.py", fill(PY_PLUGIN)),
            ("test_plugin.py", fill(PY_TEST)),
            ("README.md", fill(PY_README)),
            (".gitignore", ".venv/\ntarget/\n__pycache__/\n*.egg-info/\n".to_string()),
        ],
    };
    if sdk_path.is_none() {
        let sdk = if lang == ScriptLang::Python { PY_SDK } else { JS_SDK };
        files.extend(sdk.iter().map(|(path, text)| (*path, text.to_string())));
    }
    files.into_iter().map(|(path, text)| (PathBuf::from(path), text)).collect()
}

/// The TypeScript template as JavaScript: the two type annotations it has removed.
fn strip_types(source: &str) -> String {
    source.replace("import { type Action, type Event, ", "import { ").replace("(event: Event): Action", "(event)")
}

const TS_PACKAGE: &str = r#"{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "main": "src/plugin.ts",
  "scripts": {
    "build": "hookwasm-plugin-build",
    "test": "tsc --noEmit && node --import tsx --test src/plugin.test.ts"
  },
  "dependencies": {
    "@bytecodealliance/preview2-shim": "0.25.0",
    "@hookwasm/plugin-sdk": {js_sdk}
  },
  "devDependencies": {
    "@types/node": "20.19.43",
    "tsx": "4.23.15",
    "typescript": "5.9.3"
  }
}
"#;

const JS_PACKAGE: &str = r#"{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "main": "src/plugin.js",
  "scripts": {
    "build": "hookwasm-plugin-build",
    "test": "node --import tsx --test src/plugin.test.js"
  },
  "dependencies": {
    "@bytecodealliance/preview2-shim": "0.25.0",
    "@hookwasm/plugin-sdk": {js_sdk}
  },
  "devDependencies": {
    "tsx": "4.23.15"
  }
}
"#;

const TSCONFIG: &str = r#"{
  "compilerOptions": {
    "target": "es2022",
    "module": "nodenext",
    "moduleResolution": "nodenext",
    "strict": true,
    "noEmit": true,
    "allowImportingTsExtensions": true,
    "skipLibCheck": true,
    "types": ["node"]
  },
  "include": ["src"]
}
"#;

const TS_PLUGIN: &str = r#"// `{name}`: a hookwasm plugin. Edit `transform` to filter or reshape events.

import { type Action, type Event, config, deliverJson, log, skip } from "@hookwasm/plugin-sdk";

// Validate plugin_config once at load, e.g. `config.require("channel");`. Throwing rejects it.
export function checkConfig() {}

export function transform(event: Event): Action {
  if (event.eventType !== "message.created") {
    return skip(`{name} only handles message.created, not ${event.eventType}`);
  }
  const data = event.json();
  const prefix = config.get("prefix") ?? "New message";
  log.info(`reshaping ${event.id}`);
  return deliverJson({ text: `${prefix}: ${data.message?.body ?? ""}`, conversation: data.conversation?.id });
}
"#;

const TS_TEST: &str = r#"import assert from "node:assert/strict";
import { test } from "node:test";

import { deliveredJson, event, run } from "@hookwasm/plugin-sdk/testing";

import * as plugin from "./plugin.ts";

test("reshapes new messages", () => {
  const data = { conversation: { id: "cnv_1" }, message: { body: "Hello" } };
  const { result, logs } = run(plugin, event("message.created", data), { prefix: "Ticket" });
  assert.ok(result.ok);
  assert.deepEqual(deliveredJson(result.value), { text: "Ticket: Hello", conversation: "cnv_1" });
  assert.equal(logs.length, 1);
});

test("skips other events", () => {
  const { result } = run(plugin, event("conversation.created", {}));
  assert.ok(result.ok && result.value.kind === "skip");
});
"#;

const JS_README: &str = r#"# {name}

A [hookwasm](https://github.com/hookwasm/hookwasm) plugin.

```sh
npm install                                             # the SDK's tools (componentize-js, esbuild)
npm test                                                # unit tests, natively (node --test)
hookwasm plugin build                                   # -> target/hookwasm/{name}.wasm
hookwasm plugin test target/hookwasm/{name}.wasm --event event.json --config prefix=Ticket
```

`src/plugin.{ext}` exports `transform(event)` and `checkConfig()`. `plugin build` (or
`npm run build`) bundles it with the SDK and makes it a WebAssembly component with
componentize-js. `console.log` output reaches the plugin's log as stdout.

Deploy with `hookwasm plugins deploy {name} target/hookwasm/{name}.wasm`, or by moving the
`.wasm` file into the server's `plugins_dir` as `{name}.wasm`.

`sdk/` is the hookwasm plugin SDK (and the plugin contract, `sdk/wit/plugin.wit`) as the
`hookwasm` that wrote this project carries it: keep it with the project.
"#;

const PY_PROJECT: &str = r#"[project]
name = "{name}"
version = "0.1.0"
requires-python = ">=3.11"
"#;

const PY_REQUIREMENTS: &str = "componentize-py==0.25.1\n-e {py_sdk}\n";

const PY_PLUGIN: &str = r#""""`{name}`: a hookwasm plugin. Edit `transform` to filter or reshape events."""

from hookwasm import Action, Event, config, log


def check_config() -> None:
    """Validate plugin_config once at load, e.g. `config.require("channel")`. Raising rejects it."""


def transform(event: Event) -> Action:
    if event.event_type != "message.created":
        return Action.skip(f"{name} only handles message.created, not {event.event_type}")
    data = event.json()
    prefix = config.get("prefix") or "New message"
    log.info(f"reshaping {event.id}")
    message = data.get("message") or {}
    conversation = data.get("conversation") or {}
    return Action.deliver_json({"text": f"{prefix}: {message.get('body') or ''}", "conversation": conversation.get("id")})
"#;

const PY_TEST: &str = r#"import unittest

import plugin
from hookwasm import testing


class PluginTest(unittest.TestCase):
    def test_reshapes_new_messages(self):
        data = {"conversation": {"id": "cnv_1"}, "message": {"body": "Hello"}}
        outcome = testing.run(plugin, testing.event("message.created", data), {"prefix": "Ticket"})
        self.assertTrue(outcome.ok, outcome.error)
        self.assertEqual(testing.delivered_json(outcome.value), {"text": "Ticket: Hello", "conversation": "cnv_1"})
        self.assertEqual(len(outcome.logs), 1)

    def test_skips_other_events(self):
        outcome = testing.run(plugin, testing.event("conversation.created", {}))
        self.assertEqual(outcome.value.kind, "skip")


if __name__ == "__main__":
    unittest.main()
"#;

const PY_README: &str = r#"# {name}

A [hookwasm](https://github.com/hookwasm/hookwasm) plugin.

```sh
python3 -m venv .venv && .venv/bin/pip install -r requirements.txt   # componentize-py, the SDK
.venv/bin/python -m unittest                            # unit tests, natively
hookwasm plugin build                                   # -> target/hookwasm/{name}.wasm
hookwasm plugin test target/hookwasm/{name}.wasm --event event.json --config prefix=Ticket
```

`plugin.py` defines `transform(event)` and `check_config()`. `plugin build` (or
`.venv/bin/python -m hookwasm.build`) makes it a WebAssembly component with componentize-py
(it sets up `.venv` itself if it is missing). `print` output reaches the plugin's log as
stdout. Only the standard library and pure-Python packages installed in `.venv` can be used.

Deploy with `hookwasm plugins deploy {name} target/hookwasm/{name}.wasm`, or by moving the
`.wasm` file into the server's `plugins_dir` as `{name}.wasm`.

`sdk/` is the hookwasm plugin SDK (and the plugin contract, `sdk/hookwasm/wit/plugin.wit`) as
the `hookwasm` that wrote this project carries it: keep it with the project.
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// A package pinned in more than one place (the scaffolds' `package.json`, the SDK's, the
    /// workspace's, the examples') is pinned to the same version everywhere: the scaffold and
    /// the examples must build with what the SDK was tested with.
    #[test]
    fn npm_pins_agree_everywhere() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let read = |path: &str| std::fs::read_to_string(root.join(path)).unwrap();
        let template = |text: &str| text.replace("{name}", "p").replace("{js_sdk}", "\"file:sdk\"");
        let manifests = [
            ("TS_PACKAGE", template(TS_PACKAGE)),
            ("JS_PACKAGE", template(JS_PACKAGE)),
            ("package.json", read("package.json")),
            ("plugin-sdk-js/package.json", read("plugin-sdk-js/package.json")),
            ("plugins/slack-notify-js/package.json", read("plugins/slack-notify-js/package.json")),
            ("plugins/svix-adapter/package.json", read("plugins/svix-adapter/package.json")),
        ];
        let mut pins: std::collections::BTreeMap<String, Vec<(String, &str)>> = Default::default();
        for (place, text) in &manifests {
            let manifest: serde_json::Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{place}: {e}"));
            for section in ["dependencies", "devDependencies"] {
                for (package, version) in manifest[section].as_object().into_iter().flatten() {
                    let version = version.as_str().unwrap();
                    if !version.starts_with("file:") {
                        pins.entry(package.clone()).or_default().push((version.to_string(), place));
                    }
                }
            }
        }
        assert!(pins.contains_key("@bytecodealliance/preview2-shim"), "{pins:?}");
        for (package, places) in pins {
            assert!(
                places.iter().all(|(version, _)| *version == places[0].0),
                "{package} is pinned differently: {places:?}"
            );
        }
    }

    /// Every file of each SDK is carried, so a scaffold builds with no checkout present.
    #[test]
    fn every_sdk_file_is_carried() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let listed = |sdk: &[(&str, &str)]| {
            let mut names: Vec<String> =
                sdk.iter().map(|(path, _)| path.rsplit('/').next().unwrap().to_string()).collect();
            names.sort();
            names
        };
        let on_disk = |dir: &str, extra: &[&str]| {
            let mut names: Vec<String> = std::fs::read_dir(root.join(dir))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| {
                    name != "wit" && name != "node_modules" && name != "__pycache__" && !name.ends_with(".egg-info")
                })
                .chain(extra.iter().map(|s| s.to_string()))
                .collect();
            names.sort();
            names
        };
        assert_eq!(listed(JS_SDK), on_disk("plugin-sdk-js", &["plugin.wit"]));
        let mut python = on_disk("plugin-sdk-py/hookwasm", &["plugin.wit", "pyproject.toml"]);
        python.sort();
        assert_eq!(listed(PY_SDK), python);
    }

    #[test]
    fn the_javascript_template_has_no_type_annotations_left() {
        let files = files("vip-only", ScriptLang::JavaScript, None);
        let (_, plugin) = files.iter().find(|(path, _)| path.ends_with("src/plugin.js")).unwrap();
        assert!(!plugin.contains(": Event") && !plugin.contains("type Action"), "{plugin}");
        let (_, manifest) = files.iter().find(|(path, _)| path.ends_with("package.json")).unwrap();
        assert!(manifest.contains("src/plugin.test.js") && !manifest.contains("tsc"), "{manifest}");
    }
}
