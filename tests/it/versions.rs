//! Plugin versions against the real binary: upload, list, activate, roll back, restart, a
//! bad upload and a version a webhook's config rejects; dry runs over stored events; canaries
//! (the split, a retry keeping its version, automatic rollback, promote).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::host::{Answer, LOCAL_DELIVERY, TestHost, TestReceiver, webhook};
use crate::support::{plugin_path, plugin_sha};

const SETTLE: Duration = Duration::from_secs(30);

fn cli(host: &TestHost, args: &[&str]) -> (i32, String, String) {
    let output = host.cli(args);
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.code().unwrap_or(-1), text(&output.stdout), text(&output.stderr))
}

fn path(crate_name: &str) -> String {
    plugin_path(crate_name).to_str().unwrap().to_string()
}

/// field-map without a mapping delivers `data`; pass-through delivers the envelope.
fn is_envelope(body: &serde_json::Value) -> bool {
    body.get("type").is_some() && body.get("data").is_some()
}

async fn post(host: &TestHost, id: &str) {
    let body =
        format!(r#"{{"id": "{id}", "type": "message.created", "data": {{"email": "{id}@example.com", "n": 1}}}}"#);
    let (status, answer) = host.post_event(&body).await;
    assert_eq!(status, 202, "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn uploaded_versions_serve_roll_back_and_survive_a_restart() {
    let receiver = TestReceiver::start().await;
    let shape = "plugin = \"shape\"\nplugin_config = { mode = \"reject-config\" }";
    let config = format!("{LOCAL_DELIVERY}{}", webhook("w", &receiver.url("/w"), r#"["message.created"]"#, shape));
    let mut host = TestHost::start(&config, &[]);
    let (field_map, pass) = (plugin_sha("field-map"), plugin_sha("pass-through"));

    let (code, out, err) = cli(&host, &["plugins", "deploy", "shape", &path("field-map")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&field_map) && out.contains("serving now"), "{out}");
    host.wait_plugin("shape", SETTLE, |p| p["sha256"] == field_map.as_str()).await;
    post(&host, "one").await;
    assert!(!is_envelope(&receiver.wait_for("/w", 1, SETTLE).await[0].json()), "field-map delivered data");

    let (code, out, err) = cli(&host, &["plugins", "deploy", "shape", &path("pass-through"), "--no-activate"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("not serving"), "{out}");
    let versions = host.get("/v1/plugins/shape/versions").await;
    let listed: Vec<(&str, bool)> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["sha256"].as_str().unwrap(), v["serving"].as_bool().unwrap()))
        .collect();
    assert_eq!(listed, [(pass.as_str(), false), (field_map.as_str(), true)], "newest first: {versions}");
    assert_eq!(versions["versions"][0]["uploaded_by"], "loopback");

    // A unique prefix is enough; an ambiguous or unknown one is refused.
    let (code, _, err) = cli(&host, &["plugins", "activate", "shape", &pass[..8]]);
    assert_eq!(code, 0, "{err}");
    host.wait_plugin("shape", SETTLE, |p| p["sha256"] == pass.as_str()).await;
    post(&host, "two").await;
    assert!(is_envelope(&receiver.wait_for("/w", 2, SETTLE).await[1].json()), "pass-through delivered the envelope");
    let (code, _, err) = cli(&host, &["plugins", "activate", "shape", "ffffffff"]);
    assert_eq!(code, 2);
    assert!(err.contains("404") && err.contains("no stored version"), "{err}");

    // A bad upload and a version that rejects the webhook's config: 422 with the cause, and
    // the serving version keeps serving.
    let response = host
        .http
        .put(host.url("/v1/plugins/shape"))
        .header("content-type", "application/wasm")
        .body(b"\0asm\x0d\0\x01\0garbage".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert!(answer["error"].as_str().unwrap().contains("invalid component"), "{answer}");
    let (code, _, err) = cli(&host, &["plugins", "deploy", "shape", &path("hostile")]);
    assert_eq!(code, 2);
    assert!(err.contains("422") && err.contains("rejected the plugin_config of webhook `w`"), "{err}");
    let status = host.wait_plugin("shape", SETTLE, |_| true).await;
    assert_eq!((&status["state"], &status["sha256"]), (&"loaded".into(), &pass.clone().into()), "{status}");
    assert_eq!(host.get("/v1/plugins/shape/versions").await["versions"].as_array().unwrap().len(), 2, "not stored");

    // Rolling back is activating the earlier version; it survives a restart, with no file.
    let (code, out, err) = cli(&host, &["plugins", "activate", "shape", &field_map[..12]]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("shape serving {field_map}")), "{out}");
    host.terminate();
    host.spawn();
    let status = host.wait_plugin("shape", SETTLE, |p| p["state"] == "loaded").await;
    assert_eq!(status["sha256"], field_map.as_str(), "{status}");
    post(&host, "three").await;
    let received = receiver.wait_for("/w", 3, SETTLE).await;
    assert!(!is_envelope(&received[2].json()));
    let (_, out, _) = cli(&host, &["plugins", "versions", "shape"]);
    assert!(out.contains(&pass) && out.contains(&format!("{field_map}  serving")), "{out}");

    // Deliveries by plugin version.
    let by_version = |sha: &str| {
        let (code, out, err) = cli(&host, &["deliveries", "list", "--plugin-sha", &sha[..10], "--json"]);
        assert_eq!(code, 0, "{err}");
        let page: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut ids: Vec<String> = page["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["event_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(by_version(&field_map), ["one", "three"]);
    assert_eq!(by_version(&pass), ["two"]);
    let (code, _, err) = cli(&host, &["deliveries", "list", "--plugin-sha", "xyz"]);
    assert_eq!(code, 2);
    assert!(err.contains("not a sha256"), "{err}");
}

/// A file in the folder is deployed once: a restart with the same file does not undo a
/// version uploaded since (even once the file's version is pruned), and removing the file
/// does not withdraw what an upload made serve; a changed file deploys again.
#[tokio::test(flavor = "multi_thread")]
async fn the_folder_does_not_undo_an_upload() {
    let receiver = TestReceiver::start().await;
    let config = format!(
        "{LOCAL_DELIVERY}{}[plugins]\nkeep_versions = 1\n",
        webhook("w", &receiver.url("/w"), r#"["message.created"]"#, "plugin = \"field-map\"")
    );
    let mut host = TestHost::start(&config, &["field-map"]);
    host.wait_plugin("field-map", SETTLE, |p| p["sha256"] == plugin_sha("field-map").as_str()).await;
    let pass = plugin_sha("pass-through");
    assert_eq!(cli(&host, &["plugins", "deploy", "field-map", &path("pass-through")]).0, 0);
    let versions = host.get("/v1/plugins/field-map/versions").await;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 1, "the file's version is pruned: {versions}");

    host.terminate();
    host.spawn();
    let status = host.wait_plugin("field-map", SETTLE, |p| p["state"] == "loaded").await;
    assert_eq!(status["sha256"], pass.as_str(), "the upload still serves after a restart: {status}");

    let file = host.plugins_dir().join("field-map.wasm");
    std::fs::remove_file(&file).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = host.wait_plugin("field-map", SETTLE, |_| true).await;
    assert_eq!((&status["state"], &status["sha256"]), (&"loaded".into(), &pass.clone().into()), "{status}");

    std::fs::copy(plugin_path("redact-pii"), host.plugins_dir().join(".tmp")).unwrap();
    std::fs::rename(host.plugins_dir().join(".tmp"), &file).unwrap();
    host.wait_plugin("field-map", SETTLE, |p| p["sha256"] == plugin_sha("redact-pii").as_str()).await;
    // Removing the file whose deploy serves withdraws the plugin.
    std::fs::remove_file(&file).unwrap();
    host.wait_plugin("field-map", SETTLE, |p| p["state"] == "unloaded").await;
}

/// A file dropped in the plugins folder is a version too; a dry run replays the stored
/// events through the serving version and a candidate and reports exactly what changes.
#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_reports_what_a_candidate_would_change_on_stored_events() {
    let receiver = TestReceiver::start().await;
    let extra = "plugin = \"field-map\"\nplugin_config = { mode = \"error\" }";
    let config = format!("{LOCAL_DELIVERY}{}", webhook("w", &receiver.url("/w"), r#"["message.created"]"#, extra));
    let host = TestHost::start(&config, &["field-map"]);
    host.wait_plugin("field-map", SETTLE, |p| p["state"] == "loaded").await;
    let versions = host.get("/v1/plugins/field-map/versions").await;
    assert_eq!(versions["versions"][0]["uploaded_by"], "file", "{versions}");
    for i in 0..4 {
        post(&host, &format!("e{i}")).await;
    }
    receiver.wait_for("/w", 4, SETTLE).await;

    let diff = |file: &str, json: bool| {
        let mut args = vec!["plugins", "diff", "field-map", file, "--webhook", "w"];
        if json {
            args.push("--json");
        }
        cli(&host, &args)
    };
    let (code, out, err) = diff(&path("field-map"), false);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("4 stored events of w") && out.contains("same 4  body changed 0"), "{out}");

    // redact-pii delivers the envelope with the email redacted, where field-map delivered data.
    let (code, out, err) = diff(&path("redact-pii"), true);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["summary"]["events"], 4);
    assert_eq!(report["summary"]["body_changed"], 4, "{report:#}");
    assert_eq!(report["candidate"], plugin_sha("redact-pii").as_str());
    let changes = report["changes"].as_array().unwrap();
    let ids: HashSet<&str> = changes.iter().map(|c| c["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids, HashSet::from(["e0", "e1", "e2", "e3"]));
    for change in changes {
        let ops: HashSet<(String, String)> = change["body_patch"]
            .as_array()
            .unwrap()
            .iter()
            .map(|op| (op["op"].as_str().unwrap().to_string(), op["path"].as_str().unwrap().to_string()))
            .collect();
        let expected = [("remove", "/email"), ("remove", "/n"), ("add", "/data"), ("add", "/id"), ("add", "/type")]
            .map(|(op, path)| (op.to_string(), path.to_string()));
        assert!(expected.iter().all(|e| ops.contains(e)), "{change:#}");
        let data = change["body_patch"].as_array().unwrap().iter().find(|op| op["path"] == "/data").unwrap();
        assert_eq!(data["value"], serde_json::json!({"email": "[redacted]", "n": 1}));
    }

    // hostile fails every event (mode = "error"): reported, and the command exits 1.
    let (code, out, _) = diff(&path("hostile"), false);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("new errors 4"), "{out}");
    assert!(out.contains("candidate: error: returned an error: the plugin refused this event"), "{out}");

    // The candidate can be a stored version, through the API.
    let response =
        host.http.post(host.url("/v1/plugins/field-map/dry-run?sha256=") + &plugin_sha("field-map")[..8]).send().await;
    let report: serde_json::Value = response.unwrap().json().await.unwrap();
    assert_eq!(report["summary"]["same"], 4, "{report}");
    assert_eq!(host.get("/v1/plugins/field-map/versions").await["versions"].as_array().unwrap().len(), 1);
    assert_eq!(receiver.all().len(), 4, "a dry run sends nothing");
}

/// A canary serves its share of deliveries (by delivery id: a retry keeps its version),
/// shows each version's counts, is promoted; a failing canary is rolled back by itself,
/// with a `hookwasm.plugin.rolled_back` event, and what it held is delivered.
#[tokio::test(flavor = "multi_thread")]
async fn a_canary_takes_its_share_and_a_failing_one_is_rolled_back() {
    let receiver = TestReceiver::start().await;
    let config = format!(
        "{LOCAL_DELIVERY}{}{}{}[plugins]\ncanary_min_calls = 20\n",
        webhook("w", &receiver.url("/w"), r#"["message.created"]"#, "plugin = \"shape\""),
        webhook(
            "w2",
            &receiver.url("/w2"),
            r#"["conversation.created"]"#,
            "plugin = \"fail\"\nplugin_config = { mode = \"error\" }"
        ),
        webhook("ops", &receiver.url("/ops"), r#"["hookwasm.plugin.*"]"#, "")
    );
    let host = TestHost::start(&config, &[]);
    let (field_map, pass, hostile) = (plugin_sha("field-map"), plugin_sha("pass-through"), plugin_sha("hostile"));
    assert_eq!(cli(&host, &["plugins", "deploy", "shape", &path("field-map")]).0, 0);
    assert_eq!(cli(&host, &["plugins", "deploy", "shape", &path("pass-through"), "--no-activate"]).0, 0);
    let (code, out, err) = cli(&host, &["plugins", "activate", "shape", &pass[..12], "--percent", "10"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("canary {pass} on 10% of deliveries")), "{out}");

    // Every fifth of the first hundred requests fails: each retry must carry the same body.
    let first: Vec<Answer> = (0..100).map(|i| Answer::status(if i % 5 == 0 { 500 } else { 200 })).collect();
    receiver.script("/w", &first, Answer::status(200));
    let events = 1000;
    for i in 0..events {
        post(&host, &format!("c{i}")).await;
    }
    let received = receiver.wait_for("/w", events + 20, SETTLE).await;
    let mut bodies: HashMap<String, Vec<bool>> = HashMap::new();
    for request in &received {
        let id = request.headers["webhook-id"].to_str().unwrap().to_string();
        bodies.entry(id).or_default().push(is_envelope(&request.json()));
    }
    // A retry may itself meet a 500: twenty requests were retries, of up to twenty deliveries.
    assert_eq!(bodies.values().map(|shapes| shapes.len() - 1).sum::<usize>(), 20, "twenty retries");
    assert!(bodies.values().filter(|shapes| shapes.len() > 1).count() >= 10);
    assert!(bodies.values().all(|shapes| shapes.iter().all(|s| *s == shapes[0])), "a retry keeps its version");
    let canary = bodies.values().filter(|shapes| shapes[0]).count() as u64;
    assert!((60..=140).contains(&canary), "10% of {events} within tolerance: {canary}");
    let status = host
        .wait_plugin("shape", SETTLE, |p| {
            let counts = &p["canary"];
            counts["candidate"]["transforms"].as_u64() == Some(canary)
                && counts["serving"]["transforms"].as_u64() == Some(events as u64 - canary)
                && counts["candidate"]["delivered"].as_u64().unwrap_or(0)
                    + counts["serving"]["delivered"].as_u64().unwrap_or(0)
                    == events as u64
        })
        .await;
    assert_eq!(status["sha256"], field_map.as_str());
    assert_eq!(status["canary"]["percent"], 10);

    let (code, out, err) = cli(&host, &["plugins", "promote", "shape"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("shape serving {pass}")) && !out.contains("canary"), "{out}");
    let status = host.wait_plugin("shape", SETTLE, |p| p["sha256"] == pass.as_str()).await;
    assert_eq!(status["canary"], serde_json::Value::Null);

    // hostile refuses every event of w2 (its config asks it to), where pass-through delivers.
    assert_eq!(cli(&host, &["plugins", "deploy", "fail", &path("pass-through")]).0, 0);
    assert_eq!(cli(&host, &["plugins", "deploy", "fail", &path("hostile"), "--no-activate"]).0, 0);
    let (code, _, err) = cli(&host, &["plugins", "activate", "fail", &hostile[..12], "--percent", "50"]);
    assert_eq!(code, 0, "{err}");
    for i in 0..100 {
        let body = format!(r#"{{"id": "f{i}", "type": "conversation.created", "data": {{}}}}"#);
        assert_eq!(host.post_event(&body).await.0, 202);
    }
    let alert = receiver.wait_for("/ops", 1, SETTLE).await.remove(0).json();
    assert_eq!(alert["type"], "hookwasm.plugin.rolled_back", "{alert}");
    assert_eq!(alert["data"]["plugin"], "fail");
    assert_eq!(
        (&alert["data"]["candidate"], &alert["data"]["serving"]),
        (&hostile.clone().into(), &pass.clone().into())
    );
    assert!(alert["data"]["reason"].as_str().unwrap().contains("held"), "{alert}");
    let status = host.wait_plugin("fail", SETTLE, |p| p["canary"].is_null()).await;
    assert_eq!(status["sha256"], pass.as_str());
    let (_, out, _) = cli(&host, &["plugins", "versions", "fail"]);
    assert!(out.contains(&format!("{pass}  serving")) && !out.contains("canary"), "{out}");
    // What the canary held goes out through the serving version.
    let delivered = receiver.wait_for("/w2", 100, SETTLE).await;
    let ids: HashSet<String> = delivered.iter().map(|r| r.json()["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 100);
}
