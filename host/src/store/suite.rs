//! The tests every [`Store`] backend must pass. A backend's test module calls
//! [`store_suite!`](crate::store_suite) with an async function that opens a fresh, empty
//! store (and whatever guard keeps it alive), or `None` where the backend's server cannot
//! start outside CI (the test is then skipped with a message).

use std::time::Duration;

use super::*;

/// One `#[tokio::test]` per suite test, each on a fresh store from `$open()`.
#[macro_export]
macro_rules! store_suite {
    ($open:path) => {
        $crate::store_suite!(@tests $open;
            ingest_is_idempotent_and_claims_are_leased,
            expired_leases_are_reclaimed_and_busy_webhooks_skipped,
            a_delivery_leased_at_ingest_is_its_owners_until_the_lease_expires,
            concurrent_ingests_share_commits,
            concurrent_posts_of_one_event_store_it_once,
            a_failing_operation_leaves_nothing_and_its_batch_neighbours_commit,
            a_replay_of_a_delivery_in_flight_waits_for_its_lease,
            a_replay_of_a_released_delivery_takes_effect_on_release,
            a_replay_queued_behind_a_lease_that_expires_is_the_next_claim,
            listings_carry_every_attempt,
            retention_deletes_only_final_deliveries_and_unreferenced_events,
            next_due_skips_deliveries_in_flight,
            a_webhook_is_created_once_and_replaced_only_as_read,
            plugin_versions_are_kept_newest_first_and_serving_ones_never_pruned,
            stored_events_of_a_webhook_come_newest_first,
        );
    };
    (@tests $open:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let Some((_guard, store)) = $open().await else { return };
                $crate::store::suite::$name(&store).await;
            }
        )*
    };
}

pub fn event(id: &str) -> Event {
    Event { id: id.into(), event_type: "a.b".into(), timestamp: "2026-01-01T00:00:00Z".into(), data: "{}".into() }
}

pub fn delivery(id: &str) -> NewDelivery {
    NewDelivery { id: id.into(), webhook_id: "w".into(), lease: None }
}

/// A result that marks delivery `id` as `state`, with an attempt when it was sent.
pub fn result(id: &str, state: DeliveryState) -> DeliveryUpdate {
    let sent = matches!(state, DeliveryState::Delivered | DeliveryState::Retrying | DeliveryState::Dead);
    DeliveryUpdate {
        id: id.into(),
        state,
        next_attempt_at_ms: now_ms() + 60_000,
        transformed: sent.then(|| Transformed { body: b"{}".to_vec(), headers: Vec::new(), plugin_sha: None }),
        reason: None,
        attempt: sent.then(|| Attempt {
            at_ms: now_ms(),
            status: Some(if state == DeliveryState::Delivered { 200 } else { 500 }),
            latency_ms: 3,
            response_excerpt: "ok".into(),
            error: None,
        }),
        plugin_sha: None,
    }
}

const MINUTE: Duration = Duration::from_secs(60);

fn ids(due: &[DueDelivery]) -> Vec<&str> {
    let mut ids: Vec<&str> = due.iter().map(|d| d.id.as_str()).collect();
    ids.sort();
    ids
}

pub async fn ingest_is_idempotent_and_claims_are_leased(store: &dyn Store) {
    assert_eq!(
        store.ingest(event("e1"), vec![delivery("m1")]).await.unwrap(),
        IngestOutcome::Accepted { deliveries: 1 }
    );
    assert_eq!(store.ingest(event("e1"), vec![delivery("m2")]).await.unwrap(), IngestOutcome::Duplicate);

    let claimed = store.claim_due("a", 10, vec![], MINUTE).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(store.claim_due("b", 10, vec![], MINUTE).await.unwrap().is_empty(), "leased to a");
    let update = result("m1", DeliveryState::Delivered);
    assert!(!store.update("b", update.clone()).await.unwrap(), "b holds no lease");
    assert!(store.update("a", update).await.unwrap());
    assert_eq!(store.state_counts().await.unwrap()[&DeliveryState::Delivered], 1);
}

pub async fn expired_leases_are_reclaimed_and_busy_webhooks_skipped(store: &dyn Store) {
    store.ingest(event("e1"), vec![delivery("m1")]).await.unwrap();
    assert!(store.claim_due("a", 10, vec!["w".into()], Duration::ZERO).await.unwrap().is_empty());
    assert_eq!(store.claim_due("a", 10, vec![], Duration::ZERO).await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.claim_due("b", 10, vec![], MINUTE).await.unwrap().len(), 1);

    let to = |id: &str, webhook: &str| NewDelivery { webhook_id: webhook.into(), ..delivery(id) };
    store.ingest(event("e2"), vec![to("m2", "x"), to("m3", "y"), to("m4", "z")]).await.unwrap();
    let busy = vec!["x".to_string(), "z".to_string()];
    let claimed = store.claim_due("b", 10, busy, MINUTE).await.unwrap();
    assert_eq!(ids(&claimed), ["m3"], "x and z are busy");
}

pub async fn a_delivery_leased_at_ingest_is_its_owners_until_the_lease_expires(store: &dyn Store) {
    let leased =
        |id: &str, until_ms| NewDelivery { lease: Some(Lease { owner: "a".into(), until_ms }), ..delivery(id) };
    store.ingest(event("e1"), vec![leased("m1", now_ms() + 60_000), delivery("m2")]).await.unwrap();
    store.ingest(event("e2"), vec![leased("m3", now_ms() - 1)]).await.unwrap();

    let claimed = store.claim_due("b", 10, vec![], MINUTE).await.unwrap();
    assert_eq!(ids(&claimed), ["m2", "m3"], "m1 is leased to a; m3's lease has expired");
    assert!(store.update("a", result("m1", DeliveryState::Delivered)).await.unwrap(), "a holds m1's lease");
}

pub async fn concurrent_ingests_share_commits(store: &dyn Store) {
    let ingests =
        (0..200).map(|i| store.ingest(event(&format!("e{i}")), vec![delivery(&format!("m{i}"))])).collect::<Vec<_>>();
    for outcome in futures_util::future::join_all(ingests).await {
        assert!(matches!(outcome.unwrap(), IngestOutcome::Accepted { .. }));
    }
    assert_eq!(store.state_counts().await.unwrap()[&DeliveryState::Pending], 200);
}

pub async fn concurrent_posts_of_one_event_store_it_once(store: &dyn Store) {
    let posts = (0..20).map(|i| store.ingest(event("e1"), vec![delivery(&format!("m{i}"))])).collect::<Vec<_>>();
    let outcomes: Vec<IngestOutcome> =
        futures_util::future::join_all(posts).await.into_iter().map(Result::unwrap).collect();
    let accepted = outcomes.iter().filter(|o| matches!(o, IngestOutcome::Accepted { .. })).count();
    assert_eq!(accepted, 1, "{outcomes:?}");
    assert_eq!(store.list_deliveries(DeliveryFilter::default()).await.unwrap().len(), 1, "only its deliveries");
}

pub async fn a_failing_operation_leaves_nothing_and_its_batch_neighbours_commit(store: &dyn Store) {
    // Every third ingest repeats a delivery id: its second insert fails after the event row
    // was written.
    let ingests = (0..50)
        .map(|i| {
            let deliveries = match i % 3 {
                0 => vec![delivery(&format!("m{i}")), delivery(&format!("m{i}"))],
                _ => vec![delivery(&format!("m{i}"))],
            };
            store.ingest(event(&format!("e{i}")), deliveries)
        })
        .collect::<Vec<_>>();
    for (i, outcome) in futures_util::future::join_all(ingests).await.into_iter().enumerate() {
        let stored = store.event(&format!("e{i}")).await.unwrap();
        if i % 3 == 0 {
            assert!(outcome.is_err() && stored.is_none(), "e{i}: {outcome:?}");
        } else {
            assert!(outcome.is_ok() && stored.is_some(), "e{i}: {outcome:?}");
        }
    }
    assert_eq!(store.state_counts().await.unwrap()[&DeliveryState::Pending], 33);
}

/// The double-send race: a retry asked for while a worker is sending must not make the
/// delivery claimable (a second, concurrent send) nor drop the first attempt's record.
pub async fn a_replay_of_a_delivery_in_flight_waits_for_its_lease(store: &dyn Store) {
    store.ingest(event("e1"), vec![delivery("m1")]).await.unwrap();
    assert_eq!(store.claim_due("a", 10, vec![], MINUTE).await.unwrap().len(), 1);
    let one = DeliveryFilter { id: Some("m1".into()), ..DeliveryFilter::default() };
    assert_eq!(store.replay(one.clone()).await.unwrap(), 1, "the replay is accepted");
    assert!(store.claim_due("b", 10, vec![], MINUTE).await.unwrap().is_empty(), "still a's while a sends it");

    assert!(store.update("a", result("m1", DeliveryState::Delivered)).await.unwrap(), "a's result is recorded");
    let record = store.delivery("m1").await.unwrap().unwrap();
    assert_eq!(record.attempts.len(), 1, "a's attempt is kept");
    assert_eq!(record.state, DeliveryState::Retrying, "then the replay takes effect: due again, stored body");
    let claimed = store.claim_due("b", 10, vec![], MINUTE).await.unwrap();
    assert_eq!(ids(&claimed), ["m1"]);
    assert_eq!(claimed[0].attempts, 0, "a fresh retry schedule");
    assert!(claimed[0].transformed.is_some(), "the same bytes are resent");
}

pub async fn a_replay_of_a_released_delivery_takes_effect_on_release(store: &dyn Store) {
    store.ingest(event("e1"), vec![delivery("m1")]).await.unwrap();
    store.claim_due("a", 10, vec![], MINUTE).await.unwrap();
    store.replay(DeliveryFilter { id: Some("m1".into()), ..DeliveryFilter::default() }).await.unwrap();
    store.release("a", vec!["m1".into()]).await.unwrap();
    let claimed = store.claim_due("b", 10, vec![], MINUTE).await.unwrap();
    assert_eq!(ids(&claimed), ["m1"], "released, and due now");
}

/// The lease holder died: the next claim is the replay (sent once, on a fresh schedule),
/// not a send followed by another one.
pub async fn a_replay_queued_behind_a_lease_that_expires_is_the_next_claim(store: &dyn Store) {
    store.ingest(event("e1"), vec![delivery("m1")]).await.unwrap();
    store.claim_due("a", 10, vec![], MINUTE).await.unwrap();
    store.update("a", result("m1", DeliveryState::Retrying)).await.unwrap();
    store.replay(DeliveryFilter { id: Some("m1".into()), ..DeliveryFilter::default() }).await.unwrap();
    let claimed = store.claim_due("a", 10, vec![], Duration::from_millis(50)).await.unwrap();
    assert_eq!((ids(&claimed), claimed[0].attempts), (vec!["m1"], 0), "the replay: due now, fresh schedule");
    store.replay(DeliveryFilter { id: Some("m1".into()), ..DeliveryFilter::default() }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    let claimed = store.claim_due("b", 10, vec![], MINUTE).await.unwrap();
    assert_eq!((ids(&claimed), claimed[0].attempts), (vec!["m1"], 0), "a's lease expired: b's claim is the replay");
    assert!(store.update("b", result("m1", DeliveryState::Delivered)).await.unwrap());
    assert_eq!(store.delivery("m1").await.unwrap().unwrap().state, DeliveryState::Delivered, "not replayed twice");
    assert!(store.claim_due("c", 10, vec![], MINUTE).await.unwrap().is_empty());
}

pub async fn listings_carry_every_attempt(store: &dyn Store) {
    for i in 0..3 {
        store.ingest(event(&format!("e{i}")), vec![delivery(&format!("m{i}"))]).await.unwrap();
    }
    store.claim_due("a", 10, vec![], MINUTE).await.unwrap();
    store.update("a", result("m0", DeliveryState::Retrying)).await.unwrap();
    store.update("a", result("m1", DeliveryState::Delivered)).await.unwrap();
    store.release("a", vec!["m2".into()]).await.unwrap();
    store.replay(DeliveryFilter { id: Some("m0".into()), ..DeliveryFilter::default() }).await.unwrap();
    store.claim_due("a", 10, vec![], MINUTE).await.unwrap();
    store.update("a", result("m0", DeliveryState::Delivered)).await.unwrap();

    let page = store.list_deliveries(DeliveryFilter::default()).await.unwrap();
    let attempts: Vec<(&str, usize)> = page.iter().map(|d| (d.id.as_str(), d.attempts.len())).collect();
    assert_eq!(attempts, [("m2", 0), ("m1", 1), ("m0", 2)], "newest first, each with its own attempts");
    let statuses: Vec<Option<u16>> = page[2].attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(500), Some(200)], "in the order they were made");
    let stats = store.queue_stats().await.unwrap();
    assert_eq!((stats.due, stats.held), (1, 0));

    let sent = store.delivery_body("m1").await.unwrap().expect("m1 was transformed");
    assert_eq!(sent.body, b"{}");
    assert_eq!(store.delivery_body("m2").await.unwrap(), None, "m2 was never sent");
    let count = |state: Option<DeliveryState>| {
        store.count_deliveries(DeliveryFilter { state, limit: Some(1), ..DeliveryFilter::default() })
    };
    assert_eq!(count(None).await.unwrap(), 3, "a count ignores the page size");
    assert_eq!(count(Some(DeliveryState::Delivered)).await.unwrap(), 2);
    assert_eq!(count(Some(DeliveryState::Dead)).await.unwrap(), 0);
}

pub async fn retention_deletes_only_final_deliveries_and_unreferenced_events(store: &dyn Store) {
    let to = |id: &str, webhook: &str| NewDelivery { webhook_id: webhook.into(), ..delivery(id) };
    // e1: one delivery per state; e2: no subscriber; e3: every delivery final.
    let states = [
        DeliveryState::Delivered,
        DeliveryState::Filtered,
        DeliveryState::Dead,
        DeliveryState::Held,
        DeliveryState::Retrying,
    ];
    let deliveries: Vec<NewDelivery> = states.iter().map(|s| to(&format!("m-{}", s.as_str()), s.as_str())).collect();
    store.ingest(event("e1"), [deliveries, vec![to("m-pending", "pending")]].concat()).await.unwrap();
    store.ingest(event("e2"), vec![]).await.unwrap();
    store.ingest(event("e3"), vec![to("m-e3", "delivered")]).await.unwrap();
    store.claim_due("a", 10, vec!["pending".into()], MINUTE).await.unwrap();
    for state in states {
        assert!(store.update("a", result(&format!("m-{}", state.as_str()), state)).await.unwrap());
    }
    assert!(store.update("a", result("m-e3", DeliveryState::Delivered)).await.unwrap());

    let before = store.expire(now_ms() - 60_000, 100, EventCursor::default()).await.unwrap();
    assert_eq!((before.deliveries, before.events), (0, 0), "nothing is old enough yet");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut cursor = EventCursor::default();
    let mut removed = (0, 0);
    loop {
        let expired = store.expire(now_ms(), 2, cursor).await.unwrap();
        removed = (removed.0 + expired.deliveries, removed.1 + expired.events);
        cursor = expired.events_cursor;
        if !expired.more {
            break;
        }
    }
    assert_eq!(removed, (4, 2), "delivered, filtered, dead and e3's; events e2 and e3");
    let mut left: Vec<String> =
        store.list_deliveries(DeliveryFilter::default()).await.unwrap().into_iter().map(|d| d.id).collect();
    left.sort();
    assert_eq!(left, ["m-held", "m-pending", "m-retrying"], "pending, retrying and held are kept");
    assert!(store.event("e1").await.unwrap().is_some(), "e1 still has deliveries");
    assert!(store.event("e2").await.unwrap().is_none() && store.event("e3").await.unwrap().is_none());
    assert_eq!(
        store.ingest(event("e3"), vec![]).await.unwrap(),
        IngestOutcome::Accepted { deliveries: 0 },
        "past the dedup window"
    );
}

pub async fn next_due_skips_deliveries_in_flight(store: &dyn Store) {
    store.ingest(event("e1"), vec![delivery("m1")]).await.unwrap();
    assert!(store.next_due_ms().await.unwrap().is_some());
    store.claim_due("a", 10, vec![], MINUTE).await.unwrap();
    assert_eq!(store.next_due_ms().await.unwrap(), None, "m1 is in flight: nothing for a claim to take");
}

/// Two creations of one id (two hosts at once): the first is kept, the second told so. A
/// replacement applies only over the definition it was computed from.
pub async fn a_webhook_is_created_once_and_replaced_only_as_read(store: &dyn Store) {
    let (first, second) =
        tokio::join!(store.create_webhook("w", "first".into()), store.create_webhook("w", "second".into()));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert!(first ^ second, "exactly one creation wins: {first} {second}");
    let kept = if first { "first" } else { "second" };
    assert_eq!(store.stored_webhook("w").await.unwrap().as_deref(), Some(kept));
    assert!(!store.replace_webhook("w", "stale", "lost".into()).await.unwrap());
    assert!(store.replace_webhook("w", kept, "replaced".into()).await.unwrap());
    assert!(!store.create_webhook("w", "third".into()).await.unwrap());
    assert_eq!(store.stored_webhooks().await.unwrap(), vec![("w".to_string(), "replaced".to_string())]);
    assert!(store.delete_webhook("w").await.unwrap());
    assert!(!store.replace_webhook("w", "replaced", "back".into()).await.unwrap(), "a deleted webhook stays deleted");
    assert_eq!(store.stored_webhook("w").await.unwrap(), None);
}

fn version(sha256: &str, uploaded_at_ms: i64) -> PluginVersion {
    PluginVersion { plugin: "p".into(), sha256: sha256.into(), size: 0, uploaded_at_ms, uploaded_by: "file".into() }
}

/// Versions are stored once by content, listed newest first, pruned to the newest `keep`
/// except the versions serving; a canary ends only if it is still the one named.
pub async fn plugin_versions_are_kept_newest_first_and_serving_ones_never_pruned(store: &dyn Store) {
    let now = now_ms();
    assert!(store.put_plugin_version(version("a", now - 3000), b"wasm a".to_vec()).await.unwrap());
    assert!(!store.put_plugin_version(version("a", now), b"wasm a".to_vec()).await.unwrap(), "stored once");
    store
        .activate_plugin(PluginActivation { plugin: "p".into(), sha256: "a".into(), canary: None, by_file: true })
        .await
        .unwrap();
    assert!(store.put_plugin_version(version("b", now - 2000), b"wasm b".to_vec()).await.unwrap());
    assert!(store.put_plugin_version(version("c", now - 1000), b"wasm c".to_vec()).await.unwrap());
    assert!(store.put_plugin_version(version("d", now), b"wasm d".to_vec()).await.unwrap());
    store.prune_plugin_versions("p", 2).await.unwrap();
    let listed: Vec<(String, u64)> =
        store.plugin_versions("p").await.unwrap().into_iter().map(|v| (v.sha256, v.size)).collect();
    assert_eq!(listed, [("d".into(), 6), ("c".into(), 6), ("a".into(), 6)], "b pruned; a serves, so it stays");
    assert_eq!(store.plugin_wasm("p", "a").await.unwrap().as_deref(), Some(&b"wasm a"[..]));
    assert_eq!(store.plugin_wasm("p", "b").await.unwrap(), None);
    assert!(store.plugin_versions("other").await.unwrap().is_empty());

    let canary = Canary { sha256: "d".into(), percent: 10, since_ms: now };
    let with_canary = PluginActivation { plugin: "p".into(), sha256: "a".into(), canary: Some(canary), by_file: true };
    store.activate_plugin(with_canary.clone()).await.unwrap();
    let read = store.plugin_activations().await.unwrap();
    assert_eq!(read.len(), 1);
    let read_canary = read[0].canary.as_ref().expect("the canary is stored");
    assert_eq!((read_canary.sha256.as_str(), read_canary.percent), ("d", 10));
    assert!((read_canary.since_ms - now).abs() < 1000, "since is on this host's clock");
    assert!(!store.end_canary("p", "c").await.unwrap(), "not the canary");
    assert!(store.end_canary("p", "d").await.unwrap());
    assert!(!store.end_canary("p", "d").await.unwrap(), "ended once");
    assert_eq!(
        store.plugin_activations().await.unwrap(),
        [PluginActivation { plugin: "p".into(), sha256: "a".into(), canary: None, by_file: true }]
    );
    store.deactivate_plugin("p").await.unwrap();
    assert!(store.plugin_activations().await.unwrap().is_empty());
}

pub async fn stored_events_of_a_webhook_come_newest_first(store: &dyn Store) {
    for (event_id, delivery_id) in [("e1", "m1"), ("e2", "m2"), ("e3", "m3")] {
        store.ingest(event(event_id), vec![delivery(delivery_id)]).await.unwrap();
    }
    store
        .ingest(event("e4"), vec![NewDelivery { id: "m4".into(), webhook_id: "other".into(), lease: None }])
        .await
        .unwrap();
    let ids = |webhooks: &[&str]| webhooks.iter().map(|w| w.to_string()).collect::<Vec<_>>();
    let pair = |webhook: &str, event: &str| (webhook.to_string(), event.to_string());
    assert_eq!(store.webhook_event_ids(&ids(&["w"]), None, 2).await.unwrap(), [pair("w", "e3"), pair("w", "e2")]);
    assert_eq!(
        store.webhook_event_ids(&ids(&["w", "other"]), None, 10).await.unwrap(),
        [pair("other", "e4"), pair("w", "e3"), pair("w", "e2"), pair("w", "e1")]
    );
    assert!(store.webhook_event_ids(&ids(&["w"]), Some(now_ms() + 60_000), 10).await.unwrap().is_empty());
    assert!(store.webhook_event_ids(&[], None, 10).await.unwrap().is_empty());

    assert_eq!(store.plugin_file("p").await.unwrap(), None);
    store.set_plugin_file("p", "a").await.unwrap();
    store.set_plugin_file("p", "b").await.unwrap();
    assert_eq!(store.plugin_file("p").await.unwrap().as_deref(), Some("b"));
}
