//! Domain types shared by ingest, the store and delivery: the event envelope and its
//! validation. Plugin and HTTP types are converted to these at their module's edge.

use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::plugins::PluginEvent;

/// One event, as accepted from the producer (`{"id", "type", "timestamp", "data"}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub event_type: String,
    /// RFC 3339, as given (or the time of ingest when absent).
    pub timestamp: String,
    /// The `data` object, exactly as received.
    pub data: String,
}

/// Why an event envelope was refused; the message names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("body is not valid JSON: {0}")]
    Malformed(String),
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}` {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl EnvelopeError {
    /// The field at fault, if any.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            EnvelopeError::Malformed(_) => None,
            EnvelopeError::Missing(field) | EnvelopeError::Invalid { field, .. } => Some(field),
        }
    }
}

const MAX_ID_LEN: usize = 128;
const MAX_TYPE_LEN: usize = 128;

impl Event {
    /// Parses and validates an envelope. A missing `id` is generated (`evt_<ulid>`), a
    /// missing `timestamp` is now.
    pub fn parse_envelope(bytes: &[u8]) -> Result<Event, EnvelopeError> {
        #[derive(Deserialize)]
        struct Envelope<'a> {
            #[serde(default, borrow)]
            id: Option<&'a RawValue>,
            #[serde(rename = "type", default, borrow)]
            event_type: Option<&'a RawValue>,
            #[serde(default, borrow)]
            timestamp: Option<&'a RawValue>,
            #[serde(default, borrow)]
            data: Option<&'a RawValue>,
        }
        let envelope: Envelope = serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;

        let id = match optional_string("id", envelope.id)? {
            Some(id) => {
                if id.is_empty() || id.len() > MAX_ID_LEN || !id.bytes().all(is_id_byte) {
                    return Err(EnvelopeError::Invalid {
                        field: "id",
                        reason: format!("must be 1-{MAX_ID_LEN} characters of A-Z a-z 0-9 _ - . :"),
                    });
                }
                id
            }
            None => new_id("evt"),
        };
        let event_type = optional_string("type", envelope.event_type)?.ok_or(EnvelopeError::Missing("type"))?;
        if event_type.is_empty()
            || event_type.len() > MAX_TYPE_LEN
            || !event_type.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        {
            return Err(EnvelopeError::Invalid {
                field: "type",
                reason: format!("must be 1-{MAX_TYPE_LEN} characters of a-z 0-9 . _ -, like message.created"),
            });
        }
        let timestamp = match optional_string("timestamp", envelope.timestamp)? {
            Some(timestamp) => {
                OffsetDateTime::parse(&timestamp, &Rfc3339).map_err(|e| EnvelopeError::Invalid {
                    field: "timestamp",
                    reason: format!("is not an RFC 3339 timestamp: {e}"),
                })?;
                timestamp
            }
            None => now_rfc3339(),
        };
        let data = envelope.data.filter(|d| d.get() != "null").ok_or(EnvelopeError::Missing("data"))?;
        if !data.get().starts_with('{') {
            return Err(EnvelopeError::Invalid { field: "data", reason: "must be a JSON object".into() });
        }
        Ok(Event { id, event_type, timestamp, data: data.get().to_string() })
    }

    /// The envelope as delivered when a webhook has no plugin or its plugin passes.
    pub fn envelope_json(&self) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Envelope<'a> {
            id: &'a str,
            #[serde(rename = "type")]
            event_type: &'a str,
            timestamp: &'a str,
            data: &'a RawValue,
        }
        let data: &RawValue = serde_json::from_str(&self.data).unwrap_or_else(|_| empty_object());
        serde_json::to_vec(&Envelope { id: &self.id, event_type: &self.event_type, timestamp: &self.timestamp, data })
            .unwrap_or_default()
    }

    /// The event as a plugin receives it.
    pub fn plugin_event(&self) -> PluginEvent {
        PluginEvent {
            id: self.id.clone(),
            event_type: self.event_type.clone(),
            timestamp: self.timestamp.clone(),
            data: self.data.as_bytes().to_vec(),
        }
    }
}

fn empty_object() -> &'static RawValue {
    serde_json::from_str("{}").unwrap_or_else(|_| unreachable!("{{}} is JSON"))
}

fn optional_string(field: &'static str, raw: Option<&RawValue>) -> Result<Option<String>, EnvelopeError> {
    match raw {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => serde_json::from_str::<String>(raw.get())
            .map(Some)
            .map_err(|_| EnvelopeError::Invalid { field, reason: "must be a string".into() }),
    }
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')
}

/// Headers hookwasm sets itself on every delivery (framing, identity, Standard Webhooks
/// signature): neither a plugin nor a webhook's configured headers may set them.
pub fn is_reserved_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with("webhook-")
        || ["content-length", "host", "user-agent", "transfer-encoding", "connection"].contains(&name.as_str())
}

/// A new sortable id with a prefix, e.g. `evt_01JDX4M8Q2...`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new())
}

/// The current time as RFC 3339 (UTC).
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_sample_shape_and_fills_defaults() {
        let event = Event::parse_envelope(br#"{"type":"message.created","data":{"a":[1, 2]}}"#).unwrap();
        assert!(event.id.starts_with("evt_"));
        assert_eq!(event.data, r#"{"a":[1, 2]}"#);
        let envelope: serde_json::Value = serde_json::from_slice(&event.envelope_json()).unwrap();
        assert_eq!(envelope["data"]["a"][1], 2);
        assert_eq!(envelope["type"], "message.created");
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"{", None),
            (br#"{"data":{}}"#, Some("type")),
            (br#"{"type":"a.b"}"#, Some("data")),
            (br#"{"type":"a.b","data":[1]}"#, Some("data")),
            (br#"{"type":7,"data":{}}"#, Some("type")),
            (br#"{"type":"a b","data":{}}"#, Some("type")),
            (br#"{"type":"a.b","timestamp":"yesterday","data":{}}"#, Some("timestamp")),
            (br#"{"id":"","type":"a.b","data":{}}"#, Some("id")),
        ];
        for (body, field) in cases {
            let error = Event::parse_envelope(body).unwrap_err();
            assert_eq!(error.field(), *field, "{error}");
        }
    }
}
