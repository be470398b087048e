//! `redact-pii`: masks email addresses and phone numbers in every string of the payload, and
//! blanks whole fields by name. The result is the event envelope with redacted `data`.
//!
//! | key | meaning |
//! |---|---|
//! | `detect` | comma list of `email`, `phone` (default both) |
//! | `fields` | keys whose values are replaced whole wherever they appear, e.g. `name,phone` |
//! | `skip_fields` | keys never touched (default `id,url,created_at,updated_at`) |
//! | `replacement` | text used for a masked value (default `[redacted]`) |

use std::sync::LazyLock;

use hookwasm_plugin_sdk::prelude::*;
use regex_lite::Regex;
use serde_json::{Value, json};

pub struct RedactPii;

static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}").unwrap());
static PHONE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\+?\(?\d[\d ().-]{5,}\d").unwrap());
static DATE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\d{4}-\d{2}-\d{2}").unwrap());

const DEFAULT_SKIP: &str = "id,url,created_at,updated_at";

struct Rules {
    email: bool,
    phone: bool,
    fields: Vec<String>,
    skip_fields: Vec<String>,
    replacement: String,
}

impl Rules {
    fn from_config() -> Result<Rules> {
        let detect = match config::get("detect") {
            Some(_) => config::list("detect"),
            None => vec!["email".into(), "phone".into()],
        };
        if let Some(bad) = detect.iter().find(|d| !matches!(d.as_str(), "email" | "phone")) {
            return Err(Error::msg(format!("plugin_config.detect: unknown detector {bad:?} (email, phone)")));
        }
        let skip_fields = match config::get("skip_fields") {
            Some(_) => config::list("skip_fields"),
            None => DEFAULT_SKIP.split(',').map(String::from).collect(),
        };
        Ok(Rules {
            email: detect.iter().any(|d| d == "email"),
            phone: detect.iter().any(|d| d == "phone"),
            fields: config::list("fields"),
            skip_fields,
            replacement: config::get("replacement").unwrap_or_else(|| "[redacted]".into()),
        })
    }

    fn redact_text(&self, text: &str) -> Option<String> {
        let mut out = std::borrow::Cow::Borrowed(text);
        if self.email && EMAIL.is_match(&out) {
            out = EMAIL.replace_all(&out, regex_lite::NoExpand(&self.replacement)).into_owned().into();
        }
        if self.phone && PHONE.is_match(&out) {
            let replaced = PHONE.replace_all(&out, |m: &regex_lite::Captures| {
                let candidate = &m[0];
                let digits = candidate.chars().filter(char::is_ascii_digit).count();
                if (7..=15).contains(&digits) && !DATE.is_match(candidate) {
                    self.replacement.clone()
                } else {
                    candidate.to_string()
                }
            });
            out = replaced.into_owned().into();
        }
        match out {
            std::borrow::Cow::Owned(changed) if changed != text => Some(changed),
            _ => None,
        }
    }

    /// Redacts `value` in place; returns how many values changed.
    fn redact(&self, value: &mut Value) -> usize {
        match value {
            Value::String(text) => match self.redact_text(text) {
                Some(changed) => {
                    *text = changed;
                    1
                }
                None => 0,
            },
            Value::Array(items) => items.iter_mut().map(|v| self.redact(v)).sum(),
            Value::Object(map) => map
                .iter_mut()
                .map(|(key, v)| {
                    if self.skip_fields.contains(key) {
                        0
                    } else if self.fields.contains(key) && !v.is_null() && !v.is_object() {
                        *v = Value::String(self.replacement.clone());
                        1
                    } else {
                        self.redact(v)
                    }
                })
                .sum(),
            _ => 0,
        }
    }
}

impl Plugin for RedactPii {
    fn check_config() -> Result<()> {
        Rules::from_config().map(|_| ())
    }

    fn transform(event: Event) -> Result<Action> {
        let rules = Rules::from_config()?;
        let mut data: Value = event.json()?;
        let redacted = rules.redact(&mut data);
        log::debug(format!("redacted {redacted} values"));
        Action::deliver_json(&json!({
            "id": event.id,
            "type": event.event_type,
            "timestamp": event.timestamp,
            "data": data,
        }))
    }
}

export_plugin!(RedactPii);

#[cfg(test)]
mod tests {
    use super::*;
    use hookwasm_plugin_sdk::testing;

    fn sample(name: &str) -> Event {
        testing::load_event(format!("{}/../../examples/events/{name}.json", env!("CARGO_MANIFEST_DIR")))
    }

    fn redact(name: &str, config: &[(&str, &str)]) -> Value {
        testing::delivered_json(&testing::run::<RedactPii>(&sample(name), config).result.unwrap())
    }

    #[test]
    fn masks_emails_and_phones_everywhere_but_keeps_dates_and_ids() {
        let out = redact("message.created", &[]);
        let text = out.to_string();
        assert!(!text.contains("ada.okafor@example.org"), "{text}");
        assert!(!text.contains("7946 0958"), "{text}");
        assert_eq!(out["data"]["conversation"]["customer"]["email"], "[redacted]");
        assert_eq!(out["data"]["conversation"]["customer"]["phone"], "[redacted]");
        assert_eq!(
            out["data"]["message"]["body"],
            "Hi, my order #10482 still has not arrived. Tracking says it left the depot on Monday. Can you help? You can reach me on [redacted]."
        );
        assert_eq!(out["data"]["conversation"]["created_at"], "2026-11-27T09:58:02Z");
        assert_eq!(out["id"], "evt_01JDX4M8Q2");
        assert_eq!(out["type"], "message.created");
    }

    #[test]
    fn fields_are_blanked_whole_and_detectors_are_configurable() {
        let out = redact("message.created", &[("fields", "name"), ("detect", "email"), ("replacement", "***")]);
        assert_eq!(out["data"]["conversation"]["customer"]["name"], "***");
        assert_eq!(out["data"]["conversation"]["customer"]["email"], "***");
        assert_eq!(out["data"]["conversation"]["customer"]["phone"], "+44 20 7946 0958");
    }

    #[test]
    fn large_event_has_no_emails_left() {
        let out = redact("conversation.updated.large", &[]);
        assert!(!out.to_string().contains("@example"), "{out}");
    }

    #[test]
    fn bad_detector_is_rejected() {
        let outcome = testing::check_config::<RedactPii>(&[("detect", "email,ssn")]);
        assert!(outcome.result.unwrap_err().to_string().contains("\"ssn\""));
    }
}
