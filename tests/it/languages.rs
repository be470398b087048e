//! Plugins in JavaScript, TypeScript and Python: the examples against their Rust twins, the
//! Svix/Hookdeck adapter, the sandbox's limits on those runtimes, the author's loop in each
//! language from a directory with no checkout in reach, and one end to end through the binary.

use std::process::Command;
use std::time::Duration;

use hookwasm::plugins::{Action, Limits, PluginErrorKind, Runtime};

use crate::host::{LOCAL_DELIVERY, SECRET, TestHost, TestReceiver, delivery_for, webhook};
use crate::support::{config, plugin, runtime, sample, sample_names, script_plugin_path};

fn load(name: &str) -> hookwasm::plugins::Plugin {
    runtime().load(name, &std::fs::read(script_plugin_path(name)).unwrap()).unwrap()
}

/// `slack-notify-js` (TypeScript) and `redact-pii-py` (Python) give byte for byte what the Rust
/// plugins give, with the same logs, on every sample event and under several configs.
#[test]
fn the_typescript_and_python_examples_match_the_rust_plugins_byte_for_byte() {
    let cases = [
        ("slack-notify-js", "slack-notify", vec![("base_url", "https://desk.example.com/"), ("channel", "#support")]),
        ("slack-notify-js", "slack-notify", vec![("base_url", "http://desk"), ("include_private", "true")]),
        ("redact-pii-py", "redact-pii", vec![]),
        ("redact-pii-py", "redact-pii", vec![("fields", "name,phone"), ("detect", "email"), ("replacement", "$1 ***")]),
    ];
    for (name, twin, pairs) in &cases {
        let (script, rust) = (load(name), plugin(twin));
        assert_eq!(script.contract(), "0.2.0");
        for sample_name in sample_names() {
            let event = sample(&sample_name).plugin_event();
            let (a, b) = (script.transform(&event, &config(pairs)), rust.transform(&event, &config(pairs)));
            assert!(a.result.is_ok(), "{name} on {sample_name}: {:?}", a.result);
            assert_eq!(format!("{:?}", a.result), format!("{:?}", b.result), "{name} on {sample_name} {pairs:?}");
            assert_eq!(a.logs, b.logs, "{name} on {sample_name}");
        }
        let (a, b) =
            (script.check_config(&config(&[("detect", "ssn")])), rust.check_config(&config(&[("detect", "ssn")])));
        assert_eq!(a.result.is_ok(), b.result.is_ok(), "{name}: the same configs are refused");
    }
    // Fields EasyDesk sends as null read as unset in both; fields of the wrong type fail both.
    let slack = [("base_url", "https://desk.example.com")];
    let nulls = r#"{"conversation":{"id":"cnv_1","subject":null,"status":null,"customer":{"name":null},"inbox":null},"message":{"author":{"name":"Ada"},"body":null,"private":null}}"#;
    let wrong = [
        r#"{"conversation":{"id":"cnv_1","status":3}}"#,
        r#"{"conversation":{"id":"cnv_1"},"message":{"author":{"name":"Ada"},"private":"yes"}}"#,
        r#"{"conversation":{"id":"cnv_1"},"message":{"author":null}}"#,
        r#"{"conversation":{"id":7}}"#,
        r#"[]"#,
    ];
    let event = |data: &str| hookwasm::plugins::PluginEvent {
        id: "evt_1".into(),
        event_type: "message.created".into(),
        timestamp: "2026-11-27T10:15:30Z".into(),
        data: data.as_bytes().to_vec(),
    };
    let (js, rust) = (load("slack-notify-js"), plugin("slack-notify"));
    let (a, b) = (js.transform(&event(nulls), &config(&slack)), rust.transform(&event(nulls), &config(&slack)));
    assert!(a.result.is_ok(), "{:?}", a.result);
    assert_eq!(format!("{:?}", a.result), format!("{:?}", b.result));
    for data in wrong {
        let (a, b) = (js.transform(&event(data), &config(&slack)), rust.transform(&event(data), &config(&slack)));
        assert!(a.result.is_err() && b.result.is_err(), "{data}: {:?} / {:?}", a.result, b.result);
    }
}

fn adapter(script: &str) -> hookwasm::plugins::Execution {
    load("svix-adapter").transform(&sample("message.created").plugin_event(), &config(&[("script", script)]))
}

#[test]
fn svix_and_hookdeck_transformations_run_unchanged_through_the_adapter() {
    let svix = r#"
        function handler(webhook) {
          if (webhook.payload.data.message.private) webhook.cancel = true;
          webhook.payload = { text: `${webhook.eventType}: ${webhook.payload.data.conversation.subject}` };
          return webhook;
        }"#;
    let Ok(Action::Deliver { headers, body }) = adapter(svix).result else { panic!("{:?}", adapter(svix).result) };
    assert!(headers.is_empty());
    assert_eq!(String::from_utf8(body).unwrap(), r#"{"text":"message.created: Order #10482 has not arrived"}"#);
    let private = load("svix-adapter")
        .transform(&sample("message.created.private-note").plugin_event(), &config(&[("script", svix)]));
    assert_eq!(private.result.unwrap(), Action::Skip("cancelled by the transformation".into()));

    let hookdeck = r#"
        addHandler("transform", (request, context) => {
          request.headers["X-Ticket"] = request.body.data.conversation.id;
          request.body = { ticket: request.body.data.conversation.id };
          return request;
        });"#;
    let Ok(Action::Deliver { headers, body }) = adapter(hookdeck).result else { panic!() };
    assert_eq!(headers, vec![("x-ticket".to_string(), "cnv_5Hq8Lm".to_string())]);
    assert_eq!(body, br#"{"ticket":"cnv_5Hq8Lm"}"#);

    let check = |script: &str| load("svix-adapter").check_config(&config(&[("script", script)])).result;
    let PluginErrorKind::Returned(message) = check("function handler(").unwrap_err().kind else { panic!() };
    assert!(message.contains("SyntaxError"), "{message}");
    assert!(check("const nothing = 1;").is_err());
    assert!(check(svix).is_ok());
    let redirect = adapter("function handler(w) { w.url = 'http://10.0.0.1/'; return w }");
    assert!(matches!(redirect.result.unwrap_err().kind, PluginErrorKind::Returned(m) if m.contains("webhook.url")));
}

/// The deadline and the memory cap hold for JavaScript and Python; a plugin can have a memory
/// cap of its own.
#[test]
fn the_sandbox_limits_hold_for_javascript_and_python() {
    let spin = adapter("function handler(w) { for (;;) {} }");
    assert!(matches!(spin.result.unwrap_err().kind, PluginErrorKind::Timeout(_)));
    let hog = adapter("function handler(w) { const a = []; for (;;) a.push(new Array(1e6).fill(7)); }");
    let kind = hog.result.unwrap_err().kind;
    assert!(matches!(kind, PluginErrorKind::MemoryLimit(_)), "{kind:?}");
    let after = adapter("function handler(w) { return w }");
    assert!(after.result.is_ok(), "the next call is unaffected: {:?}", after.result);
    assert!(after.memory_bytes > 4 << 20 && after.memory_bytes < 32 << 20, "{}", after.memory_bytes);

    let limits = Limits {
        memory_bytes_by_plugin: [("redact-pii-py".to_string(), 4 << 20)].into(),
        max_concurrent: 2,
        ..Limits::default()
    };
    let capped = Runtime::new(limits, None).unwrap();
    let event = sample("message.created").plugin_event();
    let python = capped.load("redact-pii-py", &std::fs::read(script_plugin_path("redact-pii-py")).unwrap()).unwrap();
    assert!(matches!(python.transform(&event, &config(&[])).result.unwrap_err().kind, PluginErrorKind::MemoryLimit(_)));
    let javascript =
        capped.load("slack-notify-js", &std::fs::read(script_plugin_path("slack-notify-js")).unwrap()).unwrap();
    assert!(javascript.transform(&event, &config(&[("base_url", "https://x")])).result.is_ok());
}

/// The real binary delivers what the TypeScript and Python plugins make, signed.
#[tokio::test(flavor = "multi_thread")]
async fn the_binary_delivers_javascript_and_python_plugins_output() {
    let receiver = TestReceiver::start().await;
    let config = [
        LOCAL_DELIVERY.to_string(),
        webhook(
            "slack",
            &receiver.url("/slack"),
            r#"["message.created"]"#,
            "plugin = \"slack-notify-js\"\nplugin_config = { base_url = \"https://desk.example.com\" }",
        ),
        webhook("redacted", &receiver.url("/redacted"), r#"["message.created"]"#, "plugin = \"redact-pii-py\""),
    ]
    .concat();
    let mut host = TestHost::create(&config, &[]);
    for name in ["slack-notify-js", "redact-pii-py", "svix-adapter"] {
        std::fs::copy(script_plugin_path(name), host.plugins_dir().join(format!("{name}.wasm"))).unwrap();
    }
    host.spawn();
    host.wait_plugin("svix-adapter", Duration::from_secs(60), |status| status["state"] == "loaded").await;
    // A Svix transformation, from a file, as an operator moving from Svix adds it.
    let script = host.plugins_dir().join("transform.js");
    std::fs::write(
        &script,
        "function handler(webhook) {\n  webhook.payload = { kind: webhook.eventType };\n  return webhook;\n}\n",
    )
    .unwrap();
    let added = host.cli(&[
        "webhooks",
        "add",
        "--id",
        "svix",
        "--url",
        &receiver.url("/svix"),
        "--events",
        "message.created",
        "--secret",
        SECRET,
        "--plugin",
        "svix-adapter",
        "--config",
        &format!("script=@{}", script.display()),
    ]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let event = host.post_sample("message.created").await;
    let deliveries = host.settled_deliveries(&event, Duration::from_secs(30)).await;
    assert_eq!(delivery_for(&deliveries, "slack")["state"], "delivered", "{deliveries:#?}");
    assert_eq!(delivery_for(&deliveries, "redacted")["state"], "delivered", "{deliveries:#?}");
    let slack = receiver.wait_for("/slack", 1, Duration::from_secs(10)).await;
    assert!(slack[0].json()["text"].as_str().unwrap().starts_with("New message from Ada Okafor"));
    let redacted = receiver.wait_for("/redacted", 1, Duration::from_secs(10)).await;
    assert!(!redacted[0].json().to_string().contains("ada.okafor@example.org"));
    let svix = receiver.wait_for("/svix", 1, Duration::from_secs(10)).await;
    assert_eq!(svix[0].json(), serde_json::json!({ "kind": "message.created" }));
    assert!(receiver.all().iter().all(|r| r.verified));
}

fn hookwasm(dir: &std::path::Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_hookwasm")).args(args).current_dir(dir).output().unwrap();
    assert!(output.status.success(), "hookwasm {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn run(dir: &std::path::Path, program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).current_dir(dir).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `plugin new --lang ts|js|py` in a directory with no checkout in reach: the project's own
/// test passes with its language's runner, `plugin build` builds it, and it runs.
#[test]
fn new_plugins_in_every_language_test_build_and_run_without_a_checkout() {
    crate::support::npm_workspace();
    crate::support::python_venv();
    let tmp = tempfile::tempdir().unwrap();
    let event = crate::support::sample_path("message.created");
    for lang in ["ts", "js", "py"] {
        let name = format!("vip-{lang}");
        hookwasm(tmp.path(), &["plugin", "new", &name, "--lang", lang]);
        let dir = tmp.path().join(&name);
        for file in walk(&dir) {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let root = crate::support::workspace_root();
            assert!(!text.contains(root.to_str().unwrap()), "{} names the checkout", file.display());
        }
        if lang == "py" {
            // The project's own environment, with the SDK it carries (componentize-py comes
            // from pip's cache once `python_venv` has fetched it).
            run(&dir, "python3", &["-m", "venv", ".venv"]);
            run(&dir, ".venv/bin/pip", &["install", "--quiet", "-r", "requirements.txt"]);
            run(&dir, ".venv/bin/python", &["-m", "unittest"]);
        } else {
            run(&dir, "npm", &["install", "--no-audit", "--no-fund", "--prefer-offline"]);
            run(&dir, "npm", &["test"]);
        }
        let built = hookwasm(&dir, &["plugin", "build"]);
        let component = built.trim();
        assert_eq!(std::path::Path::new(component), dir.join(format!("target/hookwasm/{name}.wasm")));
        let report: serde_json::Value = serde_json::from_str(&hookwasm(
            &dir,
            &["plugin", "test", component, "--json", "--event", event.to_str().unwrap(), "--config", "prefix=Ticket"],
        ))
        .unwrap();
        let body: serde_json::Value = serde_json::from_str(report["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["conversation"], "cnv_5Hq8Lm", "{lang}: {report:#}");
        assert!(body["text"].as_str().unwrap().starts_with("Ticket: Hi, my order"), "{lang}");
        assert_eq!(report["logs"][0]["message"], "reshaping evt_01JDX4M8Q2", "{lang}");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// The JavaScript and Python SDKs' examples pass their own tests, run by their languages'
/// runners (`node --test` through `npm test`, `python -m unittest`).
#[test]
fn the_examples_own_tests_pass() {
    let root = crate::support::npm_workspace();
    run(root, "npm", &["test", "--workspaces", "--if-present"]);
    let python = crate::support::python_venv().join("bin/python");
    run(&root.join("plugins/redact-pii-py"), python.to_str().unwrap(), &["-m", "unittest", "-v"]);
}
