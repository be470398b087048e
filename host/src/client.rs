//! The CLI's side of the HTTP API: a small client for a running server, and the tables the
//! operator commands print (`--json` prints the server's JSON instead).

use anyhow::{Context, bail};
use serde_json::Value;

use crate::api::types::{DeployedVersion, PluginActivation, PluginVersions};
use crate::config::WebhookConfig;
use crate::dryrun::{Decision, DryRunReport};

/// A running server's base URL and admin token.
pub struct AdminClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(base: &str, token: Option<String>) -> AdminClient {
        AdminClient { base: base.trim_end_matches('/').to_string(), token, http: reqwest::Client::new() }
    }

    /// Sends `method` to `path` with `body` as JSON (`Value::Null`: no body). A non-2xx answer
    /// is an error carrying the server's message.
    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let request = self.http.request(method, format!("{}{path}", self.base));
        let request = match body {
            None | Some(Value::Null) => request,
            Some(body) => request.header("content-type", "application/json").body(body.to_string()),
        };
        self.send(request).await
    }

    /// Sends a WebAssembly component as the body of `method path`.
    pub async fn send_component(&self, method: reqwest::Method, path: &str, wasm: Vec<u8>) -> anyhow::Result<Value> {
        let request = self.http.request(method, format!("{}{path}", self.base));
        self.send(request.header("content-type", "application/wasm").body(wasm)).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let (url, status, body) = self.exchange(request).await?;
        if !status.is_success() {
            bail!("{url} answered {}: {}", status.as_u16(), body["error"].as_str().unwrap_or("no message"));
        }
        Ok(body)
    }

    /// `GET path`; `None` when the server answers 404.
    async fn get_if_exists(&self, path: &str) -> anyhow::Result<Option<Value>> {
        let (url, status, body) = self.exchange(self.http.get(format!("{}{path}", self.base))).await?;
        match status {
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => Ok(Some(body)),
            status => bail!("{url} answered {}: {}", status.as_u16(), body["error"].as_str().unwrap_or("no message")),
        }
    }

    /// Makes the server's webhook `wanted.id` what `wanted` defines: creates it, replaces it
    /// if any field differs (a `secret` left out keeps the one it has), or leaves it.
    pub async fn apply_webhook(&self, wanted: &WebhookConfig) -> anyhow::Result<Applied> {
        let path = format!("/v1/webhooks/{}", wanted.id);
        let body = serde_json::to_value(wanted)?;
        let Some(current) = self.get_if_exists(&path).await? else {
            self.request(reqwest::Method::POST, "/v1/webhooks", Some(&body)).await?;
            return Ok(Applied::Created);
        };
        let same_secret = match &wanted.secret {
            None => true,
            Some(secret) => {
                let shown = self.request(reqwest::Method::GET, &format!("{path}/secret"), None).await?;
                shown["secret"] == secret.as_str()
            }
        };
        if same_secret && WebhookConfig::SHOWN_FIELDS.iter().all(|field| current[field] == body[field]) {
            return Ok(Applied::Unchanged);
        }
        self.request(reqwest::Method::PUT, &path, Some(&body)).await?;
        Ok(Applied::Replaced)
    }

    async fn exchange(
        &self,
        mut request: reqwest::RequestBuilder,
    ) -> anyhow::Result<(String, reqwest::StatusCode, Value)> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let request = request.build()?;
        let url = request.url().to_string();
        let response = self.http.execute(request).await.with_context(|| format!("connecting to {url}"))?;
        let status = response.status();
        let bytes = response.bytes().await.with_context(|| format!("reading the answer of {url}"))?;
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).with_context(|| format!("{url} did not answer JSON"))?
        };
        Ok((url, status, body))
    }
}

/// What `hookwasm webhooks apply` did to one webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Created,
    Replaced,
    Unchanged,
}

/// The `[[webhooks]]` of a TOML file (a whole hookwasm config file will do: its other
/// sections are ignored).
pub fn read_webhooks_file(path: &std::path::Path) -> anyhow::Result<Vec<WebhookConfig>> {
    #[derive(serde::Deserialize)]
    struct WebhooksFile {
        #[serde(default)]
        webhooks: Vec<WebhookConfig>,
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: WebhooksFile =
        toml::from_str(&text).with_context(|| format!("{} is not a webhooks file", path.display()))?;
    if file.webhooks.is_empty() {
        bail!("{} has no [[webhooks]] entries", path.display());
    }
    Ok(file.webhooks)
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn time(ms: &Value) -> String {
    ms.as_u64()
        .map(|ms| {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
        })
        .unwrap_or_else(|| "-".into())
}

/// Left-aligned columns sized to their content.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out += &line(row);
    }
    out
}

/// `hookwasm plugins`.
pub fn render_plugins(body: &Value) -> String {
    let rows = body["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let webhooks: Vec<String> = p["webhooks"].as_array().into_iter().flatten().map(text).collect();
            vec![
                text(&p["name"]),
                text(&p["state"]),
                p["sha256"].as_str().map_or("-".into(), |s| s[..12].to_string()),
                time(&p["loaded_at"]),
                if webhooks.is_empty() { "-".into() } else { webhooks.join(",") },
                text(&p["last_error"]),
                canary(&p["canary"]),
                hosts(p),
            ]
        })
        .collect();
    table(&["NAME", "STATE", "SHA256", "LOADED AT", "WEBHOOKS", "LAST ERROR", "CANARY", "HOSTS"], rows)
}

/// A canary's version and share, and what each version did since it began.
fn canary(canary: &Value) -> String {
    let Some(sha256) = canary["sha256"].as_str() else { return "-".into() };
    let counts = |side: &Value| format!("{}/{} held", side["held"], side["transforms"]);
    format!(
        "{} {}% ({} vs {})",
        short(sha256),
        canary["percent"],
        counts(&canary["candidate"]),
        counts(&canary["serving"])
    )
}

/// With a shared store: how many live hosts serve the plugin alike, or each one's version.
fn hosts(plugin: &Value) -> String {
    let Some(hosts) = plugin["hosts"].as_array() else { return "-".into() };
    if plugin["drift"] != true {
        return format!("{} alike", hosts.len());
    }
    let each: Vec<String> = hosts
        .iter()
        .map(|h| format!("{}={}", text(&h["host"]), h["sha256"].as_str().map_or("none", |s| &s[..12.min(s.len())])))
        .collect();
    format!("DRIFT {}", each.join(" "))
}

fn delivery_row(d: &Value) -> Vec<String> {
    let attempts = d["attempts"].as_array().cloned().unwrap_or_default();
    let last = attempts.last().map(|a| if a["status"].is_null() { "error".into() } else { text(&a["status"]) });
    vec![
        text(&d["id"]),
        text(&d["state"]),
        text(&d["webhook_id"]),
        text(&d["event_type"]),
        attempts.len().to_string(),
        last.unwrap_or_else(|| "-".into()),
        text(&d["reason"]),
    ]
}

const DELIVERY_HEADER: &[&str] = &["ID", "STATE", "WEBHOOK", "EVENT TYPE", "ATTEMPTS", "LAST", "REASON"];

/// `hookwasm deliveries list`.
pub fn render_deliveries(body: &Value) -> String {
    let rows = body["deliveries"].as_array().into_iter().flatten().map(delivery_row).collect();
    let mut out = table(DELIVERY_HEADER, rows);
    if let Some(next) = body["next_before"].as_str() {
        out += &format!("more: --before {next}\n");
    }
    out
}

/// `hookwasm deliveries show`.
pub fn render_delivery(d: &Value) -> String {
    let mut out = table(DELIVERY_HEADER, vec![delivery_row(d)]);
    out += &format!("event {}  plugin sha256 {}\n\n", text(&d["event_id"]), text(&d["plugin_sha"]));
    let rows = d["attempts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            vec![
                time(&a["at_ms"]),
                text(&a["status"]),
                format!("{} ms", text(&a["latency_ms"])),
                text(&a["error"]),
                text(&a["response_excerpt"]),
            ]
        })
        .collect();
    out + &table(&["AT", "STATUS", "LATENCY", "ERROR", "RESPONSE"], rows)
}

/// `hookwasm events show`: the event and, for every webhook, why it did or did not get it.
pub fn render_event(body: &Value) -> String {
    let event = &body["event"];
    let mut out = format!(
        "event {}  type {}  at {}  received {}\n\n",
        text(&event["id"]),
        text(&event["type"]),
        text(&event["timestamp"]),
        time(&event["received_at_ms"])
    );
    let rows = body["webhooks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| vec![text(&w["webhook"]), text(&w["delivery"]), text(&w["why"])])
        .collect();
    out += &table(&["WEBHOOK", "DELIVERY", "WHY"], rows);
    out
}

/// `hookwasm webhooks list`.
pub fn render_webhooks(body: &Value) -> String {
    let rows = body["webhooks"].as_array().into_iter().flatten().map(webhook_row).collect();
    table(WEBHOOK_HEADER, rows)
}

/// `hookwasm webhooks show|enable|disable`: the row, then the settings it overrides.
pub fn render_webhook(webhook: &Value) -> String {
    let mut out = table(WEBHOOK_HEADER, vec![webhook_row(webhook)]);
    for key in ["filter", "rate_limit", "timeout", "retry_schedule", "max_in_flight", "disable_after"] {
        if !webhook[key].is_null() {
            let value = match &webhook[key] {
                Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
                other => text(other),
            };
            out += &format!("{key}: {value}\n");
        }
    }
    out
}

const WEBHOOK_HEADER: &[&str] = &["ID", "ACTIVE", "URL", "EVENTS", "PLUGIN", "DISABLED BECAUSE"];

fn webhook_row(w: &Value) -> Vec<String> {
    let events: Vec<String> = w["events"].as_array().into_iter().flatten().map(text).collect();
    vec![
        text(&w["id"]),
        text(&w["active"]),
        text(&w["url"]),
        events.join(","),
        text(&w["plugin"]),
        text(&w["disabled_reason"]),
    ]
}

/// `hookwasm webhooks test`.
pub fn render_test(outcome: &Value) -> String {
    let mut out = format!("action    {}\n", text(&outcome["action"]));
    for key in ["reason", "error", "status", "latency_ms", "response_excerpt"] {
        if !outcome[key].is_null() {
            out += &format!("{key:<9} {}\n", text(&outcome[key]));
        }
    }
    if let Some(request) = outcome["request"].as_object() {
        out += &format!("request   POST {}\n", text(&request["url"]));
        for (name, value) in request["headers"].as_object().into_iter().flatten() {
            out += &format!("  {name}: {}\n", text(value));
        }
        out += &format!("{}\n", text(&request["body"]));
    }
    out
}

fn short(sha256: &str) -> &str {
    &sha256[..sha256.len().min(12)]
}

/// `hookwasm plugins deploy`.
pub fn render_deployed(deployed: &DeployedVersion) -> String {
    let stored = if deployed.new { "stored" } else { "already stored" };
    let serving = if deployed.activated { "serving now" } else { "not serving (activate it with `plugins activate`)" };
    format!("{} {} ({} bytes): {stored}, {serving}\n", deployed.plugin, deployed.sha256, deployed.size)
}

/// `hookwasm plugins versions`.
pub fn render_versions(versions: &PluginVersions) -> String {
    let rows = versions
        .versions
        .iter()
        .map(|v| {
            let serves = match (v.serving, v.canary_percent) {
                (true, _) => "serving".to_string(),
                (false, Some(percent)) => format!("canary {percent}%"),
                (false, None) => "-".into(),
            };
            vec![
                v.sha256.clone(),
                serves,
                v.size.to_string(),
                time(&Value::from(v.uploaded_at_ms)),
                v.uploaded_by.clone(),
            ]
        })
        .collect();
    table(&["SHA256", "SERVES", "BYTES", "UPLOADED AT", "UPLOADED BY"], rows)
}

/// `hookwasm plugins activate|promote`.
pub fn render_activation(activation: &PluginActivation) -> String {
    let mut out = format!("{} serving {}\n", activation.plugin, activation.sha256);
    if let Some(canary) = &activation.canary {
        out += &format!("canary {} on {}% of deliveries\n", canary.sha256, canary.percent);
    }
    out
}

/// `hookwasm plugins diff`: the summary, then the first `show` changed events.
pub fn render_dry_run(report: &DryRunReport, show: usize, colour: bool) -> String {
    let paint = |code: &str, text: &str| if colour { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() };
    let summary = &report.summary;
    let mut out = format!(
        "{}: serving {} against candidate {}, {} stored events of {}\n",
        report.plugin,
        short(&report.serving),
        short(&report.candidate),
        summary.events,
        if report.webhooks.is_empty() { "no webhook".to_string() } else { report.webhooks.join(", ") }
    );
    out += &format!(
        "  same {}  body changed {}  action changed {}  new errors {}  errors fixed {}\n",
        summary.same,
        summary.body_changed,
        summary.action_changed,
        if summary.new_errors > 0 { paint("31;1", &summary.new_errors.to_string()) } else { "0".into() },
        summary.errors_fixed
    );
    out += &format!(
        "  time per event: {:.1} µs serving, {:.1} µs candidate\n",
        summary.serving_us_per_event, summary.candidate_us_per_event
    );
    if !report.complete {
        out += &paint("33", "  stopped at the 20 s time budget: the counts cover the events replayed so far");
        out += "\n";
    }
    let changed = summary.events - summary.same;
    for change in report.changes.iter().take(show) {
        let kind =
            serde_json::to_value(change.kind).ok().and_then(|k| k.as_str().map(str::to_string)).unwrap_or_default();
        out += &format!("\n{} {} ({}) to {}\n", paint("1", &kind), change.event_id, change.event_type, change.webhook);
        if change.serving != change.candidate || change.kind != crate::dryrun::ChangeKind::BodyChanged {
            out +=
                &format!("  serving:   {}\n  candidate: {}\n", decision(&change.serving), decision(&change.candidate));
        }
        for op in change.body_patch.as_ref().and_then(Value::as_array).into_iter().flatten() {
            let path = op["path"].as_str().unwrap_or_default();
            let value = || op["value"].to_string();
            out += &match op["op"].as_str().unwrap_or_default() {
                "add" => paint("32", &format!("  + {path}: {}", value())),
                "remove" => paint("31", &format!("  - {path}")),
                "replace" => paint("33", &format!("  ~ {path}: {}", value())),
                other => format!("  {other} {path} {}", op),
            };
            out += "\n";
        }
        if let Some([serving, candidate]) = &change.body_text {
            out += &paint("31", &format!("  - {serving}"));
            out += "\n";
            out += &paint("32", &format!("  + {candidate}"));
            out += "\n";
        }
        for header in &change.headers {
            let (before, after) =
                (header.serving.as_deref().unwrap_or("(none)"), header.candidate.as_deref().unwrap_or("(none)"));
            out += &paint("33", &format!("  header {}: {before} -> {after}", header.name));
            out += "\n";
        }
    }
    let printed = report.changes.len().min(show) as u64;
    if changed > printed {
        out += &format!(
            "\n{} more changed events (--show N prints more, --json prints up to {})\n",
            changed - printed,
            crate::dryrun::MAX_LISTED
        );
    }
    out
}

fn decision(decision: &Decision) -> String {
    match decision {
        Decision::Deliver { body_bytes, headers } => {
            format!(
                "deliver {body_bytes} bytes{}",
                if headers.is_empty() { String::new() } else { format!(", {} headers", headers.len()) }
            )
        }
        Decision::Pass => "pass (the envelope)".into(),
        Decision::Skip { reason } => format!("skip: {reason}"),
        Decision::Error { error } => format!("error: {error}"),
    }
}
