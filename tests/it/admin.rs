//! The operator surface against the real binary: the admin guard, `events show`, delivery
//! listing, retry and replay, over HTTP and through the CLI.

use std::process::Command;
use std::time::Duration;

use crate::host::{Answer, LOCAL_DELIVERY, SLACK_NOTIFY, TestHost, TestReceiver, delivery_for, webhook};

const SETTLE: Duration = Duration::from_secs(20);

fn cli(host: &TestHost, args: &[&str]) -> (bool, String, String) {
    let output = host.cli(args);
    (output.status.success(), String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_needs_its_token_and_ingest_does_not() {
    let config = format!("{LOCAL_DELIVERY}[server]\nadmin_token = \"admin-token-0123456789\"\n");
    let host = TestHost::start(&config, &[]);
    for path in ["/v1/plugins", "/metrics", "/v1/deliveries", "/v1/events/x"] {
        let response = host.http.get(host.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized");
        let ok = host.http.get(host.url(path)).bearer_auth("admin-token-0123456789").send().await.unwrap();
        assert!(ok.status() == 200 || ok.status() == 404, "{path}: {}", ok.status());
    }
    let (status, _) = host.post_event(r#"{"type": "a.b", "data": {}}"#).await;
    assert_eq!(status, 202);
    assert_eq!(host.http.get(host.url("/healthz")).send().await.unwrap().status(), 200);

    let (ok, _, stderr) = cli(&host, &["plugins"]);
    assert!(!ok && stderr.contains("answered 401: missing or wrong admin bearer token"), "{stderr}");
    let with_token = Command::new(env!("CARGO_BIN_EXE_hookwasm"))
        .args(["plugins", "--server", &host.url("")])
        .env("HOOKWASM_ADMIN_TOKEN", "admin-token-0123456789")
        .output()
        .unwrap();
    assert!(with_token.status.success());
    assert!(String::from_utf8(with_token.stdout).unwrap().starts_with("NAME"));
}

#[tokio::test(flavor = "multi_thread")]
async fn events_show_says_why_each_webhook_did_or_did_not_get_the_event() {
    let receiver = TestReceiver::start().await;
    let config = [
        LOCAL_DELIVERY.to_string(),
        webhook("sent", &receiver.url("/sent"), r#"["message.created"]"#, ""),
        webhook("other-types", &receiver.url("/o"), r#"["conversation.*"]"#, ""),
        webhook(
            "vip-only",
            &receiver.url("/v"),
            r#"["message.created"]"#,
            "plugin = \"event-filter\"\nplugin_config = { labels = \"vip\" }",
        ),
        webhook("no-plugin", &receiver.url("/n"), r#"["message.created"]"#, "plugin = \"missing\""),
        webhook("off", &receiver.url("/off"), r#"["message.created"]"#, "enabled = false"),
    ]
    .concat();
    let host = TestHost::start(&config, &["event-filter"]);
    let id = host.post_sample("message.created").await;
    host.settled_deliveries(&id, SETTLE).await;

    let event = host.get(&format!("/v1/events/{id}")).await;
    assert_eq!(event["event"]["type"], "message.created");
    let why = |webhook: &str| {
        event["webhooks"].as_array().unwrap().iter().find(|w| w["webhook"] == webhook).unwrap()["why"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(why("sent"), "delivered");
    assert_eq!(why("other-types"), "not subscribed to message.created (events: conversation.*)");
    assert_eq!(why("vip-only"), "skipped by its plugin: no label in vip");
    assert!(why("no-plugin").starts_with("held: plugin `missing` is not loaded"), "{}", why("no-plugin"));
    assert_eq!(why("off"), "disabled in its configuration");

    let (ok, stdout, _) = cli(&host, &["events", "show", &id]);
    assert!(ok);
    assert!(stdout.contains("other-types") && stdout.contains("not subscribed to message.created"), "{stdout}");
    let missing = host.http.get(host.url("/v1/events/evt_nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let (ok, _, stderr) = cli(&host, &["events", "show", "evt_nope"]);
    assert!(!ok && stderr.contains("answered 404: no event evt_nope"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_can_be_listed_retried_and_replayed() {
    let receiver = TestReceiver::start().await;
    receiver.script("/down", &[Answer::status(500), Answer::status(500), Answer::status(500)], Answer::status(200));
    let config = format!(
        "[delivery]\nallow_http = true\nallow_private_networks = true\nretry_schedule = [\"0s\"]\n{}",
        webhook("down", &receiver.url("/down"), r#"["message.created"]"#, "")
    );
    let host = TestHost::start(&config, &[]);
    let mut ids = Vec::new();
    for i in 0..3 {
        let (_, answer) =
            host.post_event(&format!(r#"{{"id": "r{i}", "type": "message.created", "data": {{}}}}"#)).await;
        ids.push(answer["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        assert_eq!(delivery_for(&host.settled_deliveries(id, SETTLE).await, "down")["state"], "dead");
    }

    let page = host.get("/v1/deliveries?webhook=down&state=dead&limit=2").await;
    assert_eq!(page["deliveries"].as_array().unwrap().len(), 2);
    let before = page["next_before"].as_str().unwrap();
    let rest = host.get(&format!("/v1/deliveries?webhook=down&state=dead&before={before}")).await;
    assert_eq!(rest["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_before"], serde_json::Value::Null);
    let bad = host.http.get(host.url("/v1/deliveries?state=lost")).send().await.unwrap();
    assert_eq!(bad.status(), 400);

    let (ok, stdout, _) = cli(&host, &["deliveries", "list", "--state", "dead"]);
    assert!(ok && stdout.lines().count() == 4 && stdout.contains("dead"), "{stdout}");

    let missing_state = host
        .http
        .post(host.url("/v1/deliveries/replay"))
        .json(&serde_json::json!({"webhook": "down"}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing_state.status(), 400);
    assert_eq!(missing_state.json::<serde_json::Value>().await.unwrap()["field"], "state");

    let (ok, stdout, stderr) = cli(&host, &["deliveries", "replay", "--webhook", "down", "--state", "dead"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "replaying 3 deliveries");
    for id in &ids {
        assert_eq!(delivery_for(&host.settled_deliveries(id, SETTLE).await, "down")["state"], "delivered");
    }

    let delivery = host.get("/v1/deliveries?limit=1").await["deliveries"][0]["id"].as_str().unwrap().to_string();
    let (ok, stdout, _) = cli(&host, &["deliveries", "retry", &delivery]);
    assert!(ok && stdout.contains(&delivery));
    let got = receiver.wait_for("/down", 7, SETTLE).await;
    let resent: Vec<_> = got.iter().filter(|r| r.webhook_id == delivery).collect();
    assert!(resent.len() >= 2 && resent.iter().all(|r| r.body == resent[0].body), "same id, same bytes");
    let (ok, stdout, _) = cli(&host, &["deliveries", "show", &delivery]);
    assert!(ok && stdout.contains("STATUS") && stdout.contains("200"), "{stdout}");
    let unknown = host.http.post(host.url("/v1/deliveries/msg_nope/retry")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_can_be_listed_tested_disabled_and_enabled() {
    let receiver = TestReceiver::start().await;
    let config = [
        LOCAL_DELIVERY.to_string(),
        webhook("slack", &receiver.url("/slack"), r#"["message.created"]"#, SLACK_NOTIFY),
        webhook("off", &receiver.url("/off"), r#"["message.created"]"#, "enabled = false"),
    ]
    .concat();
    let host = TestHost::start(&config, &["slack-notify"]);

    let list = host.get("/v1/webhooks").await;
    let text = list.to_string();
    assert!(!text.contains("whsec_") && !text.contains("secret"), "secrets never leave the server: {text}");
    let slack = list["webhooks"].as_array().unwrap().iter().find(|w| w["id"] == "slack").unwrap();
    assert_eq!(
        slack["read_only"],
        !crate::ON_POSTGRES,
        "config file webhooks are read-only; on PostgreSQL they are applied"
    );
    let (ok, stdout, _) = cli(&host, &["webhooks", "list"]);
    assert!(ok && stdout.lines().count() == 3 && stdout.contains("slack-notify"), "{stdout}");

    let (ok, stdout, stderr) = cli(&host, &["webhooks", "test", "slack"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("action    deliver") && stdout.contains("status    200"), "{stdout}");
    let got = receiver.wait_for("/slack", 1, SETTLE).await;
    assert!(got[0].verified);
    assert!(got[0].json()["text"].as_str().unwrap().starts_with("New message from Ada Okafor"));
    assert!(got[0].webhook_id.starts_with("msg_test_"));

    let (ok, stdout, _) = cli(&host, &["webhooks", "disable", "slack"]);
    assert!(ok && stdout.contains("disabled by an operator"), "{stdout}");
    let (_, answer) = host.post_event(r#"{"type": "message.created", "data": {}}"#).await;
    assert_eq!(answer["deliveries"], 0);
    let (ok, _, _) = cli(&host, &["webhooks", "enable", "slack"]);
    assert!(ok);
    let (_, answer) = host.post_event(r#"{"type": "message.created", "data": {}}"#).await;
    assert_eq!(answer["deliveries"], 1);

    let (ok, _, stderr) = cli(&host, &["webhooks", "enable", "off"]);
    assert!(!ok && stderr.contains("answered 409") && stderr.contains("enabled = false"), "{stderr}");
    let (ok, _, stderr) = cli(&host, &["webhooks", "show", "nope"]);
    assert!(!ok && stderr.contains("answered 404: no webhook nope"), "{stderr}");
    let bad = host.http.post(host.url("/v1/webhooks/slack/test")).body("{oops").send().await.unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_created_through_the_api_are_stored_validated_and_deliver() {
    let receiver = TestReceiver::start().await;
    let config =
        [LOCAL_DELIVERY.to_string(), webhook("from-file", &receiver.url("/file"), r#"["message.created"]"#, "")]
            .concat();
    let mut host = TestHost::start(&config, &["event-filter"]);
    let url = receiver.url("/api");
    let (ok, stdout, stderr) = cli(
        &host,
        &[
            "webhooks",
            "add",
            "--id",
            "api-hook",
            "--url",
            &url,
            "--events",
            "message.*,conversation.created",
            "--plugin",
            "event-filter",
            "--config",
            "private=exclude",
            "--secret",
            crate::host::SECRET,
        ],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("api-hook") && stdout.contains("message.*,conversation.created"), "{stdout}");
    let created = host.get("/v1/webhooks/api-hook").await;
    assert_eq!(created["source"], "api");
    assert_eq!(created["read_only"], false);

    let event = host.post_sample("message.created").await;
    let deliveries = host.settled_deliveries(&event, SETTLE).await;
    assert_eq!(delivery_for(&deliveries, "api-hook")["state"], "delivered");
    assert!(receiver.wait_for("/api", 1, SETTLE).await[0].verified);
    // A test send reports what the plugin did: event-filter keeps the event unchanged.
    let tested = host.http.post(host.url("/v1/webhooks/api-hook/test")).send().await.unwrap();
    let tested: serde_json::Value = tested.json().await.unwrap();
    assert_eq!(tested["action"], "pass", "{tested}");
    assert!(tested["plugin_sha"].is_string() && tested["delivered"] == true, "{tested}");

    // Same rules as the config file, named; the plugin checks its config; ids are unique.
    let post = |body: serde_json::Value| host.http.post(host.url("/v1/webhooks")).json(&body).send();
    let bad_url = post(serde_json::json!({"id": "x", "url": "ftp://h", "events": ["a.b"]})).await.unwrap();
    assert_eq!(bad_url.status(), 422);
    assert!(
        bad_url.json::<serde_json::Value>().await.unwrap()["error"].as_str().unwrap().contains("`url` scheme \"ftp\"")
    );
    let rejected = post(serde_json::json!({"id": "y", "url": url, "events": ["a.b"], "plugin": "event-filter", "plugin_config": {"bogus": "1"}})).await.unwrap();
    assert_eq!(rejected.status(), 422);
    let duplicate = post(serde_json::json!({"id": "from-file", "url": url, "events": ["a.b"]})).await.unwrap();
    assert_eq!(duplicate.status(), 409);
    let unknown_field =
        post(serde_json::json!({"id": "z", "url": url, "events": ["a.b"], "colour": "red"})).await.unwrap();
    assert_eq!(unknown_field.status(), 400);
    if !crate::ON_POSTGRES {
        let read_only = host.http.delete(host.url("/v1/webhooks/from-file")).send().await.unwrap();
        assert_eq!(read_only.status(), 409);
    }

    // Stored: still there after a restart; then deleted.
    host.kill();
    host.spawn();
    assert_eq!(host.get("/v1/webhooks/api-hook").await["source"], "api");
    let (ok, _, stderr) = cli(&host, &["webhooks", "rm", "api-hook"]);
    assert!(ok, "{stderr}");
    let gone = host.http.get(host.url("/v1/webhooks/api-hook")).send().await.unwrap();
    assert_eq!(gone.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn rotating_a_secret_signs_with_both_during_the_grace_period() {
    let receiver = TestReceiver::start().await;
    let config = format!(
        "{LOCAL_DELIVERY}secret_rotation_grace = \"2s\"\n[[webhooks]]\nid = \"r\"\nurl = \"{}\"\nevents = [\"message.created\"]\n",
        receiver.url("/r")
    );
    let host = TestHost::start(&config, &[]);
    let secret = || {
        let (ok, stdout, stderr) = cli(&host, &["webhooks", "secret", "r"]);
        assert!(ok, "{stderr}");
        stdout.lines().next().unwrap().to_string()
    };
    let old = secret();
    assert!(old.starts_with("whsec_"), "{old}");
    if !crate::ON_POSTGRES {
        let file = host.dir.path().join("data/secrets/r");
        assert_eq!(std::fs::read_to_string(file).unwrap(), old, "generated into the data dir on one host");
    }

    let (ok, stdout, stderr) = cli(&host, &["webhooks", "rotate-secret", "r"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("webhooks secret r"), "{stdout}");
    assert!(!stdout.contains("whsec_"), "rotating does not print the secret: {stdout}");
    let new = secret();
    assert_ne!(old, new);
    let (_, shown, _) = cli(&host, &["webhooks", "secret", "r"]);
    assert!(shown.contains("the previous secret signs too until"), "{shown}");

    host.post_event(r#"{"id": "during", "type": "message.created", "data": {}}"#).await;
    let during = receiver.wait_for("/r", 1, SETTLE).await.remove(0);
    let signatures = during.headers["webhook-signature"].to_str().unwrap().split(' ').count();
    assert_eq!(signatures, 2, "new and previous signature");
    for secret in [&old, &new] {
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(&during.body, &during.headers)
            .expect("either secret verifies");
    }

    tokio::time::sleep(Duration::from_millis(2200)).await;
    host.post_event(r#"{"id": "after", "type": "message.created", "data": {}}"#).await;
    let after = receiver.wait_for("/r", 2, SETTLE).await.remove(1);
    assert_eq!(after.headers["webhook-signature"].to_str().unwrap().split(' ').count(), 1);
    assert!(standardwebhooks::Webhook::new(&new).unwrap().verify(&after.body, &after.headers).is_ok());
    assert!(standardwebhooks::Webhook::new(&old).unwrap().verify(&after.body, &after.headers).is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_describes_exactly_the_routes_served() {
    let host = TestHost::start(LOCAL_DELIVERY, &[]);
    let doc = host.get("/v1/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with('3'));
    let paths = doc["paths"].as_object().unwrap();
    for expected in [
        "/v1/events",
        "/v1/events/{id}",
        "/v1/deliveries",
        "/v1/deliveries/replay",
        "/v1/webhooks/{id}/rotate-secret",
        "/v1/plugins/{name}",
        "/v1/plugins/{name}/versions",
        "/v1/plugins/{name}/activate",
        "/v1/plugins/{name}/promote",
        "/v1/plugins/{name}/dry-run",
        "/metrics",
    ] {
        assert!(paths.contains_key(expected), "{expected} missing");
    }
    assert!(doc["components"]["schemas"]["Delivery"].is_object());
    assert!(doc["components"]["schemas"]["WebhookConfig"].is_object());
    let mut checked = 0;
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let url = host.url(&path.replace("{id}", "nope").replace("{name}", "nope"));
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = host.http.request(method.clone(), &url).send().await.unwrap();
            assert_ne!(response.status(), 405, "{method} {path} is documented but not routed");
            let body = response.text().await.unwrap();
            assert!(!body.contains("no such endpoint"), "{method} {path} is documented but not routed");
            checked += 1;
        }
    }
    assert_eq!(checked, 27, "every operation of the API is documented");

    // The other way: every call the console and the CLI make is a documented operation
    // (the console's with its method; the CLI's by path, its methods being chosen at run time).
    let documented: Vec<(String, Vec<String>)> = paths
        .iter()
        .flat_map(|(path, operations)| {
            let segments = segments(path);
            operations.as_object().unwrap().keys().map(move |method| (method.to_uppercase(), segments.clone()))
        })
        .collect();
    let matches = |used: &[String], doc: &[String]| {
        used.len() == doc.len() && used.iter().zip(doc).all(|(u, d)| u == d || u == "{}" || d == "{}")
    };
    let root = crate::support::workspace_root();
    let console = std::fs::read_to_string(root.join("host/console/console.js")).unwrap();
    let mut checked_calls = 0;
    for call in console.split("api(\"").skip(1) {
        let (method, rest) = call.split_once('"').unwrap();
        let literal = rest.trim_start_matches([',', ' ']);
        let (quote, literal) = literal.split_at(1);
        let path = segments(&literal[..literal.find(quote).unwrap()]);
        let known = documented.iter().any(|(m, doc)| m == method && matches(&path, doc));
        assert!(known, "the console calls {method} {path:?}, which is not documented");
        checked_calls += 1;
    }
    let cli =
        ["host/src/main.rs", "host/src/client.rs"].map(|f| std::fs::read_to_string(root.join(f)).unwrap()).concat();
    for call in cli.split("\"/v1/").skip(1) {
        let path = segments(&format!("/v1/{}", &call[..call.find('"').unwrap()]));
        assert!(
            documented.iter().any(|(_, doc)| matches(&path, doc)),
            "the CLI calls {path:?}, which is not documented"
        );
        checked_calls += 1;
    }
    assert!(checked_calls > 40, "found {checked_calls} calls");
}

/// A path's segments, each parameter (`{id}`, `${...}`) as `{}`; a query, and a parameter
/// glued to a segment (a query built in code), left out.
fn segments(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut segment = String::new();
    for c in path.chars() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 && segment.trim_end_matches('$').is_empty() {
                    segment = "{}".into();
                } else if depth == 0 {
                    segment = segment.trim_end_matches('$').to_string();
                }
            }
            '?' if depth == 0 => break,
            '/' if depth == 0 && !segment.is_empty() => out.push(std::mem::take(&mut segment)),
            '/' if depth == 0 => {}
            _ if depth == 0 => segment.push(c),
            _ => {}
        }
    }
    if !segment.is_empty() {
        out.push(segment);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn events_send_posts_files_and_no_secret_or_token_reaches_the_log() {
    let receiver = TestReceiver::start().await;
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("secret.key");
    let key = "c2VjcmV0LWtleS1zZWNyZXQta2V5LXNlY3JldC1rZXk=";
    std::fs::write(&key_file, key).unwrap();
    let config = format!(
        "{LOCAL_DELIVERY}[server]\ningest_token = \"ingest-token-0123456789\"\nadmin_token = \"admin-token-0123456789\"\nsecret_key_file = {:?}\n{}",
        key_file.display().to_string(),
        webhook("w", &receiver.url("/w"), r#"["message.created"]"#, "")
    );
    let host = TestHost::start(&config, &[]);
    let wrong = host.http.get(host.url("/v1/webhooks")).bearer_auth("wrong-token-0123456789").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let body = wrong.text().await.unwrap();
    assert!(!body.contains("wrong-token") && !body.contains("admin-token"), "{body}");
    let sample = crate::support::sample_path("message.created");
    let send = |token: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hookwasm"));
        command.args(["events", "send", sample.to_str().unwrap(), "--server", &host.url("")]);
        if let Some(token) = token {
            command.env("HOOKWASM_INGEST_TOKEN", token);
        }
        command.output().unwrap()
    };
    let refused = send(None);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stdout).contains(" 401 "));
    let sent = send(Some("ingest-token-0123456789"));
    assert!(sent.status.success());
    assert!(String::from_utf8_lossy(&sent.stdout).contains(r#"202 {"id":"evt_01JDX4M8Q2","deliveries":1}"#));
    receiver.wait_for("/w", 1, SETTLE).await;

    let (ok, _, _) = cli(&host, &["webhooks", "test", "w", "--token", "admin-token-0123456789"]);
    assert!(ok);
    let log = host.log();
    assert!(log.contains("evt_01JDX4M8Q2"), "the log has the event");
    for secret in [
        crate::host::SECRET,
        "ingest-token-0123456789",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "admin-token-0123456789",
        "wrong-token-0123456789",
        key,
    ] {
        assert!(!log.contains(secret), "{secret} leaked into the log");
    }
}

/// `webhooks apply` creates, replaces where a field differs, leaves the rest, and reports a
/// refused entry without stopping at it.
#[tokio::test(flavor = "multi_thread")]
async fn webhooks_apply_creates_replaces_and_leaves_alone() {
    let receiver = TestReceiver::start().await;
    let host = TestHost::start(LOCAL_DELIVERY, &[]);
    let file = host.dir.path().join("apply.toml");
    let apply = |text: String| {
        std::fs::write(&file, text).unwrap();
        cli(&host, &["webhooks", "apply", file.to_str().unwrap()])
    };
    let one = webhook("one", &receiver.url("/one"), r#"["a.b"]"#, "");
    let two = format!("[[webhooks]]\nid = \"two\"\nurl = \"{}\"\nevents = [\"a.b\"]\n", receiver.url("/two"));

    let (ok, stdout, stderr) = apply(format!("{one}{two}"));
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "created    one\ncreated    two\n");
    let (ok, stdout, _) = apply(format!("{one}{two}"));
    assert!(ok && stdout == "unchanged  one\nunchanged  two\n", "{stdout}");
    let generated = cli(&host, &["webhooks", "secret", "two"]).1;

    let moved = two.replace("/two", "/two-moved");
    let (ok, stdout, _) = apply(format!("{one}{moved}"));
    assert!(ok && stdout == "unchanged  one\nreplaced   two\n", "{stdout}");
    assert_eq!(host.get("/v1/webhooks/two").await["url"], receiver.url("/two-moved"));
    assert_eq!(cli(&host, &["webhooks", "secret", "two"]).1, generated, "a secret left out is kept");
    let new_secret = one.replace(crate::host::SECRET, "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let (ok, stdout, _) = apply(format!("{new_secret}{moved}"));
    assert!(ok && stdout == "replaced   one\nunchanged  two\n", "{stdout}");

    let bad = webhook("bad", "ftp://nowhere", r#"["a.b"]"#, "");
    let (ok, stdout, stderr) = apply(format!("{bad}{one}"));
    assert!(!ok, "a refused entry fails the command");
    assert!(stdout.starts_with("failed     bad: ") && stdout.contains("`url` scheme \"ftp\""), "{stdout}");
    assert!(
        stdout.ends_with("replaced   one\n") && stderr.contains("1 of 2 webhooks were not applied"),
        "{stdout}{stderr}"
    );
    let (ok, _, stderr) = apply("[server]\nlisten = \"127.0.0.1:1\"\n".into());
    assert!(!ok && stderr.contains("has no [[webhooks]] entries"), "{stderr}");
}

/// Without an admin token the API answers this machine only, and not a web page of another
/// site open in a browser here (a cross-site form, or a name rebound to 127.0.0.1).
#[tokio::test(flavor = "multi_thread")]
async fn without_a_token_other_sites_pages_are_refused() {
    let host = TestHost::start(LOCAL_DELIVERY, &[]);
    let post = |headers: &[(&'static str, &'static str)]| {
        let mut request = host.http.post(host.url("/v1/webhooks/none/disable"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    assert_eq!(post(&[]).await.unwrap().status(), 404, "this machine: allowed (no such webhook)");
    assert_eq!(post(&[("sec-fetch-site", "same-origin")]).await.unwrap().status(), 404);
    assert_eq!(post(&[("sec-fetch-site", "cross-site")]).await.unwrap().status(), 403);
    assert_eq!(post(&[("origin", "https://evil.example")]).await.unwrap().status(), 403);
    assert_eq!(post(&[("host", "evil.example")]).await.unwrap().status(), 403, "DNS rebinding");
}

/// Replacing an API webhook without a `secret` keeps the one it was created with.
#[tokio::test(flavor = "multi_thread")]
async fn replacing_a_webhook_without_a_secret_keeps_it() {
    let receiver = TestReceiver::start().await;
    let host = TestHost::start(LOCAL_DELIVERY, &[]);
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut definition =
        serde_json::json!({"id": "kept", "url": receiver.url("/k"), "events": ["a.b"], "secret": secret});
    let created = host.http.post(host.url("/v1/webhooks")).json(&definition).send().await.unwrap();
    assert_eq!(created.status(), 201);
    definition.as_object_mut().unwrap().remove("secret");
    definition["events"] = serde_json::json!(["a.b", "c.d"]);
    let replaced = host.http.put(host.url("/v1/webhooks/kept")).json(&definition).send().await.unwrap();
    assert_eq!(replaced.status(), 200);
    assert_eq!(host.get("/v1/webhooks/kept/secret").await["secret"], secret);
}
