//! The `hookwasm plugin` commands, run as a user runs them: the real binary.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::support::{plugin_path, sample_path, workspace_root};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn hookwasm(args: &[&str]) -> Output {
    hookwasm_with_stdin(args, None)
}

fn hookwasm_with_stdin(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let cache = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookwasm"))
        .args(args)
        .env("XDG_CACHE_HOME", cache.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

#[test]
fn plugin_test_prints_the_exact_signed_request() {
    let plugin = plugin_path("slack-notify");
    let event = sample_path("message.created");
    let output = hookwasm(&[
        "plugin",
        "test",
        plugin.to_str().unwrap(),
        "--event",
        event.to_str().unwrap(),
        "--config",
        "base_url=https://desk.example.com",
        "--secret",
        SECRET,
        "--json",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report = json(&output);
    assert_eq!(report["action"], "deliver");
    assert_eq!(report["error"], serde_json::Value::Null);
    assert!(report["duration_us"].as_u64().unwrap() > 0);
    let body = report["body"].as_str().unwrap();
    let slack: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(slack["text"], "New message from Ada Okafor on “Order #10482 has not arrived”");

    let headers = report["headers"].as_object().unwrap();
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers["user-agent"].as_str().unwrap().starts_with("hookwasm/"));
    let mut header_map = axum::http::HeaderMap::new();
    for (name, value) in headers {
        header_map.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.as_str().unwrap().parse().unwrap(),
        );
    }
    let verifier = standardwebhooks::Webhook::new(SECRET).unwrap();
    verifier.verify(body.as_bytes(), &header_map).expect("the official library verifies the signature");

    let human = hookwasm(&[
        "plugin",
        "test",
        plugin.to_str().unwrap(),
        "--event",
        event.to_str().unwrap(),
        "--config",
        "base_url=https://d.example",
    ]);
    let text = String::from_utf8(human.stdout).unwrap();
    assert!(text.contains("action    deliver") && text.contains("webhook-signature: v1,"), "{text}");
}

#[test]
fn plugin_test_reads_stdin_and_reports_skips_passes_and_logs() {
    let plugin = plugin_path("event-filter");
    let event = std::fs::read(sample_path("message.created.private-note")).unwrap();
    let skip = hookwasm_with_stdin(
        &["plugin", "test", plugin.to_str().unwrap(), "--event", "-", "--config", "private=exclude", "--json"],
        Some(&event),
    );
    assert!(skip.status.success());
    let report = json(&skip);
    assert_eq!(report["action"], "skip");
    assert_eq!(report["reason"], "private note");
    assert_eq!(report["body"], serde_json::Value::Null);

    let pass =
        hookwasm_with_stdin(&["plugin", "test", plugin.to_str().unwrap(), "--event", "-", "--json"], Some(&event));
    let report = json(&pass);
    assert_eq!(report["action"], "pass");
    let envelope: serde_json::Value = serde_json::from_str(report["body"].as_str().unwrap()).unwrap();
    assert_eq!(envelope["id"], "evt_01JDX4N1B7");
    assert_eq!(envelope["data"]["message"]["private"], true);

    let hostile = plugin_path("hostile");
    let logs = hookwasm(&[
        "plugin",
        "test",
        hostile.to_str().unwrap(),
        "--event",
        sample_path("message.created").to_str().unwrap(),
        "--config",
        "mode=stdout-flood",
        "--json",
    ]);
    let report = json(&logs);
    assert_eq!(report["logs"][0]["level"], "stdout");
}

#[test]
fn plugin_failures_exit_non_zero_with_the_cause() {
    let hostile = plugin_path("hostile");
    let event = sample_path("message.created");
    let output = hookwasm(&[
        "plugin",
        "test",
        hostile.to_str().unwrap(),
        "--event",
        event.to_str().unwrap(),
        "--config",
        "mode=spin",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let report = json(&output);
    assert_eq!(report["action"], "error");
    assert_eq!(
        report["error"],
        format!("plugin `hostile` ({}): timed out after 50 ms", &report["sha256"].as_str().unwrap()[..12])
    );
}

#[test]
fn bad_inputs_are_one_clear_line() {
    let plugin = plugin_path("slack-notify");
    let event = sample_path("message.created");
    let not_wasm = event.to_str().unwrap();
    let cases: [(Vec<&str>, &str); 4] = [
        (vec!["plugin", "test", "/nonexistent/p.wasm", "--event", not_wasm], "cannot read /nonexistent/p.wasm"),
        (
            vec!["plugin", "test", plugin.to_str().unwrap(), "--event", "/nonexistent/e.json"],
            "reading event file /nonexistent/e.json",
        ),
        (vec!["plugin", "test", not_wasm, "--event", not_wasm], "not a WebAssembly file"),
        (vec!["plugin", "check", not_wasm], "not a WebAssembly file"),
    ];
    for (args, expected) in cases {
        let output = hookwasm(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(expected), "{stderr}");
    }
    let bad_json =
        hookwasm_with_stdin(&["plugin", "test", plugin.to_str().unwrap(), "--event", "-"], Some(b"{\"type\": 1}"));
    let stderr = String::from_utf8(bad_json.stderr).unwrap();
    assert!(stderr.contains("field `type` must be a string"), "{stderr}");
}

#[test]
fn plugin_check_validates_without_running() {
    let plugin = plugin_path("slack-notify");
    let ok = hookwasm(&["plugin", "check", plugin.to_str().unwrap()]);
    assert!(ok.status.success());
    assert!(String::from_utf8(ok.stdout).unwrap().contains("implements hookwasm:plugin/transformer@0.2.0"));
    let rejected = hookwasm(&["plugin", "check", plugin.to_str().unwrap(), "--config", "channel=#x"]);
    assert_eq!(rejected.status.code(), Some(2));
    assert!(String::from_utf8(rejected.stderr).unwrap().contains("plugin_config.base_url is required"));
}

#[test]
fn plugin_new_scaffolds_a_crate_that_tests_builds_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("vip-only");
    let output = hookwasm(&["plugin", "new", crate_dir.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // Nothing in the new crate reaches back into this checkout: the SDK and the contract are
    // written beside it, so a binary installed elsewhere scaffolds crates that build.
    let checkout = workspace_root().canonicalize().unwrap().display().to_string();
    for entry in walk(&crate_dir) {
        let text = std::fs::read_to_string(&entry).unwrap_or_default();
        assert!(!text.contains(&checkout), "{} points into the checkout", entry.display());
    }
    assert!(crate_dir.join("sdk/wit/plugin.wit").is_file());

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = workspace_root().join("target/scaffold");
    let run = |args: &[&str]| {
        let status = Command::new(&cargo)
            .args(args)
            .arg("--quiet")
            .current_dir(&crate_dir)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .unwrap();
        assert!(status.success(), "cargo {args:?} failed in the scaffolded crate");
    };
    run(&["test"]);
    // Built without WASI by `plugin build`, the author's default; the wasip2 build is the
    // other way and gives the same result.
    let built = Command::new(env!("CARGO_BIN_EXE_hookwasm"))
        .args(["plugin", "build"])
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let no_wasi = String::from_utf8_lossy(&built.stdout).trim().to_string();
    assert_eq!(std::path::Path::new(&no_wasi), target.join("hookwasm/vip-only.wasm"));
    let no_wasi_report = json(&hookwasm(&[
        "plugin",
        "test",
        &no_wasi,
        "--event",
        sample_path("message.created").to_str().unwrap(),
        "--json",
    ]));
    run(&["build", "--target", "wasm32-wasip2", "--release"]);
    let wasm = target.join("wasm32-wasip2/release/vip_only.wasm");
    let report = hookwasm(&[
        "plugin",
        "test",
        wasm.to_str().unwrap(),
        "--event",
        sample_path("message.created").to_str().unwrap(),
        "--json",
    ]);
    assert!(report.status.success());
    let report = json(&report);
    assert_eq!(report["action"], "deliver");
    let body: serde_json::Value = serde_json::from_str(report["body"].as_str().unwrap()).unwrap();
    assert!(body["text"].as_str().unwrap().starts_with("New message: Hi, my order"), "{report}");
    assert_eq!(body["conversation"], "cnv_5Hq8Lm");
    assert_eq!(report["logs"][0]["message"], "reshaping evt_01JDX4M8Q2");
    assert_eq!((&no_wasi_report["body"], &no_wasi_report["logs"]), (&report["body"], &report["logs"]));
}

#[test]
fn filter_test_prints_match_no_match_or_the_error() {
    let event = crate::support::sample_path("conversation.label_added");
    let event = event.to_str().unwrap();
    let run = |expression: &str| {
        let output = hookwasm(&["filter", "test", expression, "--event", event]);
        (output.status.code(), String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    assert_eq!(run(r#""vip" in data.conversation.labels"#), (Some(0), "match".into()));
    assert_eq!(run(r#"data.conversation.priority == "urgent""#), (Some(1), "no match".into()));
    let (code, out) = run("data.conversation.priority ==");
    assert!(code == Some(2) && out.starts_with("error: the filter at line 1, column"), "{out}");
    let (code, out) = run("data.nope.deeper == 1");
    assert!(code == Some(2) && out.starts_with("error: "), "{out}");
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

/// `serve` on a non-loopback address with no admin token stops at start, naming both keys,
/// rather than opening the token-less admin API to the network.
#[test]
fn serve_refuses_to_listen_beyond_loopback_without_an_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_hookwasm"))
        .arg("serve")
        .current_dir(dir.path())
        .env("HOOKWASM_SERVER_LISTEN", "0.0.0.0:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            server.kill().unwrap();
            panic!("serve kept running on 0.0.0.0 without an admin token");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let output = server.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success());
    assert!(stderr.contains("server.listen") && stderr.contains("server.admin_token"), "{stderr}");
}
