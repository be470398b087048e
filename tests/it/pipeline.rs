//! The pipeline end to end: the real binary, a real SQLite file, real plugins, a real receiver
//! that verifies every signature with the official Standard Webhooks library.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::host::{Answer, LOCAL_DELIVERY, SLACK_NOTIFY, TestHost, TestReceiver, delivery_for, webhook};

const SETTLE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn fans_out_filters_and_reshapes() {
    let receiver = TestReceiver::start().await;
    let config = [
        LOCAL_DELIVERY.to_string(),
        webhook("raw", &receiver.url("/raw"), r#"["*"]"#, "headers = { \"x-team\" = \"support\" }"),
        webhook("slack", &receiver.url("/slack"), r#"["message.created", "conversation.*"]"#, SLACK_NOTIFY),
        webhook(
            "vip",
            &receiver.url("/vip"),
            r#"["message.created", "conversation.label_added"]"#,
            "plugin = \"event-filter\"\nplugin_config = { labels = \"vip\" }",
        ),
        webhook("statuses", &receiver.url("/statuses"), r#"["conversation.status_changed"]"#, ""),
    ]
    .concat();
    let host = TestHost::start(&config, &["slack-notify", "event-filter"]);

    let message = host.post_sample("message.created").await;
    let label = host.post_sample("conversation.label_added").await;

    let deliveries = host.settled_deliveries(&message, SETTLE).await;
    assert_eq!(deliveries.len(), 3, "raw, slack, vip; not statuses");
    assert_eq!(delivery_for(&deliveries, "raw")["state"], "delivered");
    assert_eq!(delivery_for(&deliveries, "slack")["state"], "delivered");
    let vip = delivery_for(&deliveries, "vip");
    assert_eq!(vip["state"], "filtered");
    assert_eq!(vip["reason"], "no label in vip");
    assert_eq!(vip["plugin_sha"].as_str().unwrap().len(), 64);

    let label_deliveries = host.settled_deliveries(&label, SETTLE).await;
    assert_eq!(delivery_for(&label_deliveries, "vip")["state"], "delivered");

    let raw = receiver.wait_for("/raw", 2, SETTLE).await;
    let original: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(crate::support::sample_path("message.created")).unwrap())
            .unwrap();
    let raw_message = raw.iter().find(|r| r.json()["id"] == message.as_str()).unwrap();
    assert_eq!(raw_message.json(), original, "no plugin: the envelope as received");
    assert_eq!(raw_message.headers["x-team"], "support");
    assert!(raw_message.headers["user-agent"].to_str().unwrap().starts_with("hookwasm/"));
    assert_eq!(raw_message.webhook_id, delivery_for(&deliveries, "raw")["id"].as_str().unwrap());

    let slack = receiver.wait_for("/slack", 2, SETTLE).await;
    let slack_message = slack.iter().find(|r| r.json()["text"].as_str().unwrap().starts_with("New message")).unwrap();
    assert!(slack_message.json()["blocks"].is_array());
    let vip = receiver.wait_for("/vip", 1, SETTLE).await;
    assert_eq!(vip[0].json()["id"], label.as_str(), "event-filter passes the envelope unchanged");
    assert!(receiver.received("/statuses").is_empty());
    assert!(receiver.all().iter().all(|r| r.verified), "every signature verifies");
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_until_the_receiver_recovers_with_the_same_id_and_bytes() {
    let receiver = TestReceiver::start().await;
    receiver.script("/flaky", &[Answer::status(500), Answer::status(503)], Answer::status(200));
    let config =
        [LOCAL_DELIVERY.to_string(), webhook("flaky", &receiver.url("/flaky"), r#"["message.created"]"#, "")].concat();
    let host = TestHost::start(&config, &[]);
    let event = host.post_sample("message.created").await;
    let deliveries = host.settled_deliveries(&event, SETTLE).await;
    let delivery = delivery_for(&deliveries, "flaky");
    assert_eq!(delivery["state"], "delivered");
    let statuses: Vec<u64> =
        delivery["attempts"].as_array().unwrap().iter().map(|a| a["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [500, 503, 200]);
    assert_eq!(delivery["attempts"][0]["response_excerpt"], "receiver says hi");

    let got = receiver.received("/flaky");
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|r| r.webhook_id == got[0].webhook_id && r.body == got[0].body && r.verified));
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(150), "the schedule's second delay (200ms +-20%) was honoured: {gap:?}");

    let metrics = host.metrics().await;
    for line in [
        "hookwasm_events_accepted_total 1",
        "hookwasm_delivery_attempts_total{class=\"5xx\"} 2",
        "hookwasm_delivery_attempts_total{class=\"2xx\"} 1",
        "hookwasm_deliveries_total{state=\"delivered\"} 1",
        "hookwasm_queue_depth 0",
        "hookwasm_delivery_attempt_duration_seconds_count 3",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn honours_retry_after_and_gives_up_after_the_schedule() {
    let receiver = TestReceiver::start().await;
    receiver.script(
        "/busy",
        &[Answer { status: 429, retry_after: Some(1), delay: Duration::ZERO }],
        Answer::status(200),
    );
    receiver.script("/down", &[], Answer::status(500));
    let config = [
        LOCAL_DELIVERY.to_string(),
        webhook("busy", &receiver.url("/busy"), r#"["message.created"]"#, ""),
        webhook("down", &receiver.url("/down"), r#"["message.created"]"#, ""),
    ]
    .concat();
    let host = TestHost::start(&config, &[]);
    let event = host.post_sample("message.created").await;
    let deliveries = host.settled_deliveries(&event, SETTLE).await;
    assert_eq!(delivery_for(&deliveries, "busy")["state"], "delivered");
    let busy = receiver.received("/busy");
    assert!(busy[1].at - busy[0].at >= Duration::from_millis(950), "Retry-After: 1 honoured");
    let down = delivery_for(&deliveries, "down");
    assert_eq!(down["state"], "dead");
    assert_eq!(down["attempts"].as_array().unwrap().len(), 4, "one per schedule entry");
    assert_eq!(down["reason"], "gave up after 4 attempts");
}

#[tokio::test(flavor = "multi_thread")]
async fn gone_disables_the_webhook() {
    let receiver = TestReceiver::start().await;
    receiver.script("/gone", &[], Answer::status(410));
    let config = [
        LOCAL_DELIVERY.to_string(),
        webhook("gone", &receiver.url("/gone"), r#"["message.created"]"#, ""),
        webhook("alive", &receiver.url("/alive"), r#"["message.created"]"#, ""),
    ]
    .concat();
    let mut host = TestHost::start(&config, &[]);
    let first = host.post_sample("message.created").await;
    let deliveries = host.settled_deliveries(&first, SETTLE).await;
    let gone = delivery_for(&deliveries, "gone");
    assert_eq!(gone["state"], "dead");
    assert_eq!(gone["attempts"].as_array().unwrap().len(), 1);

    let (_, second) = host.post_event(r#"{"type": "message.created", "data": {}}"#).await;
    assert_eq!(second["deliveries"], 1, "only `alive` still subscribes");
    host.kill();
    host.spawn();
    let (_, third) = host.post_event(r#"{"type": "message.created", "data": {}}"#).await;
    assert_eq!(third["deliveries"], 1, "still disabled after a restart");
    assert_eq!(receiver.received("/gone").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_is_idempotent() {
    let receiver = TestReceiver::start().await;
    // One delivery slot, for the host and for the webhook: every ingest reserves it for the
    // worker, so a duplicate that did not give its reservation back would leave the later
    // event undelivered, or the slot counted as taken.
    let config = format!(
        "{LOCAL_DELIVERY}max_in_flight = 1\nmax_in_flight_per_webhook = 1\n{}",
        webhook("a", &receiver.url("/a"), r#"["message.created"]"#, "")
    );
    let host = TestHost::start(&config, &[]);
    let body = std::fs::read_to_string(crate::support::sample_path("message.created")).unwrap();
    let (status, first) = host.post_event(&body).await;
    assert_eq!((status, first["deliveries"].as_u64()), (202, Some(1)));
    let (status, again) = host.post_event(&body).await;
    assert_eq!(status, 202);
    assert_eq!(again["id"], "evt_01JDX4M8Q2");
    assert_eq!(again["duplicate"], true);
    host.settled_deliveries("evt_01JDX4M8Q2", SETTLE).await;
    for _ in 0..3 {
        assert_eq!(host.post_event(&body).await.1["duplicate"], true);
    }
    host.post_event(r#"{"id": "evt_after", "type": "message.created", "data": {}}"#).await;
    host.settled_deliveries("evt_after", SETTLE).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received("/a").len(), 2, "the duplicates sent nothing; the next event was delivered");
    let metrics = host.metrics().await;
    assert!(metrics.lines().any(|l| l == "hookwasm_deliveries_in_flight 0"), "a slot is still taken:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_json_error_and_stores_nothing() {
    let config = format!("{LOCAL_DELIVERY}[server]\ningest_token = \"s3cret-ingest-token\"\nmax_body_bytes = 4096\n");
    let host = TestHost::start(&config, &[]);
    let post = |body: String, content_type: &'static str, token: Option<&'static str>| {
        let mut request = host.http.post(host.url("/v1/events")).header("content-type", content_type).body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let valid = r#"{"type": "message.created", "data": {}}"#.to_string();
    let (status, body) = post(valid.clone(), "application/json", None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    let (status, _) = post(valid.clone(), "application/json", Some("wrong")).await;
    assert_eq!(status, 401);
    let (status, body) = post("{not json".into(), "application/json", Some("s3cret-ingest-token")).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("malformed_json")));
    let (status, body) = post(r#"{"data": {}}"#.into(), "application/json", Some("s3cret-ingest-token")).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("type")));
    assert_eq!(body["error"], "missing required field `type`");
    let (status, body) =
        post(r#"{"type": "a.b", "data": "x"}"#.into(), "application/json", Some("s3cret-ingest-token")).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("data")));
    let (status, body) = post(
        format!(r#"{{"type": "a.b", "data": {{"x": "{}"}}}}"#, "y".repeat(5000)),
        "application/json",
        Some("s3cret-ingest-token"),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (413, Some("payload_too_large")));
    let (status, body) = post(valid.clone(), "text/plain", Some("s3cret-ingest-token")).await;
    assert_eq!((status, body["code"].as_str()), (415, Some("unsupported_media_type")));
    let (status, body) = post(valid, "application/json; charset=utf-8", Some("s3cret-ingest-token")).await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_or_missing_plugins_hold_deliveries() {
    let receiver = TestReceiver::start().await;
    let config = [
        LOCAL_DELIVERY.to_string(),
        webhook(
            "failing",
            &receiver.url("/failing"),
            r#"["message.created"]"#,
            "plugin = \"hostile\"\nplugin_config = { mode = \"panic\" }",
        ),
        webhook(
            "slow",
            &receiver.url("/slow"),
            r#"["message.created"]"#,
            "plugin = \"hostile\"\nplugin_config = { mode = \"spin\" }",
        ),
        webhook("missing", &receiver.url("/missing"), r#"["message.created"]"#, "plugin = \"nowhere\""),
    ]
    .concat();
    let host = TestHost::start(&config, &["hostile"]);
    let event = host.post_sample("message.created").await;
    let deliveries = host.settled_deliveries(&event, SETTLE).await;
    for (webhook, reason) in [
        ("failing", "trapped"),
        ("slow", "timed out after 50 ms (3 tries)"),
        ("missing", "plugin `nowhere` is not loaded"),
    ] {
        let delivery = delivery_for(&deliveries, webhook);
        assert_eq!(delivery["state"], "held", "{webhook}");
        assert!(delivery["reason"].as_str().unwrap().contains(reason), "{webhook}: {delivery}");
    }
    // A timeout is tried twice more before holding (the CPU may have been busy); a trap is not.
    assert!(!delivery_for(&deliveries, "failing")["reason"].as_str().unwrap().contains("tries"));
    let metrics = host.http.get(host.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("hookwasm_plugin_timeout_retries_total 2"), "{metrics}");
    assert!(receiver.all().is_empty(), "nothing is ever sent untransformed");
}

#[tokio::test(flavor = "multi_thread")]
async fn https_endpoints_are_verified_and_an_untrusted_certificate_is_refused() {
    use tokio_rustls::rustls;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key.into())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = Arc::new(Mutex::new(Vec::new()));
    let seen = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let outcome = acceptor.accept(stream).await.map(drop).map_err(|e| e.to_string());
            seen.lock().unwrap().push(outcome);
        }
    });
    let config = format!(
        "[delivery]\nallow_private_networks = true\nretry_schedule = [\"0s\"]\n{}",
        webhook("tls", &format!("https://localhost:{port}/hook"), r#"["message.created"]"#, "")
    );
    let host = TestHost::start(&config, &[]);
    let event = host.post_sample("message.created").await;
    let deliveries = host.settled_deliveries(&event, SETTLE).await;
    let delivery = delivery_for(&deliveries, "tls");
    assert_eq!(delivery["state"], "dead");
    let error = delivery["attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("invalid peer certificate"), "{error}");
    let handshakes = handshakes.lock().unwrap();
    assert!(!handshakes.is_empty() && handshakes.iter().all(Result::is_err), "{handshakes:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn internal_addresses_are_refused_by_default() {
    let receiver = TestReceiver::start().await;
    let config = format!(
        "[delivery]\nallow_http = true\nretry_schedule = [\"0s\"]\n{}",
        webhook("internal", &receiver.url("/x"), r#"["message.created"]"#, "")
    );
    let host = TestHost::start(&config, &[]);
    let event = host.post_sample("message.created").await;
    let deliveries = host.settled_deliveries(&event, SETTLE).await;
    let delivery = delivery_for(&deliveries, "internal");
    assert_eq!(delivery["state"], "dead");
    let error = delivery["attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("127.0.0.1 is an internal address"), "{error}");
    assert!(receiver.all().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn allowed_networks_are_trusted() {
    let receiver = TestReceiver::start().await;
    let config = format!(
        "[delivery]\nallow_http = true\nallowed_networks = [\"127.0.0.0/8\"]\n{}",
        webhook("trusted", &receiver.url("/t"), r#"["message.created"]"#, "")
    );
    let host = TestHost::start(&config, &[]);
    let event = host.post_sample("message.created").await;
    let deliveries = host.settled_deliveries(&event, SETTLE).await;
    assert_eq!(delivery_for(&deliveries, "trusted")["state"], "delivered");
}

/// The slow webhook's deliveries queued behind its two requests on the wire hold none of the
/// six global slots, so the fast webhook keeps four of them.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_endpoint_does_not_delay_others() {
    let receiver = TestReceiver::start().await;
    receiver.script("/slow", &[], Answer { status: 200, retry_after: None, delay: Duration::from_secs(3) });
    let config = format!(
        "{LOCAL_DELIVERY}max_in_flight_per_webhook = 2\nmax_in_flight = 6\n{}{}",
        webhook("slow", &receiver.url("/slow"), r#"["message.created"]"#, ""),
        webhook("fast", &receiver.url("/fast"), r#"["message.created"]"#, ""),
    );
    let host = TestHost::start(&config, &[]);
    let started = std::time::Instant::now();
    for i in 0..20 {
        let (status, _) =
            host.post_event(&format!(r#"{{"id": "e{i}", "type": "message.created", "data": {{}}}}"#)).await;
        assert_eq!(status, 202);
    }
    receiver.wait_for("/fast", 20, Duration::from_secs(10)).await;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "fast endpoint waited for the slow one: {elapsed:?}");
    assert!(receiver.received("/slow").len() <= 2, "per-webhook bound respected");
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_finishes_in_flight_work() {
    let receiver = TestReceiver::start().await;
    receiver.script("/slowish", &[], Answer { status: 200, retry_after: None, delay: Duration::from_millis(500) });
    let config =
        [LOCAL_DELIVERY.to_string(), webhook("s", &receiver.url("/slowish"), r#"["message.created"]"#, "")].concat();
    let mut host = TestHost::start(&config, &[]);
    let event = host.post_sample("message.created").await;
    receiver.wait_for("/slowish", 1, SETTLE).await;
    let (status, took) = host.terminate();
    assert!(status.success(), "{status:?}\n{}", host.log());
    assert!(took < Duration::from_secs(5), "{took:?}");
    host.spawn();
    let deliveries = host.settled_deliveries(&event, SETTLE).await;
    assert_eq!(delivery_for(&deliveries, "s")["state"], "delivered");
    assert_eq!(receiver.received("/slowish").len(), 1, "the in-flight request finished and was recorded before exit");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_oversized_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = TestHost::start(LOCAL_DELIVERY, &[]);

    let mut huge = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    let head = format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(100 << 10));
    let _ = huge.write_all(head.as_bytes()).await;
    let mut answer = vec![0; 64];
    let n = huge.read(&mut answer).await.unwrap_or(0);
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );

    let started = std::time::Instant::now();
    let mut slow = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    slow.write_all(b"POST /v1/events HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let mut buffer = [0; 256];
    let read = tokio::time::timeout(Duration::from_secs(20), slow.read(&mut buffer)).await;
    let elapsed = started.elapsed();
    assert!(read.is_ok(), "the slow client was never cut off");
    assert!(elapsed >= Duration::from_secs(9) && elapsed < Duration::from_secs(15), "{elapsed:?}");
}

/// A webhook's own `retry_schedule`, `timeout` and `max_in_flight` override `[delivery]` for
/// it alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_webhooks_own_delivery_settings_override_the_defaults() {
    let receiver = TestReceiver::start().await;
    receiver.script("/short", &[], Answer::status(500));
    receiver.script("/long", &[], Answer::status(500));
    receiver.script("/quick", &[], Answer { status: 200, retry_after: None, delay: Duration::from_secs(1) });
    receiver.script("/one", &[], Answer { status: 200, retry_after: None, delay: Duration::from_millis(500) });
    let config = [
        LOCAL_DELIVERY.to_string(),
        webhook("short", &receiver.url("/short"), r#"["a.fail"]"#, "retry_schedule = [\"0s\", \"100ms\"]"),
        webhook("long", &receiver.url("/long"), r#"["a.fail"]"#, ""),
        webhook("quick", &receiver.url("/quick"), r#"["a.slow"]"#, "timeout = \"200ms\"\nretry_schedule = [\"0s\"]"),
        webhook("one", &receiver.url("/one"), r#"["a.one"]"#, "max_in_flight = 1"),
    ]
    .concat();
    let host = TestHost::start(&config, &[]);
    let shown = host.get("/v1/webhooks/short").await;
    assert_eq!(shown["retry_schedule"], serde_json::json!(["0s", "100ms"]), "{shown}");

    let failing = host.post_sample_like("a.fail", "f").await;
    let deliveries = host.settled_deliveries(&failing, Duration::from_secs(20)).await;
    let short = delivery_for(&deliveries, "short");
    assert_eq!(short["reason"], "gave up after 2 attempts", "{short}");
    assert_eq!(delivery_for(&deliveries, "long")["reason"], "gave up after 4 attempts");

    let slow = host.post_sample_like("a.slow", "s").await;
    let deliveries = host.settled_deliveries(&slow, Duration::from_secs(20)).await;
    let quick = delivery_for(&deliveries, "quick");
    assert_eq!(quick["state"], "dead");
    assert!(quick["attempts"][0]["error"].as_str().unwrap().contains("timed out after 200ms"), "{quick}");

    for i in 0..3 {
        host.post_sample_like("a.one", &format!("o{i}")).await;
    }
    let got = receiver.wait_for("/one", 3, Duration::from_secs(20)).await;
    for pair in got.windows(2) {
        let apart = pair[1].at.duration_since(pair[0].at);
        assert!(apart >= Duration::from_millis(450), "two requests at once to a max_in_flight = 1 webhook: {apart:?}");
    }
}

/// A webhook's `filter` runs before its plugin: events it is false for are `filtered` with
/// the filter as the reason (and `events show` says which webhook's filter), the others go
/// through the plugin; a broken expression is refused with its position.
#[tokio::test(flavor = "multi_thread")]
async fn a_filter_selects_events_before_the_plugin() {
    let receiver = TestReceiver::start().await;
    let config = [
        LOCAL_DELIVERY.to_string(),
        webhook(
            "vip",
            &receiver.url("/vip"),
            r#"["conversation.*"]"#,
            &format!("{SLACK_NOTIFY}\nfilter = '\"vip\" in data.conversation.labels'"),
        ),
        webhook("all", &receiver.url("/all"), r#"["conversation.*"]"#, ""),
    ]
    .concat();
    let host = TestHost::start(&config, &["slack-notify"]);
    let vip = host.post_sample("conversation.label_added").await;
    let plain = host.post_sample("conversation.created").await;

    let deliveries = host.settled_deliveries(&vip, SETTLE).await;
    assert_eq!(delivery_for(&deliveries, "vip")["state"], "delivered");
    let sent = receiver.wait_for("/vip", 1, SETTLE).await;
    assert!(sent[0].verified && sent[0].json()["text"].as_str().unwrap().contains("`vip`"), "through slack-notify");

    let deliveries = host.settled_deliveries(&plain, SETTLE).await;
    let rejected = delivery_for(&deliveries, "vip");
    assert_eq!(rejected["state"], "filtered");
    assert_eq!(rejected["reason"], "filter: did not match");
    assert_eq!(delivery_for(&deliveries, "all")["state"], "delivered");
    let explained = host.get(&format!("/v1/events/{plain}")).await;
    let why = explained["webhooks"].as_array().unwrap().iter().find(|w| w["webhook"] == "vip").unwrap()["why"].clone();
    assert_eq!(why, "rejected by its filter `\"vip\" in data.conversation.labels`: did not match", "{explained}");
    assert_eq!(receiver.received("/vip").len(), 1, "the rejected event was not sent");

    let broken = serde_json::json!({"id": "b", "url": receiver.url("/b"), "events": ["*"], "filter": "data.x == "});
    let refused = host.http.post(host.url("/v1/webhooks")).json(&broken).send().await.unwrap();
    assert_eq!(refused.status(), 422);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("`filter` at line 1, column"), "{body}");
}

/// A `20/s` webhook gets 100 events over at least four seconds, at most a second's worth at
/// once, every one of them; a webhook beside it is not slowed.
#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_paces_its_webhook_only() {
    let receiver = TestReceiver::start().await;
    let config = [
        LOCAL_DELIVERY.to_string(),
        webhook("paced", &receiver.url("/paced"), r#"["a.b"]"#, "rate_limit = \"20/s\""),
        webhook("free", &receiver.url("/free"), r#"["a.b"]"#, ""),
    ]
    .concat();
    let host = TestHost::start(&config, &[]);
    let started = std::time::Instant::now();
    for i in 0..100 {
        host.post_sample_like("a.b", &format!("r{i}")).await;
    }
    receiver.wait_for("/free", 100, Duration::from_secs(20)).await;
    let free_took = started.elapsed();
    let paced = receiver.wait_for("/paced", 100, Duration::from_secs(30)).await;
    assert!(free_took < Duration::from_secs(3), "the other webhook was slowed: {free_took:?}");
    let spread = paced[99].at.duration_since(paced[0].at);
    assert!(spread >= Duration::from_millis(3800), "100 requests at 20/s with a burst of 20 took {spread:?}");
    for (i, first) in paced.iter().enumerate() {
        let in_a_second = paced[i..].iter().filter(|r| r.at.duration_since(first.at) < Duration::from_secs(1)).count();
        assert!(in_a_second <= 41, "{in_a_second} requests within one second (burst 20 + 20/s)");
    }
    let ids: std::collections::HashSet<String> =
        paced.iter().map(|r| r.json()["id"].as_str().unwrap().into()).collect();
    assert_eq!(ids.len(), 100, "every event, once");
}

/// A 429 with `Retry-After: 2` holds that webhook back for two seconds; another webhook
/// keeps going.
#[tokio::test(flavor = "multi_thread")]
async fn a_429_holds_back_that_webhook_only() {
    let receiver = TestReceiver::start().await;
    let too_many = Answer { status: 429, retry_after: Some(2), delay: Duration::ZERO };
    receiver.script("/busy", &[too_many], Answer::status(200));
    let config = [
        LOCAL_DELIVERY.to_string(),
        webhook("busy", &receiver.url("/busy"), r#"["a.b"]"#, ""),
        webhook("free", &receiver.url("/free"), r#"["a.b"]"#, ""),
    ]
    .concat();
    let host = TestHost::start(&config, &[]);
    let first = host.post_sample_like("a.b", "first").await;
    let refused = receiver.wait_for("/busy", 1, SETTLE).await[0].at;
    // The host learns of the 429 when the answer reaches it, a moment after the receiver sent
    // it: the later events go in once the attempt is recorded.
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let detail = host.get(&format!("/v1/events/{first}")).await;
        let busy = delivery_for(detail["deliveries"].as_array().unwrap(), "busy").clone();
        if busy["attempts"][0]["status"] == 429 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the 429 was never recorded: {busy:#}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for i in 0..5 {
        host.post_sample_like("a.b", &format!("then-{i}")).await;
    }
    let free = receiver.wait_for("/free", 6, SETTLE).await;
    assert!(free[5].at.duration_since(refused) < Duration::from_millis(1500), "the other webhook waited");
    let busy = receiver.wait_for("/busy", 7, SETTLE).await;
    for request in &busy[1..] {
        let after = request.at.duration_since(refused);
        assert!(after >= Duration::from_millis(1900), "sent {after:?} after a 429 asking for 2 s");
    }
}

/// A webhook whose every attempt fails for its `disable_after` is disabled with the reason,
/// its queued delivery waits (not lost), and `enable` brings it back.
#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_failing_for_disable_after_is_disabled_until_enabled() {
    let receiver = TestReceiver::start().await;
    receiver.script("/down", &[], Answer::status(503));
    let config = [
        LOCAL_DELIVERY.to_string(),
        webhook(
            "down",
            &receiver.url("/down"),
            r#"["a.b"]"#,
            "disable_after = \"2s\"\nretry_schedule = [\"0s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\"]",
        ),
    ]
    .concat();
    let host = TestHost::start(&config, &[]);
    let id = host.post_sample_like("a.b", "d1").await;
    let deadline = std::time::Instant::now() + SETTLE;
    let disabled = loop {
        let shown = host.get("/v1/webhooks/down").await;
        if shown["active"] == false {
            break shown;
        }
        assert!(std::time::Instant::now() < deadline, "never disabled: {shown}\n{}", host.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reason = disabled["disabled_reason"].as_str().unwrap();
    assert!(reason.starts_with("every attempt failed for 2s"), "{reason}");
    let attempts = receiver.received("/down").len();
    assert!((3..=5).contains(&attempts), "disabled after {attempts} attempts over about 2 s");
    let delivery = host.get(&format!("/v1/events/{id}")).await["deliveries"][0].clone();
    assert_eq!(delivery["state"], "retrying", "the queued delivery waits: {delivery}");
    let (_, answer) = host.post_event(r#"{"id": "while-off", "type": "a.b", "data": {}}"#).await;
    assert_eq!(answer["deliveries"], 0);

    assert_eq!(host.http.post(host.url("/v1/webhooks/down/enable")).send().await.unwrap().status(), 200);
    assert_eq!(host.get("/v1/webhooks/down").await["active"], true);
    let (_, answer) = host.post_event(r#"{"id": "back-on", "type": "a.b", "data": {}}"#).await;
    assert_eq!(answer["deliveries"], 1);
}

/// hookwasm's own `hookwasm.*` events reach webhooks subscribed to them, signed like any
/// other; `*` does not include them; producers cannot post them.
#[tokio::test(flavor = "multi_thread")]
async fn operational_events_reach_webhooks_subscribed_to_them() {
    let receiver = TestReceiver::start().await;
    receiver.script("/gone", &[], Answer::status(410));
    let config = [
        LOCAL_DELIVERY.to_string(),
        webhook("gone", &receiver.url("/gone"), r#"["a.b"]"#, ""),
        webhook("ops", &receiver.url("/ops"), r#"["hookwasm.*"]"#, ""),
        webhook("all", &receiver.url("/all"), r#"["*"]"#, ""),
    ]
    .concat();
    let host = TestHost::start(&config, &[]);
    host.post_sample_like("a.b", "to-gone").await;
    let got = receiver.wait_for("/ops", 2, SETTLE).await;
    let mut types: Vec<String> = got.iter().map(|r| r.json()["type"].as_str().unwrap().to_string()).collect();
    types.sort();
    assert_eq!(types, ["hookwasm.delivery.dead", "hookwasm.webhook.disabled"]);
    for request in &got {
        assert!(request.verified, "signed like any other delivery");
        assert_eq!(request.json()["data"]["webhook"], "gone");
    }
    let dead = got.iter().find(|r| r.json()["type"] == "hookwasm.delivery.dead").unwrap().json();
    assert_eq!(dead["data"]["event"], "to-gone");
    assert_eq!(dead["data"]["count"], 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all: Vec<String> =
        receiver.received("/all").iter().map(|r| r.json()["type"].as_str().unwrap().into()).collect();
    assert_eq!(all, ["a.b"], "`*` is the product's events only");

    let (status, body) = host.post_event(r#"{"type": "hookwasm.webhook.disabled", "data": {}}"#).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "type");
}

/// A webhook whose every attempt failed for long enough (here half its `disable_after`)
/// announces its recovery once; one failing every other request (a run of failures never
/// lasting) announces nothing.
#[tokio::test(flavor = "multi_thread")]
async fn only_a_webhook_down_for_a_while_announces_its_recovery() {
    let receiver = TestReceiver::start().await;
    // Retried every second (±20%): the eighth failure comes at least 5.6 s after the first,
    // the last before the 10 s disable_after.
    receiver.script("/down", &[Answer::status(500); 8], Answer::status(200));
    let flapping: Vec<Answer> = (0..40).map(|i| Answer::status(if i % 2 == 0 { 500 } else { 200 })).collect();
    receiver.script("/flaky", &flapping, Answer::status(200));
    let policy = "disable_after = \"10s\"\nretry_schedule = [\"0s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\"]";
    let config = [
        LOCAL_DELIVERY.to_string(),
        webhook("down", &receiver.url("/down"), r#"["a.b"]"#, policy),
        webhook("flaky", &receiver.url("/flaky"), r#"["c.d"]"#, policy),
        webhook("ops", &receiver.url("/ops"), r#"["hookwasm.webhook.recovered"]"#, ""),
    ]
    .concat();
    let host = TestHost::start(&config, &[]);
    let started_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    host.post_sample_like("a.b", "while-down").await;
    for i in 0..20 {
        host.post_sample_like("c.d", &format!("flaky-{i}")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    receiver.wait_for("/ops", 1, SETTLE).await;
    // The flaky webhook's retries (a second after each failure) are done by then.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let announced: Vec<serde_json::Value> = receiver.received("/ops").iter().map(|r| r.json()).collect();
    assert_eq!(announced.len(), 1, "{announced:?}");
    assert_eq!(announced[0]["data"]["webhook"], "down");
    let since = announced[0]["data"]["failing_since_ms"].as_i64().unwrap();
    assert!(
        since >= started_ms && since < started_ms + 2000,
        "since its first failure: {since} (started {started_ms})"
    );
    assert_eq!(host.get("/v1/webhooks/down").await["active"], true, "recovered before its disable_after");
}

/// Failures recorded before a restart do not count once the webhook has delivered again: a
/// later failure starts a new count instead of disabling it at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_success_after_a_restart_clears_the_failures_before_it() {
    let receiver = TestReceiver::start().await;
    let answers = [Answer::status(500), Answer::status(500), Answer::status(200), Answer::status(500)];
    receiver.script("/w", &answers, Answer::status(500));
    let config = [
        LOCAL_DELIVERY.to_string(),
        webhook("w", &receiver.url("/w"), r#"["a.b"]"#, "disable_after = \"2s\"\nretry_schedule = [\"0s\", \"1h\"]"),
    ]
    .concat();
    let mut host = TestHost::start(&config, &[]);
    // Failing for half its disable_after: a streak the store records.
    host.post_sample_like("a.b", "fails-before-restart").await;
    receiver.wait_for("/w", 1, SETTLE).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    host.post_sample_like("a.b", "fails-again-before-restart").await;
    receiver.wait_for("/w", 2, SETTLE).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    host.kill();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    host.spawn();
    host.post_sample_like("a.b", "delivers").await;
    receiver.wait_for("/w", 3, SETTLE).await;
    host.post_sample_like("a.b", "fails-again").await;
    receiver.wait_for("/w", 4, SETTLE).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shown = host.get("/v1/webhooks/w").await;
    assert_eq!(shown["active"], true, "disabled by failures older than its last success: {shown}");
}
