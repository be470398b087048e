//! The store for the long run, against the real binary, on either backend: retention, the
//! backlog limit, and a retry that races a delivery in flight.

use std::time::{Duration, Instant};

use crate::host::{Answer, LOCAL_DELIVERY, TestHost, TestReceiver, delivery_for, webhook};

const SETTLE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn final_deliveries_expire_with_their_events_and_the_rest_stay() {
    let receiver = TestReceiver::start().await;
    let config = [
        format!("{LOCAL_DELIVERY}[store]\nretention = \"1s\"\n"),
        webhook("sent", &receiver.url("/sent"), r#"["*"]"#, ""),
        webhook("held", &receiver.url("/held"), r#"["message.created"]"#, "plugin = \"missing\""),
    ]
    .concat();
    let host = TestHost::start(&config, &[]);
    let (_, mixed) = host.post_event(r#"{"id": "mixed", "type": "message.created", "data": {}}"#).await;
    let (_, alone) = host.post_event(r#"{"id": "alone", "type": "conversation.updated", "data": {}}"#).await;
    assert_eq!((mixed["deliveries"].as_u64(), alone["deliveries"].as_u64()), (Some(2), Some(1)));
    let deliveries = host.settled_deliveries("mixed", SETTLE).await;
    let (sent, held) =
        (delivery_for(&deliveries, "sent")["id"].clone(), delivery_for(&deliveries, "held")["id"].clone());
    let started = Instant::now();

    // Retention (1 s) plus one sweep (5 s), with room for a slow machine.
    let deadline = started + Duration::from_secs(1 + 20);
    loop {
        let status = host
            .http
            .get(host.url(&format!("/v1/deliveries/{}", sent.as_str().unwrap())))
            .send()
            .await
            .unwrap()
            .status();
        if status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "the delivered delivery is still there after {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held_now = host.get(&format!("/v1/deliveries/{}", held.as_str().unwrap())).await;
    assert_eq!(held_now["state"], "held", "held deliveries are kept whatever their age");
    assert_eq!(host.get("/v1/events/mixed").await["event"]["id"], "mixed", "its held delivery still refers to it");
    let alone_status = host.http.get(host.url("/v1/events/alone")).send().await.unwrap().status();
    assert_eq!(alone_status, 404, "an event goes once none of its deliveries remain");
    // Past the retention window, the same id is a new event (the dedup window is retention).
    let (status, again) = host.post_event(r#"{"id": "alone", "type": "conversation.updated", "data": {}}"#).await;
    assert_eq!((status, again["deliveries"].as_u64()), (202, Some(1)), "{again}");
    assert!(host.metrics().await.contains("hookwasm_expired_deliveries_total"));
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_refuses_events_past_the_backlog_limit_and_resumes_as_it_drains() {
    let receiver = TestReceiver::start().await;
    // Three failures, then success: the first attempt of each event fails and is due again
    // in 2 s, so three deliveries stay undelivered meanwhile.
    receiver.script("/slow", &[Answer::status(500); 3], Answer::status(200));
    let config = [
        "[delivery]\nallow_http = true\nallow_private_networks = true\nretry_schedule = [\"0s\", \"2s\"]\nmax_backlog = 3\n"
            .to_string(),
        webhook("slow", &receiver.url("/slow"), r#"["*"]"#, ""),
    ]
    .concat();
    let host = TestHost::start(&config, &[]);
    for i in 0..3 {
        let (status, body) = host.post_event(&format!(r#"{{"id": "b{i}", "type": "a.b", "data": {{}}}}"#)).await;
        assert_eq!(status, 202, "{body}");
    }
    let response = host
        .http
        .post(host.url("/v1/events"))
        .header("content-type", "application/json")
        .body(r#"{"id": "b3", "type": "a.b", "data": {}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "backlog_full", "{body}");
    assert_eq!(host.http.get(host.url("/v1/events/b3")).send().await.unwrap().status(), 404, "nothing stored");

    // Nothing accepted is affected: the three go out on their retry, then ingest resumes.
    receiver.wait_for("/slow", 6, SETTLE).await;
    let deadline = Instant::now() + SETTLE;
    loop {
        let (status, body) = host.post_event(r#"{"id": "b3", "type": "a.b", "data": {}}"#).await;
        if status == 202 {
            break;
        }
        assert_eq!(body["code"], "backlog_full");
        assert!(Instant::now() < deadline, "ingest never resumed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..3 {
        let deliveries = host.settled_deliveries(&format!("b{i}"), SETTLE).await;
        assert_eq!(deliveries[0]["state"], "delivered");
    }
}

/// The race the lease must prevent: a retry asked for while the first attempt is on the wire
/// must not start a second, concurrent send, nor drop the first attempt's record.
#[tokio::test(flavor = "multi_thread")]
async fn a_retry_of_a_delivery_in_flight_waits_for_the_attempt_to_finish() {
    let receiver = TestReceiver::start().await;
    let slow = Answer { status: 200, retry_after: None, delay: Duration::from_millis(1500) };
    receiver.script("/slow", &[slow], Answer::status(200));
    let config = [LOCAL_DELIVERY.to_string(), webhook("slow", &receiver.url("/slow"), r#"["*"]"#, "")].concat();
    let host = TestHost::start(&config, &[]);
    host.post_event(r#"{"id": "race", "type": "a.b", "data": {}}"#).await;
    let first = receiver.wait_for("/slow", 1, SETTLE).await;
    let id = first[0].webhook_id.clone();
    let retry = host.http.post(host.url(&format!("/v1/deliveries/{id}/retry"))).send().await.unwrap();
    assert_eq!(retry.status(), 202);

    let both = receiver.wait_for("/slow", 2, SETTLE).await;
    assert!(
        both[1].at.duration_since(both[0].at) >= Duration::from_millis(1400),
        "the retry went out {:?} after the first send began, while it was still in flight",
        both[1].at.duration_since(both[0].at)
    );
    let deadline = Instant::now() + SETTLE;
    loop {
        let delivery = host.get(&format!("/v1/deliveries/{id}")).await;
        if delivery["state"] == "delivered" && delivery["attempts"].as_array().unwrap().len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "both attempts are recorded: {delivery:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received("/slow").len(), 2, "sent twice in all: the first time and the retry");
}
