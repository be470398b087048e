//! An example webhook receiver, the one to hand a customer.
//!
//! It does what the EasyDesk webhook docs ask of a receiver:
//! - verifies the `webhook-signature` over the exact body with the official
//!   `standardwebhooks` library (401 otherwise);
//! - rejects timestamps more than five minutes away from now (the library's tolerance), so
//!   a captured request cannot be replayed later;
//! - is idempotent: a repeated `webhook-id` is acknowledged with 200 but has no second
//!   side effect (here the side effect is printing the event).
//!
//! ```sh
//! receiver --listen 127.0.0.1:9000 --secret whsec_...   # or RECEIVER_SECRET=whsec_...
//! ```
//! `GET /stats` answers `{"accepted": n, "duplicates": n, "rejected": n, "by_path": {...}}`.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::get;
use serde_json::json;
use standardwebhooks::Webhook;

/// How many webhook ids to remember for de-duplication. A real receiver keeps them in its
/// database, in the same transaction as the side effect.
const REMEMBERED_IDS: usize = 100_000;

struct Receiver {
    verifier: Webhook,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
    accepted: u64,
    duplicates: u64,
    rejected: u64,
    by_path: BTreeMap<String, u64>,
}

impl Seen {
    /// Records `id`; false if it was already seen.
    fn first_time(&mut self, id: &str) -> bool {
        if !self.ids.insert(id.to_string()) {
            return false;
        }
        self.order.push_back(id.to_string());
        if self.order.len() > REMEMBERED_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        true
    }
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    if let Err(error) = receiver.verifier.verify(&body, &headers) {
        receiver.seen.lock().unwrap_or_else(|e| e.into_inner()).rejected += 1;
        eprintln!("rejected {}: {error}", uri.path());
        return (StatusCode::UNAUTHORIZED, format!("invalid signature: {error}"));
    }
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let mut seen = receiver.seen.lock().unwrap_or_else(|e| e.into_inner());
    if !seen.first_time(&id) {
        seen.duplicates += 1;
        return (StatusCode::OK, "duplicate ignored".into());
    }
    seen.accepted += 1;
    *seen.by_path.entry(uri.path().to_string()).or_default() += 1;
    drop(seen);

    // The side effect: here, show what arrived.
    let text = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(value) => serde_json::to_string(&value).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(&body).into_owned(),
    };
    let excerpt: String = text.chars().take(300).collect();
    let more = if text.chars().count() > 300 { "…" } else { "" };
    println!("verified {} {id} ({} bytes) {excerpt}{more}", uri.path(), body.len());
    (StatusCode::OK, "ok".into())
}

async fn stats(State(receiver): State<Arc<Receiver>>) -> axum::Json<serde_json::Value> {
    let seen = receiver.seen.lock().unwrap_or_else(|e| e.into_inner());
    axum::Json(json!({
        "accepted": seen.accepted,
        "duplicates": seen.duplicates,
        "rejected": seen.rejected,
        "by_path": seen.by_path,
    }))
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage: receiver [--listen ADDR] [--secret whsec_...]   (or RECEIVER_SECRET)");
        return Ok(());
    }
    let listen = arg(&args, "--listen").unwrap_or_else(|| "127.0.0.1:9000".into());
    let Some(secret) = arg(&args, "--secret").or_else(|| std::env::var("RECEIVER_SECRET").ok()) else {
        bail!("a signing secret is required: --secret whsec_... or RECEIVER_SECRET");
    };
    let verifier = Webhook::new(&secret).map_err(|e| anyhow::anyhow!("invalid secret: {e:?}"))?;
    let receiver = Arc::new(Receiver { verifier, seen: Mutex::default() });
    let app = Router::new().route("/stats", get(stats)).fallback(receive).with_state(receiver);
    let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("listening on {listen}"))?;
    println!("receiver listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
