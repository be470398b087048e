//! `slack-notify`: turns `message.created` and `conversation.*` events into a Slack
//! incoming-webhook message (`text` + Block Kit `blocks`) with a link to the conversation.
//!
//! | key | meaning |
//! |---|---|
//! | `base_url` | required: the help desk's URL; the link is `{base_url}/conversations/{id}` |
//! | `channel` | optional: channel override sent as `channel` |
//! | `include_private` | `true` to also post private notes (default `false`) |
//!
//! Other event types are skipped with a reason.

use hookwasm_plugin_sdk::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

pub struct SlackNotify;

#[derive(Deserialize)]
struct Data {
    conversation: Conversation,
    message: Option<Message>,
    assignee: Option<Person>,
    from: Option<String>,
    to: Option<String>,
    label: Option<String>,
    changes: Option<serde_json::Map<String, Value>>,
}

#[derive(Deserialize)]
struct Conversation {
    id: String,
    #[serde(default, deserialize_with = "or_default")]
    subject: String,
    #[serde(default, deserialize_with = "or_default")]
    status: String,
    #[serde(default, deserialize_with = "or_default")]
    priority: String,
    #[serde(default, deserialize_with = "or_default")]
    channel: String,
    inbox: Option<Named>,
    customer: Option<Person>,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
struct Person {
    #[serde(default, deserialize_with = "or_default")]
    name: String,
}

#[derive(Deserialize)]
struct Message {
    author: Person,
    #[serde(default, deserialize_with = "or_default")]
    body: String,
    #[serde(default, deserialize_with = "or_default")]
    private: bool,
}

/// A field that is absent or `null` takes its default: EasyDesk sends `null` for unset fields.
fn or_default<'de, D, T>(deserializer: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

const MAX_EXCERPT: usize = 280;

fn base_url() -> Result<String> {
    let url = config::require("base_url")?;
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(Error::msg(format!("plugin_config.base_url must be an http(s) URL, got {url:?}")));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Escapes the three characters Slack's mrkdwn treats as control characters.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn excerpt(text: &str) -> String {
    match text.char_indices().nth(MAX_EXCERPT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// The one-line summary (`text`, used by notifications) for an event, or why it is skipped.
fn headline(event_type: &str, data: &Data) -> std::result::Result<String, String> {
    let subject = escape(&data.conversation.subject);
    let line = match event_type {
        "message.created" => {
            let message = data.message.as_ref().ok_or("message.created without a message")?;
            let kind = if message.private { "Private note" } else { "New message" };
            format!("{kind} from {} on “{subject}”", escape(&message.author.name))
        }
        "conversation.created" => format!("New conversation: “{subject}”"),
        "conversation.assigned" => {
            let to = data.assignee.as_ref().map_or("nobody", |a| a.name.as_str());
            format!("“{subject}” assigned to {}", escape(to))
        }
        "conversation.status_changed" => format!(
            "“{subject}” changed from {} to {}",
            data.from.as_deref().unwrap_or("?"),
            data.to.as_deref().unwrap_or("?")
        ),
        "conversation.label_added" => {
            format!("Label `{}` added to “{subject}”", escape(data.label.as_deref().unwrap_or("?")))
        }
        "conversation.label_removed" => {
            format!("Label `{}` removed from “{subject}”", escape(data.label.as_deref().unwrap_or("?")))
        }
        "conversation.updated" => {
            let fields = data.changes.as_ref().map(|c| c.keys().cloned().collect::<Vec<_>>());
            format!("“{subject}” updated ({})", fields.unwrap_or_default().join(", "))
        }
        other if other.starts_with("conversation.") => format!("“{subject}”: {other}"),
        other => return Err(format!("slack-notify does not handle {other}")),
    };
    Ok(line)
}

impl Plugin for SlackNotify {
    fn check_config() -> Result<()> {
        base_url()?;
        config::flag("include_private", false)?;
        Ok(())
    }

    fn transform(event: Event) -> Result<Action> {
        if event.event_type != "message.created" && !event.event_type.starts_with("conversation.") {
            return Ok(Action::skip(format!("slack-notify does not handle {}", event.event_type)));
        }
        let data: Data = event.json()?;
        if data.message.as_ref().is_some_and(|m| m.private) && !config::flag("include_private", false)? {
            return Ok(Action::skip("private note"));
        }
        let text = match headline(&event.event_type, &data) {
            Ok(text) => text,
            Err(reason) => return Ok(Action::skip(reason)),
        };
        let conversation = &data.conversation;
        let link = format!("{}/conversations/{}", base_url()?, conversation.id);

        let mut blocks = vec![json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": format!("*<{link}|{text}>*") }
        })];
        if let Some(message) = &data.message {
            blocks.push(json!({
                "type": "section",
                "text": { "type": "mrkdwn", "text": format!("> {}", escape(&excerpt(&message.body))) }
            }));
        }
        let mut context = vec![
            format!("*Status:* {}", conversation.status),
            format!("*Priority:* {}", conversation.priority),
            format!("*Channel:* {}", conversation.channel),
        ];
        if let Some(inbox) = &conversation.inbox {
            context.push(format!("*Inbox:* {}", escape(&inbox.name)));
        }
        if let Some(customer) = &conversation.customer {
            context.push(format!("*Customer:* {}", escape(&customer.name)));
        }
        blocks.push(json!({
            "type": "context",
            "elements": context.into_iter().map(|t| json!({"type": "mrkdwn", "text": t})).collect::<Vec<_>>()
        }));
        blocks.push(json!({
            "type": "actions",
            "elements": [{
                "type": "button",
                "text": { "type": "plain_text", "text": "Open conversation" },
                "url": link
            }]
        }));

        let mut body = json!({ "text": text, "blocks": blocks });
        if let Some(channel) = config::get("channel") {
            body["channel"] = Value::String(channel);
        }
        Action::deliver_json(&body)
    }
}

export_plugin!(SlackNotify);

#[cfg(test)]
mod tests {
    use super::*;
    use hookwasm_plugin_sdk::testing;

    const CONFIG: &[(&str, &str)] = &[("base_url", "https://desk.example.com/"), ("channel", "#support")];

    fn sample(name: &str) -> Event {
        testing::load_event(format!("{}/../../examples/events/{name}.json", env!("CARGO_MANIFEST_DIR")))
    }

    fn deliver(name: &str) -> Value {
        testing::delivered_json(&testing::run::<SlackNotify>(&sample(name), CONFIG).result.unwrap())
    }

    #[test]
    fn message_created_becomes_a_slack_message_with_a_link() {
        let body = deliver("message.created");
        assert_eq!(body["text"], "New message from Ada Okafor on “Order #10482 has not arrived”");
        assert_eq!(body["channel"], "#support");
        let blocks = body["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "section");
        assert!(blocks[1]["text"]["text"].as_str().unwrap().starts_with("> Hi, my order"));
        assert_eq!(blocks.last().unwrap()["elements"][0]["url"], "https://desk.example.com/conversations/cnv_5Hq8Lm");
    }

    #[test]
    fn every_conversation_event_gets_a_headline() {
        assert_eq!(
            deliver("conversation.status_changed")["text"],
            "“Order #10482 has not arrived” changed from open to resolved"
        );
        assert_eq!(
            deliver("conversation.assigned")["text"],
            "“Order #10482 has not arrived” assigned to Eve Lindqvist"
        );
        assert_eq!(deliver("conversation.updated")["text"], "“Order #10482 has not arrived” updated (priority)");
        assert!(deliver("conversation.label_added")["text"].as_str().unwrap().contains("`vip`"));
        assert!(deliver("conversation.updated.large")["blocks"].is_array());
    }

    #[test]
    fn private_notes_are_skipped_unless_included() {
        let note = sample("message.created.private-note");
        let skipped = testing::run::<SlackNotify>(&note, CONFIG).result.unwrap();
        assert_eq!(skipped, Action::skip("private note"));
        let config = [CONFIG, &[("include_private", "true")]].concat();
        let body = testing::delivered_json(&testing::run::<SlackNotify>(&note, &config).result.unwrap());
        assert!(body["text"].as_str().unwrap().starts_with("Private note from"));
    }

    #[test]
    fn other_events_are_skipped_and_config_is_checked() {
        let event = testing::event("invoice.paid", json!({}));
        let action = testing::run::<SlackNotify>(&event, CONFIG).result.unwrap();
        assert_eq!(action, Action::skip("slack-notify does not handle invoice.paid"));
        let missing = testing::check_config::<SlackNotify>(&[]).result.unwrap_err();
        assert_eq!(missing.to_string(), "plugin_config.base_url is required");
        assert!(testing::check_config::<SlackNotify>(&[("base_url", "desk")]).result.is_err());
        assert!(testing::check_config::<SlackNotify>(CONFIG).result.is_ok());
    }

    #[test]
    fn text_is_escaped_for_slack() {
        assert_eq!(escape("<a> & b"), "&lt;a&gt; &amp; b");
        assert_eq!(excerpt(&"é".repeat(300)).chars().count(), MAX_EXCERPT + 1);
    }
}
