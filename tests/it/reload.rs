//! Hot reload against the real binary: plugin files replaced, corrupted, deleted and restored
//! while events flow, and config edits, without losing or mis-sending a delivery.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::host::{LOCAL_DELIVERY, TestHost, TestReceiver, delivery_for, webhook};
use crate::support::plugin_path;

const SETTLE: Duration = Duration::from_secs(30);

fn sha(crate_name: &str) -> String {
    crate::support::plugin_sha(crate_name)
}

/// field-map without a mapping delivers `data`; pass-through delivers the envelope.
fn body_matches_plugin(body: &serde_json::Value, plugin_sha: &str) -> bool {
    if plugin_sha == sha("field-map") {
        body.get("conversation").is_some() && body.get("type").is_none()
    } else if plugin_sha == sha("pass-through") {
        body.get("type").is_some() && body.get("data").is_some()
    } else {
        false
    }
}

pub async fn post_numbered(host: &TestHost, prefix: &str, i: usize) -> String {
    let id = format!("{prefix}-{i}");
    let body = format!(r#"{{"id": "{id}", "type": "message.created", "data": {{"conversation": {{"id": "c{i}"}}}}}}"#);
    let (status, answer) = host.post_event(&body).await;
    assert_eq!(status, 202, "{answer}");
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn replacing_a_plugin_while_events_flow_loses_nothing() {
    let (receiver, host) = shape_host().await;
    assert_eq!(host.wait_plugin("shape", SETTLE, |_| true).await["sha256"], sha("field-map").as_str());

    let mut ids = Vec::new();
    for i in 0..60 {
        if i == 30 {
            host.deploy("pass-through", "shape");
        }
        ids.push(post_numbered(&host, "swap", i).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    host.wait_plugin("shape", SETTLE, |p| p["sha256"] == sha("pass-through")).await;
    let after_swap = post_numbered(&host, "after", 0).await;
    ids.push(after_swap.clone());

    let mut used = HashSet::new();
    for id in &ids {
        let deliveries = host.settled_deliveries(id, SETTLE).await;
        let delivery = delivery_for(&deliveries, "w");
        assert_eq!(delivery["state"], "delivered", "{delivery}");
        used.insert(delivery["plugin_sha"].as_str().unwrap().to_string());
    }
    assert_eq!(used, HashSet::from([sha("field-map"), sha("pass-through")]), "both versions served");
    let last = host.settled_deliveries(&after_swap, SETTLE).await;
    assert_eq!(
        delivery_for(&last, "w")["plugin_sha"],
        sha("pass-through").as_str(),
        "new deliveries use the new version"
    );

    let received = receiver.wait_for("/w", ids.len(), SETTLE).await;
    assert_eq!(received.len(), ids.len(), "each delivery sent once");
    let sha_by_delivery = delivery_shas(&host, &ids).await;
    for request in &received {
        let plugin_sha = &sha_by_delivery[&request.webhook_id];
        assert!(body_matches_plugin(&request.json(), plugin_sha), "body not made by {plugin_sha}: {}", request.json());
    }
}

async fn delivery_shas(host: &TestHost, ids: &[String]) -> HashMap<String, String> {
    let mut shas = HashMap::new();
    for id in ids {
        for delivery in host.settled_deliveries(id, SETTLE).await {
            if let Some(sha) = delivery["plugin_sha"].as_str() {
                shas.insert(delivery["id"].as_str().unwrap().to_string(), sha.to_string());
            }
        }
    }
    shas
}

/// A host with webhook `w` -> `/w` using plugin `shape`, deployed as field-map and loaded.
async fn shape_host() -> (TestReceiver, TestHost) {
    let receiver = TestReceiver::start().await;
    let config =
        [LOCAL_DELIVERY.to_string(), webhook("w", &receiver.url("/w"), r#"["message.created"]"#, "plugin = \"shape\"")]
            .concat();
    let host = TestHost::start(&config, &[]);
    host.deploy("field-map", "shape");
    host.wait_plugin("shape", SETTLE, |p| p["state"] == "loaded").await;
    (receiver, host)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_file_keeps_the_previous_version_serving() {
    let (_receiver, host) = shape_host().await;

    std::fs::write(host.plugins_dir().join("shape.wasm"), b"\0asm\x0d\0\x01\0garbage").unwrap();
    let failed = host.wait_plugin("shape", SETTLE, |p| p["state"] == "failed").await;
    assert!(failed["last_error"].as_str().unwrap().contains("invalid component"), "{failed}");
    assert_eq!(failed["sha256"], sha("field-map").as_str(), "the previous version keeps serving");
    assert_eq!(failed["failures"], 1);
    assert!(host.log().contains("plugin failed to load"), "a log line names the file and cause");
    let metrics = host.metrics().await;
    assert!(metrics.contains("hookwasm_plugin_loads_total{plugin=\"shape\",result=\"failed\"} 1"), "{metrics}");

    let during = post_numbered(&host, "during", 0).await;
    let deliveries = host.settled_deliveries(&during, SETTLE).await;
    assert_eq!(delivery_for(&deliveries, "w")["state"], "delivered");
    assert_eq!(delivery_for(&deliveries, "w")["plugin_sha"], sha("field-map").as_str());

    // A half-written file is reported too, and the rest of it fixes things.
    let good = std::fs::read(plugin_path("pass-through")).unwrap();
    std::fs::write(host.plugins_dir().join("shape.wasm"), &good[..good.len() / 2]).unwrap();
    host.wait_plugin("shape", SETTLE, |p| p["failures"] == 2).await;
    std::fs::write(host.plugins_dir().join("shape.wasm"), &good).unwrap();
    let loaded = host.wait_plugin("shape", SETTLE, |p| p["state"] == "loaded").await;
    assert_eq!(loaded["sha256"], sha("pass-through").as_str());
    assert_eq!(loaded["last_error"], serde_json::Value::Null);
    assert_eq!(loaded["webhooks"], serde_json::json!(["w"]));

    // Putting the serving version back after a bad file says loaded again, not failed.
    std::fs::write(host.plugins_dir().join("shape.wasm"), b"not wasm").unwrap();
    host.wait_plugin("shape", SETTLE, |p| p["failures"] == 3).await;
    std::fs::write(host.plugins_dir().join("shape.wasm"), &good).unwrap();
    let restored = host.wait_plugin("shape", SETTLE, |p| p["state"] == "loaded").await;
    assert_eq!((&restored["sha256"], &restored["last_error"]), (&sha("pass-through").into(), &serde_json::Value::Null));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_that_rejects_the_config_is_not_swapped_in() {
    let receiver = TestReceiver::start().await;
    let extra = "plugin = \"notify\"\nplugin_config = { base_url = \"https://desk.example.com\" }";
    let config =
        [LOCAL_DELIVERY.to_string(), webhook("w", &receiver.url("/w"), r#"["message.created"]"#, extra)].concat();
    let host = TestHost::start(&config, &[]);
    host.deploy("slack-notify", "notify");
    host.wait_plugin("notify", SETTLE, |p| p["state"] == "loaded").await;
    // event-filter refuses the unknown key base_url.
    host.deploy("event-filter", "notify");
    let failed = host.wait_plugin("notify", SETTLE, |p| p["state"] == "failed").await;
    assert!(failed["last_error"].as_str().unwrap().contains("rejected the plugin_config of webhook `w`"), "{failed}");
    assert_eq!(failed["sha256"], sha("slack-notify").as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_plugin_holds_deliveries_until_it_returns() {
    let (receiver, host) = shape_host().await;
    std::fs::remove_file(host.plugins_dir().join("shape.wasm")).unwrap();
    host.wait_plugin("shape", SETTLE, |p| p["state"] == "unloaded").await;

    let held = post_numbered(&host, "held", 0).await;
    let deliveries = host.settled_deliveries(&held, SETTLE).await;
    assert_eq!(delivery_for(&deliveries, "w")["state"], "held");
    assert!(receiver.all().is_empty(), "never sent untransformed");

    host.deploy("field-map", "shape");
    let got = receiver.wait_for("/w", 1, SETTLE).await;
    assert!(body_matches_plugin(&got[0].json(), &sha("field-map")));
    let deliveries = host.settled_deliveries(&held, SETTLE).await;
    assert_eq!(delivery_for(&deliveries, "w")["state"], "delivered");
}

/// A plugin whose first compile takes seconds (a JavaScript runtime) does not hold back
/// another plugin's reload: each change is applied on its own, and each compile runs on
/// threads of its own.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_compile_does_not_hold_back_other_reloads() {
    let big = crate::support::script_plugin_path("slack-notify-js");
    let (_receiver, host) = shape_host().await;
    let tmp = host.plugins_dir().join(".big.wasm.tmp");
    std::fs::copy(&big, &tmp).unwrap();
    std::fs::rename(&tmp, host.plugins_dir().join("big.wasm")).unwrap();
    // Long enough for the large plugin's load to be under way, far shorter than its compile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    host.deploy("pass-through", "shape");
    host.wait_plugin("shape", SETTLE, |p| p["sha256"] == sha("pass-through")).await;
    let plugins = host.get("/v1/plugins").await;
    let big_status = plugins["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "big").cloned();
    assert!(
        big_status.as_ref().is_none_or(|status| status["state"] != "loaded"),
        "the other reload waited for the large compile: {big_status:?}"
    );
    host.wait_plugin("big", SETTLE, |p| p["state"] == "loaded").await;
}

/// A change the watcher never reports (the file rewritten through a hard link outside the
/// watched folder) is found by the periodic rescan and applied.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_the_watcher_missed_is_applied_by_the_rescan() {
    let (_receiver, host) = shape_host().await;
    let elsewhere = host.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let link = elsewhere.join("shape-link.wasm");
    std::fs::hard_link(host.plugins_dir().join("shape.wasm"), &link).unwrap();
    std::fs::write(&link, std::fs::read(plugin_path("pass-through")).unwrap()).unwrap();
    host.wait_plugin("shape", SETTLE, |p| p["sha256"] == sha("pass-through")).await;
    assert!(host.log().contains("plugin file changed without a watcher event"), "{}", host.log());
}

/// Hundreds of rapid rewrites, partial writes and renames of several plugins under steady
/// load: the host stays up, every delivery is made by a valid version, every bad file is
/// reported.
#[tokio::test(flavor = "multi_thread")]
async fn torture() {
    let receiver = TestReceiver::start().await;
    let names = ["p1", "p2", "p3"];
    let mut config = LOCAL_DELIVERY.to_string();
    for name in names {
        config += &webhook(
            name,
            &receiver.url(&format!("/{name}")),
            r#"["message.created"]"#,
            &format!("plugin = \"{name}\""),
        );
    }
    let host = TestHost::start(&config, &[]);
    for name in names {
        host.deploy("field-map", name);
    }
    for name in names {
        host.wait_plugin(name, SETTLE, |p| p["state"] == "loaded").await;
    }
    let valid = HashSet::from([sha("field-map"), sha("pass-through")]);
    let variants = ["field-map", "pass-through"];
    let good: Vec<Vec<u8>> = variants.iter().map(|v| std::fs::read(plugin_path(v)).unwrap()).collect();

    let load = {
        let base = host.url("/v1/events");
        let http = host.http.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..400 {
                let id = format!("t-{i}");
                let body = format!(
                    r#"{{"id": "{id}", "type": "message.created", "data": {{"conversation": {{"id": "c{i}"}}}}}}"#
                );
                let response =
                    http.post(&base).header("content-type", "application/json").body(body).send().await.unwrap();
                assert_eq!(response.status(), 202);
                ids.push(id);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ids
        })
    };

    let started = Instant::now();
    let mut bad_files = 0;
    let mut operations = 0;
    let mut failures_seen: HashMap<&str, u64> = names.iter().map(|n| (*n, 0)).collect();
    for round in 0..60 {
        let name = names[round % names.len()];
        let path = host.plugins_dir().join(format!("{name}.wasm"));
        // Rapid good rewrites: rename-into-place and in-place, alternating versions.
        for k in 0..4 {
            let bytes = &good[(round + k) % 2];
            if k % 2 == 0 {
                let tmp = host.plugins_dir().join(format!(".{name}.{k}.tmp"));
                std::fs::write(&tmp, bytes).unwrap();
                std::fs::rename(&tmp, &path).unwrap();
            } else {
                std::fs::write(&path, bytes).unwrap();
            }
            operations += 1;
        }
        // Then a bad file (corrupt or half-written), left until it is reported.
        let bytes = &good[round % 2];
        if round % 2 == 0 {
            std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
        } else {
            std::fs::write(&path, format!("not wasm {round}")).unwrap();
        }
        operations += 1;
        bad_files += 1;
        let expected = failures_seen[name] + 1;
        let status = host.wait_plugin(name, SETTLE, |p| p["failures"].as_u64() >= Some(expected)).await;
        failures_seen.insert(name, status["failures"].as_u64().unwrap());
        // And good again.
        std::fs::write(&path, &good[(round + 1) % 2]).unwrap();
        operations += 1;
    }
    let ids = load.await.unwrap();
    for name in names {
        host.wait_plugin(name, SETTLE, |p| p["state"] == "loaded").await;
    }
    let reported: u64 = failures_seen.values().sum();
    assert!(reported >= bad_files, "{reported} reports for {bad_files} bad files");
    assert!(operations >= 300, "{operations}");

    for id in &ids {
        for delivery in host.settled_deliveries(id, SETTLE).await {
            assert_eq!(delivery["state"], "delivered", "{delivery}");
            assert!(valid.contains(delivery["plugin_sha"].as_str().unwrap()), "{delivery}");
        }
    }
    let shas = delivery_shas(&host, &ids).await;
    for request in receiver.all() {
        assert!(body_matches_plugin(&request.json(), &shas[&request.webhook_id]));
    }
    assert_eq!(receiver.all().len(), ids.len() * names.len());
    println!(
        "torture: {operations} file operations, {bad_files} bad files, {} deliveries in {:?}",
        ids.len() * 3,
        started.elapsed()
    );
}
