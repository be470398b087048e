//! What delivery reports to operators, as the admin API shows it: a webhook's recent health
//! ([`Health`], kept per host in memory) and the outcome of a test send.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Attempts remembered per webhook.
const RECENT: usize = 100;

/// How a webhook's latest attempts went, on the host answering (since it started).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookHealth {
    /// Attempts counted: the latest, at most 100.
    pub recent_attempts: u32,
    /// Of those, accepted by the endpoint (2xx).
    pub recent_successes: u32,
    /// The latest attempt's HTTP status, if it got an answer.
    pub last_status: Option<u16>,
    /// The latest attempt's error, if it got no answer.
    pub last_error: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub last_attempt_at_ms: Option<i64>,
}

/// The answer to `POST /v1/webhooks/{id}/test`: the request sent and the endpoint's answer,
/// or why nothing was sent.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TestOutcome {
    /// `deliver` (the plugin's body), `pass` (the envelope), `skip` (filter or plugin) or
    /// `error` (the plugin failed).
    pub action: String,
    pub plugin_sha: Option<String>,
    /// Why nothing was sent (`skip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The request sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<TestRequest>,
    pub status: Option<u16>,
    pub latency_ms: Option<u64>,
    pub response_excerpt: Option<String>,
    /// The plugin's failure (`error`) or the request's (no answer).
    pub error: Option<String>,
    pub delivered: bool,
}

/// A request as sent.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TestRequest {
    pub url: String,
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: String,
}

/// The latest attempts of every webhook, on this host.
#[derive(Default)]
pub struct Health {
    webhooks: Mutex<HashMap<String, Recent>>,
}

#[derive(Default)]
struct Recent {
    /// Whether each attempt succeeded, oldest first.
    outcomes: VecDeque<bool>,
    last_status: Option<u16>,
    last_error: Option<String>,
    last_at_ms: Option<i64>,
}

impl Health {
    /// Records an attempt to `webhook`.
    pub fn record(&self, webhook: &str, status: Option<u16>, error: Option<&str>, succeeded: bool) {
        let mut webhooks = self.webhooks.lock().unwrap_or_else(|e| e.into_inner());
        let recent = webhooks.entry(webhook.to_string()).or_default();
        if recent.outcomes.len() == RECENT {
            recent.outcomes.pop_front();
        }
        recent.outcomes.push_back(succeeded);
        recent.last_status = status;
        recent.last_error = error.map(str::to_string);
        recent.last_at_ms = Some(crate::store::now_ms());
    }

    pub fn of(&self, webhook: &str) -> WebhookHealth {
        let webhooks = self.webhooks.lock().unwrap_or_else(|e| e.into_inner());
        let Some(recent) = webhooks.get(webhook) else { return WebhookHealth::default() };
        WebhookHealth {
            recent_attempts: recent.outcomes.len() as u32,
            recent_successes: recent.outcomes.iter().filter(|ok| **ok).count() as u32,
            last_status: recent.last_status,
            last_error: recent.last_error.clone(),
            last_attempt_at_ms: recent.last_at_ms,
        }
    }

    /// Forgets `webhook` (deleted, or its URL changed).
    pub fn forget(&self, webhook: &str) {
        self.webhooks.lock().unwrap_or_else(|e| e.into_inner()).remove(webhook);
    }
}
