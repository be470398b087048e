//! Dry runs: what would a candidate plugin version change? Replays stored events of the
//! webhooks that use a plugin through the serving version and the candidate, with each
//! webhook's `plugin_config`, sends nothing, and compares what each decided.
//!
//! Calls go through the registry's plugin threads one at a time, and one dry run at a time
//! runs per host, so dry runs never take more than one call's share from deliveries. Events
//! are read one at a time (memory stays at one event), and a run stops after [`TIME_BUDGET`]
//! with what it has (`complete: false`). How far back it can look is bounded by retention
//! (`store.retention`): only events still stored are replayed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::Event;
use crate::plugins::{Action, Execution, Plugin, PluginConfig, Registry};
use crate::store::Store;

/// Events replayed when the request names no limit.
pub const DEFAULT_LIMIT: u32 = 500;
/// The most events one dry run replays.
pub const MAX_LIMIT: u32 = 10_000;
/// The most changed events a report lists one by one (the summary counts them all).
pub const MAX_LISTED: usize = 100;
/// Longest body text kept in a report where a body is not JSON.
const TEXT_EXCERPT: usize = 2048;
/// The largest JSON Patch kept for one event, serialized; a larger one is shown as the
/// bodies' text excerpts instead.
const MAX_PATCH_BYTES: usize = 16 << 10;
/// How long one dry run may take: an HTTP request ends at 30 s.
pub const TIME_BUDGET: Duration = Duration::from_secs(20);

/// One dry run at a time per host.
static ONE_AT_A_TIME: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// What one version did with one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Decision {
    /// Sent this body with these extra headers.
    Deliver { headers: BTreeMap<String, String>, body_bytes: usize },
    /// Sent the event envelope unchanged.
    Pass,
    /// Sent nothing.
    Skip { reason: String },
    /// Failed: the delivery would be held.
    Error { error: String },
}

/// How an event's outcome changed from the serving version to the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Both deliver, with a different body or headers.
    BodyChanged,
    /// A different action (deliver, pass, skip) or skip reason.
    ActionChanged,
    /// The candidate fails where the serving version did not.
    NewError,
    /// The candidate succeeds where the serving version failed.
    ErrorFixed,
}

/// A header whose value differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeaderChange {
    pub name: String,
    pub serving: Option<String>,
    pub candidate: Option<String>,
}

/// One event whose outcome the candidate changes.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventChange {
    pub event_id: String,
    pub event_type: String,
    pub webhook: String,
    pub kind: ChangeKind,
    pub serving: Decision,
    pub candidate: Decision,
    /// Where both deliver JSON bodies: the JSON Patch (RFC 6902) from the serving version's
    /// body to the candidate's.
    #[schema(value_type = Option<Vec<Object>>)]
    pub body_patch: Option<serde_json::Value>,
    /// Where a body is not JSON, or the patch would be over 16 KiB: both bodies as text
    /// (each cut at 2 KiB).
    pub body_text: Option<[String; 2]>,
    pub headers: Vec<HeaderChange>,
}

/// Counts over every event replayed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DryRunSummary {
    pub events: u64,
    /// The same outcome (both failing counts as the same).
    pub same: u64,
    pub body_changed: u64,
    pub action_changed: u64,
    pub new_errors: u64,
    pub errors_fixed: u64,
    /// Mean time per call, serving version (µs).
    pub serving_us_per_event: f64,
    /// Mean time per call, candidate (µs).
    pub candidate_us_per_event: f64,
}

/// The answer to `POST /v1/plugins/{name}/dry-run`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DryRunReport {
    pub plugin: String,
    /// sha256 of the version serving now.
    pub serving: String,
    /// sha256 of the candidate.
    pub candidate: String,
    /// The webhooks whose stored events were replayed.
    pub webhooks: Vec<String>,
    /// False when the run stopped at its time budget (20 s) before the last event; the
    /// summary covers the events replayed.
    pub complete: bool,
    pub summary: DryRunSummary,
    /// Changed events, newest first, at most 100.
    pub changes: Vec<EventChange>,
}

/// Runs the stored events `events` (`(webhook id, event id)`, newest first) through
/// `serving` and `candidate`, each with its webhook's config in `configs`, and compares.
pub async fn run(
    registry: &Registry,
    store: &dyn Store,
    serving: Plugin,
    candidate: Plugin,
    configs: &BTreeMap<String, PluginConfig>,
    events: Vec<(String, String)>,
) -> anyhow::Result<DryRunReport> {
    let _turn = ONE_AT_A_TIME.acquire().await?;
    let started = std::time::Instant::now();
    let mut summary = DryRunSummary::default();
    let mut changes = Vec::new();
    let mut complete = true;
    let (mut serving_time, mut candidate_time) = (Duration::ZERO, Duration::ZERO);
    for (webhook, event_id) in &events {
        if started.elapsed() > TIME_BUDGET {
            complete = false;
            break;
        }
        let (Some(config), Some(record)) = (configs.get(webhook), store.event(event_id).await?) else {
            continue; // expired since it was listed
        };
        let event = Event {
            id: record.id,
            event_type: record.event_type,
            timestamp: record.timestamp,
            data: record.data.get().to_string(),
        };
        let before = registry.transform(serving.clone(), event.plugin_event(), config.clone()).await;
        let after = registry.transform(candidate.clone(), event.plugin_event(), config.clone()).await;
        serving_time += before.duration;
        candidate_time += after.duration;
        summary.events += 1;
        let Some(change) = compare(webhook, &event, before, after) else {
            summary.same += 1;
            continue;
        };
        match change.kind {
            ChangeKind::BodyChanged => summary.body_changed += 1,
            ChangeKind::ActionChanged => summary.action_changed += 1,
            ChangeKind::NewError => summary.new_errors += 1,
            ChangeKind::ErrorFixed => summary.errors_fixed += 1,
        }
        if changes.len() < MAX_LISTED {
            changes.push(change);
        }
    }
    let per_event = |total: Duration| {
        if summary.events == 0 { 0.0 } else { total.as_secs_f64() * 1e6 / summary.events as f64 }
    };
    summary.serving_us_per_event = per_event(serving_time);
    summary.candidate_us_per_event = per_event(candidate_time);
    Ok(DryRunReport {
        plugin: serving.name().to_string(),
        serving: serving.sha256().to_string(),
        candidate: candidate.sha256().to_string(),
        webhooks: configs.keys().cloned().collect(),
        complete,
        summary,
        changes,
    })
}

/// The change from `before` to `after` on `event`, if any.
fn compare(webhook: &str, event: &Event, before: Execution, after: Execution) -> Option<EventChange> {
    let (serving, serving_body) = decision(before);
    let (candidate, candidate_body) = decision(after);
    let kind = match (&serving, &candidate) {
        (Decision::Error { .. }, Decision::Error { .. }) => return None,
        (_, Decision::Error { .. }) => ChangeKind::NewError,
        (Decision::Error { .. }, _) => ChangeKind::ErrorFixed,
        (Decision::Deliver { headers: a, .. }, Decision::Deliver { headers: b, .. }) => {
            if a == b && serving_body == candidate_body {
                return None;
            }
            ChangeKind::BodyChanged
        }
        (a, b) if a == b => return None,
        _ => ChangeKind::ActionChanged,
    };
    let headers = match (&serving, &candidate) {
        (Decision::Deliver { headers: a, .. }, Decision::Deliver { headers: b, .. }) => header_changes(a, b),
        _ => Vec::new(),
    };
    let (body_patch, body_text) = match (&serving_body, &candidate_body) {
        (Some(a), Some(b)) if a != b => body_difference(a, b),
        _ => (None, None),
    };
    Some(EventChange {
        event_id: event.id.clone(),
        event_type: event.event_type.clone(),
        webhook: webhook.to_string(),
        kind,
        serving,
        candidate,
        body_patch,
        body_text,
        headers,
    })
}

/// What an execution decided, and the body it would send if it delivers one.
fn decision(execution: Execution) -> (Decision, Option<Vec<u8>>) {
    match execution.result {
        Ok(Action::Deliver { headers, body }) => {
            (Decision::Deliver { headers: headers.into_iter().collect(), body_bytes: body.len() }, Some(body))
        }
        Ok(Action::Pass) => (Decision::Pass, None),
        Ok(Action::Skip(reason)) => (Decision::Skip { reason }, None),
        Err(error) => (Decision::Error { error: error.kind.to_string() }, None),
    }
}

fn header_changes(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<HeaderChange> {
    let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names
        .into_iter()
        .filter(|name| a.get(*name) != b.get(*name))
        .map(|name| HeaderChange { name: name.clone(), serving: a.get(name).cloned(), candidate: b.get(name).cloned() })
        .collect()
}

/// A JSON Patch between two JSON bodies, or both bodies as text when either is not JSON.
fn body_difference(a: &[u8], b: &[u8]) -> (Option<serde_json::Value>, Option<[String; 2]>) {
    match (serde_json::from_slice::<serde_json::Value>(a), serde_json::from_slice::<serde_json::Value>(b)) {
        (Ok(json_a), Ok(json_b)) => {
            let patch = serde_json::to_value(json_patch::diff(&json_a, &json_b)).ok();
            match patch {
                Some(patch) if patch.to_string().len() <= MAX_PATCH_BYTES => (Some(patch), None),
                _ => (None, Some([excerpt(a), excerpt(b)])),
            }
        }
        _ => (None, Some([excerpt(a), excerpt(b)])),
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(TEXT_EXCERPT)]);
    text.into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_differ_by_a_patch_and_others_by_their_text() {
        let (patch, text) = body_difference(br#"{"text": "a", "n": 1}"#, br#"{"text": "b", "n": 1}"#);
        assert_eq!(patch, Some(serde_json::json!([{"op": "replace", "path": "/text", "value": "b"}])));
        assert_eq!(text, None);
        let (patch, text) = body_difference(b"plain a", br#"{"n": 1}"#);
        assert_eq!(patch, None);
        assert_eq!(text, Some(["plain a".to_string(), r#"{"n": 1}"#.to_string()]));
    }

    #[test]
    fn only_headers_that_differ_are_listed() {
        let a = BTreeMap::from([("x-a".to_string(), "1".to_string()), ("x-b".to_string(), "2".to_string())]);
        let b = BTreeMap::from([("x-a".to_string(), "1".to_string()), ("x-c".to_string(), "3".to_string())]);
        let changes = header_changes(&a, &b);
        assert_eq!(
            changes,
            [
                HeaderChange { name: "x-b".into(), serving: Some("2".into()), candidate: None },
                HeaderChange { name: "x-c".into(), serving: None, candidate: Some("3".into()) },
            ]
        );
    }
}
