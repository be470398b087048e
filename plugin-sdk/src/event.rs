//! The event a plugin receives.

use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// One EasyDesk event, as the producer posted it to hookwasm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unique event id, stable across retries.
    pub id: String,
    /// Dotted event type, e.g. `message.created`.
    pub event_type: String,
    /// RFC 3339 timestamp of when the event happened.
    pub timestamp: String,
    /// The event's `data` object as UTF-8 JSON text.
    pub data: Vec<u8>,
}

impl Event {
    /// Deserializes `data` into `T` (a typed struct or `serde_json::Value`).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.data)
            .map_err(|e| Error::msg(format!("event {} data is not the expected JSON: {e}", self.id)))
    }

    /// Parses an event envelope `{"id", "type", "timestamp", "data"}`, the shape hookwasm
    /// accepts on `POST /v1/events` and the shape of the sample events.
    pub fn from_envelope(json: &[u8]) -> Result<Event> {
        #[derive(serde::Deserialize)]
        struct Envelope<'a> {
            id: String,
            #[serde(rename = "type")]
            event_type: String,
            timestamp: String,
            #[serde(borrow)]
            data: &'a serde_json::value::RawValue,
        }
        let envelope: Envelope = serde_json::from_slice(json)?;
        Ok(Event {
            id: envelope.id,
            event_type: envelope.event_type,
            timestamp: envelope.timestamp,
            data: envelope.data.get().as_bytes().to_vec(),
        })
    }
}
