//! `hookwasm plugin test`: one plugin, one event, and a report of what would be sent.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::delivery::{request, sign::Secret};
use crate::model::Event;
use crate::plugins::{Action, LogLine, Plugin};

/// The outcome of running a plugin once, as printed by `plugin test` (`--json` prints it
/// serialized).
#[derive(Debug, Serialize)]
pub struct TestReport {
    pub plugin: String,
    pub sha256: String,
    /// `deliver`, `pass`, `skip` or `error`.
    pub action: &'static str,
    /// Why the plugin skipped the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The exact body that would be sent, as text (`null` when nothing would be sent).
    pub body: Option<String>,
    /// Every header that would be sent, signature included.
    pub headers: BTreeMap<String, String>,
    pub logs: Vec<LogLine>,
    pub duration_us: u64,
    /// Linear memory the instance held at the end of the call.
    pub memory_bytes: usize,
    pub error: Option<String>,
}

impl TestReport {
    /// Whether the plugin failed (the CLI exits non-zero).
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// The human-readable form.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let short = &self.sha256[..12.min(self.sha256.len())];
        let _ = writeln!(out, "plugin    {} (sha256 {short})", self.plugin);
        let _ = writeln!(out, "action    {}", self.action);
        if let Some(reason) = &self.reason {
            let _ = writeln!(out, "reason    {reason}");
        }
        if let Some(error) = &self.error {
            let _ = writeln!(out, "error     {error}");
        }
        let _ = writeln!(out, "time      {}", format_duration(Duration::from_micros(self.duration_us)));
        let _ = writeln!(out, "memory    {:.1} MiB", self.memory_bytes as f64 / f64::from(1 << 20));
        if !self.headers.is_empty() {
            let _ = writeln!(out, "headers");
            for (name, value) in &self.headers {
                let _ = writeln!(out, "  {name}: {value}");
            }
        }
        if let Some(body) = &self.body {
            let _ = writeln!(out, "body ({} bytes)", body.len());
            let _ = writeln!(out, "{body}");
        }
        if !self.logs.is_empty() {
            let _ = writeln!(out, "logs");
            for line in &self.logs {
                let level = serde_json::to_value(line.level).ok();
                let level = level.as_ref().and_then(|v| v.as_str()).unwrap_or("?");
                let _ = writeln!(out, "  [{level}] {}", line.message);
            }
        }
        out
    }
}

fn format_duration(duration: Duration) -> String {
    if duration >= Duration::from_millis(1) {
        format!("{:.2} ms", duration.as_secs_f64() * 1e3)
    } else {
        format!("{} us", duration.as_micros())
    }
}

/// Runs `plugin` on `event` with `config`, signs the result with `secret` as delivery would,
/// and reports it.
pub fn run_plugin_test(
    plugin: &Plugin,
    event: &Event,
    config: BTreeMap<String, String>,
    secret: &Secret,
) -> TestReport {
    let execution = plugin.transform(&event.plugin_event(), &Arc::new(config));
    let mut report = TestReport {
        plugin: plugin.name().to_string(),
        sha256: plugin.sha256().to_string(),
        action: "error",
        reason: None,
        body: None,
        headers: BTreeMap::new(),
        logs: execution.logs,
        duration_us: execution.duration.as_micros() as u64,
        memory_bytes: execution.memory_bytes,
        error: None,
    };
    let (plugin_headers, body) = match execution.result {
        Err(error) => {
            report.error = Some(error.to_string());
            return report;
        }
        Ok(Action::Skip(reason)) => {
            report.action = "skip";
            report.reason = Some(reason);
            return report;
        }
        Ok(Action::Pass) => {
            report.action = "pass";
            (Vec::new(), event.envelope_json())
        }
        Ok(Action::Deliver { headers, body }) => {
            report.action = "deliver";
            (headers, body)
        }
    };
    let msg_id = crate::model::new_id("msg");
    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let outgoing = request::build(&msg_id, timestamp, std::slice::from_ref(secret), &[], &plugin_headers, body);
    report.headers = outgoing.headers.into_iter().collect();
    report.body = Some(String::from_utf8_lossy(&outgoing.body).into_owned());
    report
}
