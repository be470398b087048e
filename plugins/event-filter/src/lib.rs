//! `event-filter`: passes an event through unchanged, or skips it, by rules in `plugin_config`.
//!
//! | key | meaning |
//! |---|---|
//! | `types` | comma list of event types to keep; `conversation.*` keeps a prefix |
//! | `labels` | keep only conversations carrying at least one of these labels |
//! | `channels` | keep only these conversation channels (`email`, `chat`, ...) |
//! | `inboxes` | keep only these inboxes, by id or name |
//! | `private` | `include` (default), `exclude` or `only`: what to do with private notes |
//!
//! Every rule that is set must match; an unset rule matches everything.

use hookwasm_plugin_sdk::prelude::*;
use serde::Deserialize;

pub struct EventFilter;

#[derive(Deserialize, Default)]
struct Data {
    #[serde(default)]
    conversation: Conversation,
    message: Option<Message>,
}

#[derive(Deserialize, Default)]
struct Conversation {
    #[serde(default)]
    labels: Vec<String>,
    channel: Option<String>,
    inbox: Option<Inbox>,
}

#[derive(Deserialize)]
struct Inbox {
    id: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    private: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Private {
    Include,
    Exclude,
    Only,
}

fn private_rule() -> Result<Private> {
    match config::get("private").as_deref() {
        None | Some("include") => Ok(Private::Include),
        Some("exclude") => Ok(Private::Exclude),
        Some("only") => Ok(Private::Only),
        Some(other) => {
            Err(Error::msg(format!("plugin_config.private must be include, exclude or only, got {other:?}")))
        }
    }
}

/// `conversation.*` matches `conversation.created`; anything else matches exactly.
pub fn type_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => event_type.starts_with(prefix),
        None => pattern == event_type,
    }
}

impl Plugin for EventFilter {
    fn check_config() -> Result<()> {
        private_rule()?;
        let known = ["types", "labels", "channels", "inboxes", "private"];
        if let Some(unknown) = config::keys().into_iter().find(|k| !known.contains(&k.as_str())) {
            return Err(Error::msg(format!(
                "unknown plugin_config key {unknown:?}; expected one of {}",
                known.join(", ")
            )));
        }
        Ok(())
    }

    fn transform(event: Event) -> Result<Action> {
        let types = config::list("types");
        if !types.is_empty() && !types.iter().any(|t| type_matches(t, &event.event_type)) {
            return Ok(Action::skip(format!("type {} is not in types", event.event_type)));
        }
        let data: Data = event.json()?;
        let conversation = &data.conversation;

        let labels = config::list("labels");
        if !labels.is_empty() && !conversation.labels.iter().any(|l| labels.contains(l)) {
            return Ok(Action::skip(format!("no label in {}", labels.join(","))));
        }
        let channels = config::list("channels");
        if !channels.is_empty() {
            let channel = conversation.channel.as_deref().unwrap_or_default();
            if !channels.iter().any(|c| c == channel) {
                return Ok(Action::skip(format!("channel {channel:?} is not in channels")));
            }
        }
        let inboxes = config::list("inboxes");
        if !inboxes.is_empty() {
            let inbox = conversation.inbox.as_ref();
            let ids = [inbox.and_then(|i| i.id.as_deref()), inbox.and_then(|i| i.name.as_deref())];
            if !ids.iter().flatten().any(|id| inboxes.iter().any(|i| i == id)) {
                return Ok(Action::skip("inbox is not in inboxes"));
            }
        }
        let private = data.message.is_some_and(|m| m.private);
        match (private_rule()?, private) {
            (Private::Exclude, true) => Ok(Action::skip("private note")),
            (Private::Only, false) => Ok(Action::skip("not a private note")),
            _ => Ok(Action::Pass),
        }
    }
}

export_plugin!(EventFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use hookwasm_plugin_sdk::testing;

    fn sample(name: &str) -> Event {
        testing::load_event(format!("{}/../../examples/events/{name}.json", env!("CARGO_MANIFEST_DIR")))
    }

    fn run(name: &str, config: &[(&str, &str)]) -> Action {
        testing::run::<EventFilter>(&sample(name), config).result.unwrap()
    }

    #[test]
    fn empty_config_passes_everything() {
        assert_eq!(run("message.created", &[]), Action::Pass);
        assert_eq!(run("conversation.status_changed", &[]), Action::Pass);
    }

    #[test]
    fn filters_by_type_with_wildcards() {
        let config = [("types", "conversation.*, message.deleted")];
        assert_eq!(run("conversation.assigned", &config), Action::Pass);
        assert_eq!(run("message.created", &config), Action::skip("type message.created is not in types"));
    }

    #[test]
    fn filters_by_label_channel_and_inbox() {
        assert_eq!(run("conversation.label_added", &[("labels", "vip")]), Action::Pass);
        assert!(matches!(run("message.created", &[("labels", "vip")]), Action::Skip(_)));
        assert_eq!(run("message.created", &[("channels", "email")]), Action::Pass);
        assert!(matches!(run("message.created", &[("channels", "chat")]), Action::Skip(_)));
        assert_eq!(run("message.created", &[("inboxes", "Support")]), Action::Pass);
        assert_eq!(run("message.created", &[("inboxes", "inb_support")]), Action::Pass);
        assert!(matches!(run("message.created", &[("inboxes", "inb_sales")]), Action::Skip(_)));
    }

    #[test]
    fn private_notes() {
        let exclude = [("private", "exclude")];
        assert_eq!(run("message.created.private-note", &exclude), Action::skip("private note"));
        assert_eq!(run("message.created", &exclude), Action::Pass);
        let only = [("private", "only")];
        assert_eq!(run("message.created.private-note", &only), Action::Pass);
        assert_eq!(run("message.created", &only), Action::skip("not a private note"));
    }

    #[test]
    fn check_config_rejects_bad_values_and_unknown_keys() {
        let bad = testing::check_config::<EventFilter>(&[("private", "sometimes")]);
        assert!(bad.result.unwrap_err().to_string().contains("plugin_config.private"));
        let unknown = testing::check_config::<EventFilter>(&[("label", "vip")]);
        assert!(unknown.result.unwrap_err().to_string().contains("\"label\""));
        assert!(testing::check_config::<EventFilter>(&[("types", "message.*")]).result.is_ok());
    }
}
