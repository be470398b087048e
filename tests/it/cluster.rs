//! Several hosts on one PostgreSQL database (a throwaway server, one database per test),
//! against the real binary.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use hookwasm::store::postgres::throwaway::Database;

use crate::host::{Answer, TestHost, TestReceiver, webhook};

/// `[delivery]` for the local receiver, with a 1 s timeout: the lease a killed host leaves
/// behind (five times the timeout plus 30 s) expires in 35 s.
const DELIVERY: &str = "[delivery]\nallow_http = true\nallow_private_networks = true\nretry_schedule = [\"0s\", \"200ms\", \"200ms\", \"200ms\"]\ntimeout = \"1s\"\n";

fn config(database: &Database) -> String {
    format!("{DELIVERY}[store]\nbackend = \"postgres\"\nurl = \"{}\"\n", database.url)
}

/// Two hosts on `database`, with `webhooks` (`[[webhooks]]` TOML) applied through host a's
/// CLI and seen by host b.
async fn two_hosts(database: &Database, webhooks: &str, delivery: &str) -> (TestHost, TestHost) {
    let config = config(database).replace(DELIVERY, delivery);
    let (a, b) = (TestHost::start(&config, &[]), TestHost::start(&config, &[]));
    let file = a.dir.path().join("webhooks.toml");
    std::fs::write(&file, webhooks).unwrap();
    let output = a.cli(&["webhooks", "apply", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("created"));
    let count = webhooks.matches("[[webhooks]]").count();
    eventually(&b, "/v1/webhooks", |list| list["webhooks"].as_array().is_some_and(|w| w.len() == count)).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_share_the_queue_and_the_survivor_delivers_what_a_killed_host_accepted() {
    let Some(database) = Database::create().await else { return };
    let receiver = TestReceiver::start().await;
    // Slow answers, so the killed host dies with deliveries in flight under its leases.
    receiver.script("/raw", &[], Answer { status: 200, retry_after: None, delay: Duration::from_millis(300) });
    let (mut a, b) = two_hosts(&database, &webhook("raw", &receiver.url("/raw"), r#"["*"]"#, ""), DELIVERY).await;

    let mut accepted: HashMap<String, bool> = HashMap::new();
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        let on_a = i % 2 == 0 && started.elapsed() < Duration::from_millis(700);
        if i % 2 == 0 && !on_a && a.is_running() {
            a.kill();
        }
        let host = if on_a { &a } else { &b };
        let (status, _) = host.post_event(&format!(r#"{{"id": "c-{i}", "type": "a.b", "data": {{"n": {i}}}}}"#)).await;
        if status == 202 {
            accepted.insert(format!("c-{i}"), on_a);
        }
        i += 1;
    }
    assert!(!a.is_running());
    let on_a: Vec<&String> = accepted.iter().filter(|(_, on_a)| **on_a).map(|(id, _)| id).collect();
    assert!(on_a.len() > 10 && accepted.len() > on_a.len() + 10, "{} on a of {}", on_a.len(), accepted.len());

    // Every accepted event arrives; what the killed host held under a lease, once it expires.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let delivered: HashSet<String> =
            receiver.received("/raw").iter().filter_map(|r| r.json()["id"].as_str().map(String::from)).collect();
        let missing = accepted.keys().filter(|id| !delivered.contains(*id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} accepted events never delivered\n{}",
            accepted.len(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut bodies: HashMap<String, Vec<u8>> = HashMap::new();
    for request in receiver.all() {
        assert!(request.verified);
        if let Some(previous) = bodies.insert(request.webhook_id.clone(), request.body.clone()) {
            assert_eq!(previous, request.body, "a duplicate {} carried other bytes", request.webhook_id);
        }
    }
    // The survivor answers for events the dead host accepted, and records them delivered:
    // those the dead host was sending once its leases expire, sent again by the survivor.
    let deadline = Instant::now() + Duration::from_secs(90);
    for id in &on_a {
        loop {
            let event = b.get(&format!("/v1/events/{id}")).await;
            assert_eq!(event["event"]["id"], id.as_str());
            if event["deliveries"][0]["state"] == "delivered" {
                break;
            }
            assert!(Instant::now() < deadline, "{id} never recorded delivered: {event:#}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let sent_twice = bodies.len() < receiver.all().len();
    assert!(sent_twice, "the killed host left no delivery in flight: the takeover was not exercised");
}

/// A retry asked for on one host while the other is sending: never two sends at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_retry_on_one_host_waits_for_the_other_hosts_attempt() {
    let Some(database) = Database::create().await else { return };
    let receiver = TestReceiver::start().await;
    let slow = Answer { status: 200, retry_after: None, delay: Duration::from_millis(1500) };
    receiver.script("/slow", &[slow], Answer::status(200));
    let delivery = DELIVERY.replace("timeout = \"1s\"", "timeout = \"5s\"");
    let (a, b) = two_hosts(&database, &webhook("slow", &receiver.url("/slow"), r#"["*"]"#, ""), &delivery).await;
    a.post_event(r#"{"id": "race", "type": "a.b", "data": {}}"#).await;
    let first = receiver.wait_for("/slow", 1, Duration::from_secs(20)).await;
    let retry = b.http.post(b.url(&format!("/v1/deliveries/{}/retry", first[0].webhook_id))).send().await.unwrap();
    assert_eq!(retry.status(), 202);
    let both = receiver.wait_for("/slow", 2, Duration::from_secs(20)).await;
    assert!(
        both[1].at.duration_since(both[0].at) >= Duration::from_millis(1400),
        "the retry went out {:?} after the first send began, while it was still in flight",
        both[1].at.duration_since(both[0].at)
    );
}

/// Webhooks created, disabled and enabled through one host's API take effect on the other
/// within about a second; a generated secret, and a rotated one, live in the database, so
/// both hosts sign alike.
#[tokio::test(flavor = "multi_thread")]
async fn webhook_changes_on_one_host_take_effect_on_the_other() {
    let Some(database) = Database::create().await else { return };
    let receiver = TestReceiver::start().await;
    let config = config(&database);
    let a = TestHost::start(&config, &[]);
    let b = TestHost::start(&config, &[]);
    let definition = serde_json::json!({"id": "api", "url": receiver.url("/api"), "events": ["*"]});
    assert_eq!(a.http.post(a.url("/v1/webhooks")).json(&definition).send().await.unwrap().status(), 201);
    let secret = a.get("/v1/webhooks/api/secret").await["secret"].as_str().unwrap().to_string();
    eventually(&b, "/v1/webhooks/api", |w| w["active"] == true).await;
    assert_eq!(b.get("/v1/webhooks/api/secret").await["secret"], secret.as_str(), "one secret for both hosts");
    let (status, _) = b.post_event(r#"{"id": "via-b", "type": "a.b", "data": {}}"#).await;
    assert_eq!(status, 202);
    let got = receiver.wait_for("/api", 1, Duration::from_secs(10)).await;
    let verify = |secret: &str, request: &crate::host::Received| {
        standardwebhooks::Webhook::new(secret).unwrap().verify(&request.body, &request.headers).is_ok()
    };
    assert!(verify(&secret, &got[0]), "host b signs with the secret generated on host a");

    assert_eq!(a.http.post(a.url("/v1/webhooks/api/disable")).send().await.unwrap().status(), 200);
    eventually(&b, "/v1/webhooks/api", |w| w["active"] == false).await;
    let (_, answer) = b.post_event(r#"{"id": "while-off", "type": "a.b", "data": {}}"#).await;
    assert_eq!(answer["deliveries"], 0, "disabled on a, so not subscribed on b");
    assert_eq!(a.http.post(a.url("/v1/webhooks/api/enable")).send().await.unwrap().status(), 200);
    eventually(&b, "/v1/webhooks/api", |w| w["active"] == true).await;

    assert_eq!(a.http.post(a.url("/v1/webhooks/api/rotate-secret")).send().await.unwrap().status(), 200);
    let rotated = a.get("/v1/webhooks/api/secret").await["secret"].as_str().unwrap().to_string();
    assert_ne!(rotated, secret);
    eventually(&b, "/v1/webhooks/api/secret", |s| s["secret"] == rotated.as_str()).await;
    b.post_event(r#"{"id": "after-rotation", "type": "a.b", "data": {}}"#).await;
    let got = receiver.wait_for("/api", 2, Duration::from_secs(10)).await;
    assert!(verify(&rotated, &got[1]) && verify(&secret, &got[1]), "b signs with the new and the previous secret");

    // Rotated on a, then at once replaced on b without a secret: b keeps the rotated secret
    // (read from the database, not from b's copy, which may not have seen the rotation yet).
    assert_eq!(a.http.post(a.url("/v1/webhooks/api/rotate-secret")).send().await.unwrap().status(), 200);
    let again = a.get("/v1/webhooks/api/secret").await["secret"].as_str().unwrap().to_string();
    let mut moved = definition.clone();
    moved["url"] = receiver.url("/moved").into();
    let replaced = b.http.put(b.url("/v1/webhooks/api")).json(&moved).send().await.unwrap();
    assert_eq!(replaced.status(), 200, "{}", replaced.text().await.unwrap());
    for host in [&a, &b] {
        eventually(host, "/v1/webhooks/api", |w| w["url"] == receiver.url("/moved").as_str()).await;
        assert_eq!(host.get("/v1/webhooks/api/secret").await["secret"], again.as_str());
    }

    assert_eq!(a.http.delete(a.url("/v1/webhooks/api")).send().await.unwrap().status(), 204);
    eventually(&b, "/v1/webhooks/api", |w| w["code"] == "not_found").await;
}

/// A version deployed on one host (a file in its folder, or an upload) is stored in the
/// database and serves on every host; every host lists the version each live host serves,
/// and a host that stops drops out of the list.
#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_deployed_on_one_host_serves_on_every_host() {
    let Some(database) = Database::create().await else { return };
    let named = |name: &str| format!("{}host_id = \"{name}\"\n", config(&database));
    let a = TestHost::start(&named("hw-a"), &["slack-notify"]);
    let mut b = TestHost::start(&named("hw-b"), &[]);
    let sha =
        a.wait_plugin("slack-notify", Duration::from_secs(10), |p| p["state"] == "loaded").await["sha256"].clone();
    let on_b = b.wait_plugin("slack-notify", Duration::from_secs(10), |p| p["sha256"] == sha).await;
    assert_eq!(on_b["file"], serde_json::Value::Null, "b has no such file: it loaded the stored version");
    let on_b = eventually(&b, "/v1/plugins", |list| {
        plugin(list, "slack-notify")["hosts"].as_array().is_some_and(|h| h.len() == 2)
    })
    .await;
    let slack = plugin(&on_b, "slack-notify");
    assert_eq!(slack["drift"], false, "{slack}");
    assert_eq!(slack["hosts"], serde_json::json!([{"host": "hw-a", "sha256": sha}, {"host": "hw-b", "sha256": sha}]));
    let output = b.cli(&["plugins"]);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("2 alike"), "{table}");

    // An upload to b serves on a too; a rollback on a serves on b.
    let pass = crate::support::plugin_path("pass-through");
    let deployed = b.cli(&["plugins", "deploy", "slack-notify", pass.to_str().unwrap()]);
    assert!(deployed.status.success(), "{}", String::from_utf8_lossy(&deployed.stderr));
    let pass_sha = crate::support::plugin_sha("pass-through");
    a.wait_plugin("slack-notify", Duration::from_secs(10), |p| p["sha256"] == pass_sha.as_str()).await;
    let rollback = a.cli(&["plugins", "activate", "slack-notify", &sha.as_str().unwrap()[..10]]);
    assert!(rollback.status.success(), "{}", String::from_utf8_lossy(&rollback.stderr));
    b.wait_plugin("slack-notify", Duration::from_secs(10), |p| p["sha256"] == sha).await;

    b.terminate();
    eventually(&a, "/v1/plugins", |list| {
        plugin(list, "slack-notify")["hosts"].as_array().is_some_and(|h| h.len() == 1)
    })
    .await;
}

/// The database refusing connections (as while it restarts): ingest answers 503
/// `store_unavailable` with a `Retry-After`, never a 202 for an event it could not store nor a
/// 500; once the database is back, ingest and delivery resume, and every event that got a
/// 202 is delivered.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_outage_refuses_events_and_everything_resumes_when_it_returns() {
    let Some(database) = Database::create().await else { return };
    let receiver = TestReceiver::start().await;
    let host = TestHost::start(&config(&database), &[]);
    let file = host.dir.path().join("webhooks.toml");
    std::fs::write(&file, webhook("sink", &receiver.url("/sink"), r#"["*"]"#, "")).unwrap();
    assert!(host.cli(&["webhooks", "apply", file.to_str().unwrap()]).status.success());
    let mut accepted = HashSet::new();
    let mut post = async |i: usize| {
        let response = host
            .http
            .post(host.url("/v1/events"))
            .header("content-type", "application/json")
            .body(format!(r#"{{"id": "o-{i}", "type": "a.b", "data": {{}}}}"#))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").is_some();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if status == 202 {
            accepted.insert(format!("o-{i}"));
        }
        (status, retry_after, body)
    };
    for i in 0..5 {
        assert_eq!(post(i).await.0, 202);
    }

    let (admin, connection) = tokio_postgres::connect(&database.admin_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let name = &database.name;
    admin.batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).await.unwrap();
    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", &[name]).await.unwrap();
    let mut refused = 0;
    for i in 5..25 {
        let (status, retry_after, body) = post(i).await;
        assert!(status == 503, "answered {status} with the database away: {body}\n{}", host.log());
        assert!(body["code"] == "store_unavailable" && retry_after, "{body}");
        refused += 1;
    }
    assert_eq!(refused, 20);
    let ready = host.http.get(host.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text().await.unwrap();
    assert_eq!(body, r#"{"status":"not_ready"}"#, "only ready or not: the store's error stays in the log");
    let logged = Instant::now() + Duration::from_secs(5);
    while !host.log().contains("not ready: the store does not answer") {
        assert!(Instant::now() < logged, "the cause is not in the log:\n{}", host.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    admin.batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 25;
    while post(i).await.0 != 202 {
        assert!(Instant::now() < deadline, "ingest never resumed\n{}", host.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
        i += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let delivered: HashSet<String> =
            receiver.received("/sink").iter().filter_map(|r| r.json()["id"].as_str().map(String::from)).collect();
        if accepted.is_subset(&delivered) {
            break;
        }
        assert!(Instant::now() < deadline, "{:?} never delivered\n{}", accepted.difference(&delivered), host.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn plugin<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list["plugins"].as_array().and_then(|p| p.iter().find(|p| p["name"] == name)).unwrap_or(&serde_json::Value::Null)
}

/// `GET path` on `host` until `ready` holds (5 s at most).
async fn eventually(host: &TestHost, path: &str, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = host.http.get(host.url(path)).send().await.unwrap();
        let value: serde_json::Value = response.json().await.unwrap_or_default();
        if ready(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "the other host never saw it: {value}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// On PostgreSQL the secrets live in the database: with a secret key they are sealed there, so
/// the `webhooks` table does not reveal them, and every host with the key signs alike.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_in_the_database_are_sealed_with_the_operators_key() {
    use base64::Engine as _;
    let Some(database) = Database::create().await else { return };
    let receiver = TestReceiver::start().await;
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key.path(), base64::engine::general_purpose::STANDARD.encode([5u8; 32])).unwrap();
    let config = config(&database).replacen(
        "[store]",
        &format!("[server]\nsecret_key_file = {:?}\n[store]", key.path().display().to_string()),
        1,
    );
    let (a, b) = (TestHost::start(&config, &[]), TestHost::start(&config, &[]));
    let file = a.dir.path().join("webhooks.toml");
    std::fs::write(&file, webhook("sink", &receiver.url("/sink"), r#"["*"]"#, "")).unwrap();
    assert!(a.cli(&["webhooks", "apply", file.to_str().unwrap()]).status.success());
    let rotated = a.cli(&["webhooks", "rotate-secret", "sink"]);
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let current = String::from_utf8(a.cli(&["webhooks", "secret", "sink"]).stdout).unwrap();

    let (client, connection) = tokio_postgres::connect(&database.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let row = client.query_one("SELECT config FROM webhooks WHERE id = 'sink'", &[]).await.unwrap();
    let stored: String = row.get(0);
    for secret in [crate::host::SECRET, current.trim()] {
        assert!(!stored.contains(secret.trim_start_matches("whsec_")), "{secret} in the clear: {stored}");
    }
    assert!(stored.contains("sealed:v1:"), "{stored}");

    // Both hosts open it: either one signs with the current and the previous secret.
    let event = b.post_sample("message.created").await;
    b.settled_deliveries(&event, Duration::from_secs(20)).await;
    let received = receiver.wait_for("/sink", 1, Duration::from_secs(10)).await;
    assert!(received[0].verified, "signed with the previous secret too, during the grace period");
}
