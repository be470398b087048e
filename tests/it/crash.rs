//! `kill -9` while events flow: every accepted event is delivered after a restart, and any
//! duplicate carries the same `webhook-id` and bytes.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::host::{LOCAL_DELIVERY, SLACK_NOTIFY, TestHost, TestReceiver, webhook};

#[tokio::test(flavor = "multi_thread")]
async fn every_accepted_event_survives_kill_9() {
    let receiver = TestReceiver::start().await;
    let config = [
        LOCAL_DELIVERY.to_string(),
        webhook("slack", &receiver.url("/slack"), r#"["message.created"]"#, SLACK_NOTIFY),
        webhook("raw", &receiver.url("/raw"), r#"["message.created"]"#, ""),
    ]
    .concat();
    let mut host = TestHost::start(&config, &["slack-notify"]);
    let template: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(crate::support::sample_path("message.created")).unwrap())
            .unwrap();

    let mut accepted = HashSet::new();
    let mut sent = 0;
    for round in 0..3 {
        let until = Instant::now() + Duration::from_millis(400);
        while Instant::now() < until {
            let mut event = template.clone();
            event["id"] = format!("crash-{round}-{sent}").into();
            sent += 1;
            let response = host
                .http
                .post(host.url("/v1/events"))
                .header("content-type", "application/json")
                .body(event.to_string())
                .send()
                .await;
            if let Ok(response) = response
                && response.status() == 202
            {
                accepted.insert(event["id"].as_str().unwrap().to_string());
            }
        }
        host.kill();
        host.spawn();
    }
    assert!(accepted.len() > 50, "only {} events accepted", accepted.len());

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let raw: HashSet<String> =
            receiver.received("/raw").iter().map(|r| r.json()["id"].as_str().unwrap().to_string()).collect();
        let slack_ids: HashSet<String> = receiver.received("/slack").iter().map(|r| r.webhook_id.clone()).collect();
        if accepted.is_subset(&raw) && slack_ids.len() >= accepted.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing after restart: raw {} of {}, slack {}",
            accepted.difference(&raw).count(),
            accepted.len(),
            slack_ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut bodies: HashMap<String, Vec<u8>> = HashMap::new();
    for request in receiver.all() {
        assert!(request.verified);
        if let Some(previous) = bodies.insert(request.webhook_id.clone(), request.body.clone()) {
            assert_eq!(previous, request.body, "a duplicate {} carried other bytes", request.webhook_id);
        }
    }
}
