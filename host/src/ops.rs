//! Operational events: hookwasm tells its operators about trouble through its own pipeline.
//! The worker and the plugin reloader [`Ops::emit`] what happened; a task turns it into an
//! event of type `hookwasm.*` and ingests it like any other. Webhooks subscribed to those
//! types (`hookwasm.*` or exact ones: `*` alone does not include them) receive them signed
//! and retried, through their plugin if they have one.
//!
//! A flood is coalesced: at most one `hookwasm.delivery.dead` (and one
//! `hookwasm.delivery.held`) per webhook per minute, the next one carrying how many there
//! were. Deliveries of `hookwasm.*` events never cause more of them, so a webhook that
//! receives them and fails cannot feed itself.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;

use crate::model::Event;

/// The type prefix of operational events.
pub const PREFIX: &str = "hookwasm.";
/// One `delivery.dead` or `delivery.held` event per webhook per this long, at most.
pub const COALESCE: Duration = Duration::from_secs(60);
/// Operational events waiting to be stored; past this, they are dropped (and logged).
const QUEUE: usize = 1024;

/// Something operators should hear about.
#[derive(Debug, Clone)]
pub enum Happening {
    /// A webhook was disabled (a `410 Gone`, or failing for `disable_after`).
    WebhookDisabled { webhook: String, url: String, reason: String },
    /// A webhook whose attempts were all failing delivered again.
    WebhookRecovered { webhook: String, failing_since_ms: i64 },
    /// A delivery gave up.
    DeliveryDead { webhook: String, delivery: String, event: String, reason: String },
    /// A delivery is held: its plugin failed or is missing.
    DeliveryHeld { webhook: String, delivery: String, event: String, reason: String },
    /// A plugin version (a file or an upload) failed to load.
    PluginLoadFailed { plugin: String, error: String },
    /// A canary held more deliveries than the serving version allows and was ended.
    PluginRolledBack { plugin: String, candidate: String, serving: String, reason: String },
}

impl Happening {
    fn event_type(&self) -> &'static str {
        match self {
            Happening::WebhookDisabled { .. } => "hookwasm.webhook.disabled",
            Happening::WebhookRecovered { .. } => "hookwasm.webhook.recovered",
            Happening::DeliveryDead { .. } => "hookwasm.delivery.dead",
            Happening::DeliveryHeld { .. } => "hookwasm.delivery.held",
            Happening::PluginLoadFailed { .. } => "hookwasm.plugin.load_failed",
            Happening::PluginRolledBack { .. } => "hookwasm.plugin.rolled_back",
        }
    }

    /// The webhook a coalesced kind is counted per.
    fn coalesced_per(&self) -> Option<&str> {
        match self {
            Happening::DeliveryDead { webhook, .. } | Happening::DeliveryHeld { webhook, .. } => Some(webhook),
            _ => None,
        }
    }

    /// The event's `data`; `count` is how many of this kind the event stands for.
    fn data(&self, count: u64) -> serde_json::Value {
        match self {
            Happening::WebhookDisabled { webhook, url, reason } => {
                json!({ "webhook": webhook, "url": url, "reason": reason })
            }
            Happening::WebhookRecovered { webhook, failing_since_ms } => {
                json!({ "webhook": webhook, "failing_since_ms": failing_since_ms })
            }
            Happening::DeliveryDead { webhook, delivery, event, reason }
            | Happening::DeliveryHeld { webhook, delivery, event, reason } => {
                json!({ "webhook": webhook, "delivery": delivery, "event": event, "reason": reason, "count": count })
            }
            Happening::PluginLoadFailed { plugin, error } => json!({ "plugin": plugin, "error": error }),
            Happening::PluginRolledBack { plugin, candidate, serving, reason } => {
                json!({ "plugin": plugin, "candidate": candidate, "serving": serving, "reason": reason })
            }
        }
    }

    fn into_event(self, count: u64) -> Event {
        Event {
            id: crate::model::new_id("evt_hookwasm"),
            event_type: self.event_type().to_string(),
            timestamp: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            data: self.data(count).to_string(),
        }
    }
}

/// At most one log line about dropped happenings per this long.
const DROPS_LOGGED_EVERY: Duration = Duration::from_secs(10);

/// Where happenings are sent; cheap to clone.
#[derive(Clone)]
pub struct Ops {
    sender: mpsc::Sender<Happening>,
    /// Happenings dropped since the last log line about them, and when that was.
    dropped: std::sync::Arc<std::sync::Mutex<(u64, Option<Instant>)>>,
}

impl Ops {
    /// The sender, and the receiving end for [`run`].
    pub fn new() -> (Ops, mpsc::Receiver<Happening>) {
        let (sender, receiver) = mpsc::channel(QUEUE);
        (Ops { sender, dropped: Default::default() }, receiver)
    }

    /// Reports `happening` (never blocks: a full queue drops it, logged at most every
    /// [`DROPS_LOGGED_EVERY`] with how many went).
    pub fn emit(&self, happening: Happening) {
        let Err(error) = self.sender.try_send(happening) else { return };
        let mut dropped = self.dropped.lock().unwrap_or_else(|e| e.into_inner());
        dropped.0 += 1;
        if dropped.1.is_none_or(|at| at.elapsed() >= DROPS_LOGGED_EVERY) {
            tracing::warn!(%error, count = dropped.0, "operational events dropped");
            *dropped = (0, Some(Instant::now()));
        }
    }
}

/// Turns happenings into events and hands each to `ingest` until every [`Ops`] is gone;
/// coalesced kinds at most once per `window` ([`COALESCE`]) per webhook.
pub async fn run<F, Fut>(mut happenings: mpsc::Receiver<Happening>, window: Duration, ingest: F)
where
    F: Fn(Event) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // Per (kind, webhook): when its window opened, and how many came since the last event.
    let mut windows: HashMap<(&'static str, String), (Instant, u64, Option<Happening>)> = HashMap::new();
    let mut flush = tokio::time::interval(window / 10);
    loop {
        tokio::select! {
            happening = happenings.recv() => {
                let Some(happening) = happening else {
                    // Every sender is gone: what the open windows counted goes out now.
                    for (_, (_, count, latest)) in windows.drain() {
                        if let Some(latest) = latest {
                            ingest(latest.into_event(count)).await;
                        }
                    }
                    break;
                };
                let Some(webhook) = happening.coalesced_per().map(String::from) else {
                    ingest(happening.into_event(1)).await;
                    continue;
                };
                let key = (happening.event_type(), webhook);
                match windows.get_mut(&key) {
                    Some((_, count, latest)) => {
                        *count += 1;
                        *latest = Some(happening);
                    }
                    None => {
                        windows.insert(key, (Instant::now(), 0, None));
                        ingest(happening.into_event(1)).await;
                    }
                }
            }
            _ = flush.tick() => {
                let due: Vec<_> = windows.iter().filter(|(_, (opened, _, _))| opened.elapsed() >= window).map(|(key, _)| key.clone()).collect();
                for key in due {
                    let Some((_, count, latest)) = windows.remove(&key) else { continue };
                    if let Some(latest) = latest {
                        // Those that came during the window, as one event; a new window opens.
                        windows.insert(key, (Instant::now(), 0, None));
                        ingest(latest.into_event(count)).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn dead(webhook: &str, n: u32) -> Happening {
        Happening::DeliveryDead {
            webhook: webhook.into(),
            delivery: format!("msg_{n}"),
            event: format!("evt_{n}"),
            reason: "gave up after 10 attempts".into(),
        }
    }

    /// A flood of dead deliveries is one event at once, then one per window with the count.
    #[tokio::test]
    async fn a_flood_is_coalesced_per_webhook_with_a_count() {
        let (ops, happenings) = Ops::new();
        let stored: Arc<Mutex<Vec<Event>>> = Arc::default();
        let sink = stored.clone();
        let task = tokio::spawn(run(happenings, Duration::from_millis(300), move |event| {
            sink.lock().unwrap().push(event);
            std::future::ready(())
        }));
        for n in 0..50 {
            ops.emit(dead("a", n));
        }
        ops.emit(dead("b", 99));
        ops.emit(Happening::PluginLoadFailed { plugin: "p".into(), error: "corrupt".into() });
        tokio::time::sleep(Duration::from_millis(700)).await;
        drop(ops);
        task.await.unwrap();
        let stored = stored.lock().unwrap();
        let summary: Vec<(String, serde_json::Value)> = stored
            .iter()
            .map(|e| {
                let data: serde_json::Value = serde_json::from_str(&e.data).unwrap();
                (e.event_type.clone(), data)
            })
            .collect();
        let of = |webhook: &str| summary.iter().filter(|(_, d)| d["webhook"] == webhook).collect::<Vec<_>>();
        let a = of("a");
        assert_eq!(a.len(), 2, "{summary:?}");
        assert_eq!((a[0].1["count"].clone(), a[0].1["delivery"].clone()), (1.into(), "msg_0".into()));
        assert_eq!((a[1].1["count"].clone(), a[1].1["delivery"].clone()), (49.into(), "msg_49".into()));
        assert_eq!(of("b").len(), 1);
        assert!(summary.iter().any(|(kind, d)| kind == "hookwasm.plugin.load_failed" && d["plugin"] == "p"));
    }
}
