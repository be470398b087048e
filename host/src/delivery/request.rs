//! The exact HTTP request a delivery sends: body plus headers, with the Standard Webhooks
//! signature over those exact bytes. Built once per delivery; retries resend it.

use bytes::Bytes;

use super::sign::Secret;

/// `user-agent` on every request.
pub const USER_AGENT: &str = concat!("hookwasm/", env!("CARGO_PKG_VERSION"));

/// Headers and body of one outgoing webhook request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub headers: Vec<(String, String)>,
    /// Shared with each attempt's request instead of copied into it.
    pub body: Bytes,
}

/// Assembles the request: the webhook's configured headers, then the plugin's, then the
/// headers hookwasm owns (which nothing overrides). `secrets` sign in order; more than one
/// while a secret rotates.
pub fn build(
    msg_id: &str,
    timestamp: i64,
    secrets: &[Secret],
    webhook_headers: &[(String, String)],
    plugin_headers: &[(String, String)],
    body: Vec<u8>,
) -> Outgoing {
    let mut headers: Vec<(String, String)> = Vec::with_capacity(8 + webhook_headers.len() + plugin_headers.len());
    let mut set = |name: &str, value: String| {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        headers.push((name.to_ascii_lowercase(), value));
    };
    set("content-type", "application/json".into());
    for (name, value) in webhook_headers.iter().chain(plugin_headers) {
        set(name, value.clone());
    }
    set("user-agent", USER_AGENT.into());
    set("webhook-id", msg_id.into());
    set("webhook-timestamp", timestamp.to_string());
    let signatures: Vec<String> = secrets.iter().map(|s| s.sign(msg_id, timestamp, &body)).collect();
    set("webhook-signature", signatures.join(" "));
    Outgoing { headers, body: Bytes::from(body) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hookwasm_headers_win_and_plugin_content_type_overrides_the_default() {
        let secret = Secret::generate();
        let out = build(
            "msg_1",
            1700000000,
            &[secret.clone(), Secret::generate()],
            &[("X-Team".into(), "support".into()), ("webhook-id".into(), "forged".into())],
            &[("content-type".into(), "text/plain".into())],
            b"hi".to_vec(),
        );
        let get = |name: &str| out.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("content-type"), Some("text/plain"));
        assert_eq!(get("x-team"), Some("support"));
        assert_eq!(get("webhook-id"), Some("msg_1"));
        let signatures: Vec<&str> = get("webhook-signature").unwrap().split(' ').collect();
        assert_eq!(signatures.len(), 2);
        assert_eq!(signatures[0], secret.sign("msg_1", 1700000000, b"hi"));
    }
}
