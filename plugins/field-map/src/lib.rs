//! `field-map`: a generic reshaper. Keeps, drops and renames fields of the event's `data`, or
//! builds a new object from a mapping, all from `plugin_config`.
//!
//! | key | meaning |
//! |---|---|
//! | `map` | `from=to` pairs, comma separated: the body is a new object holding only these; `from` may be `$id`, `$type` or `$timestamp` |
//! | `keep` | without `map`: dotted paths to keep; everything else goes |
//! | `drop` | without `map`: dotted paths to remove |
//! | `rename` | without `map`: `from=to` pairs applied after `keep` and `drop` |
//!
//! Paths are dotted keys (`conversation.customer.email`); numbers index arrays
//! (`recent_messages.0.body`). A missing source path is left out of the result.

use hookwasm_plugin_sdk::prelude::*;
use serde_json::{Map, Value};

pub struct FieldMap;

type Pairs = Vec<(String, String)>;

fn pairs(key: &str) -> Result<Pairs> {
    config::list(key)
        .into_iter()
        .map(|pair| match pair.split_once('=') {
            Some((from, to)) if !from.trim().is_empty() && !to.trim().is_empty() => {
                Ok((from.trim().to_string(), to.trim().to_string()))
            }
            _ => Err(Error::msg(format!("plugin_config.{key}: {pair:?} is not from=to"))),
        })
        .collect()
}

fn get<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| match v {
        Value::Object(map) => map.get(key),
        Value::Array(items) => items.get(key.parse::<usize>().ok()?),
        _ => None,
    })
}

fn take(value: &mut Value, path: &str) -> Option<Value> {
    let (parent, last) = match path.rsplit_once('.') {
        Some((parent, last)) => (get_mut(value, parent)?, last),
        None => (value, path),
    };
    match parent {
        Value::Object(map) => map.remove(last),
        _ => None,
    }
}

fn get_mut<'a>(value: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    path.split('.').try_fold(value, |v, key| match v {
        Value::Object(map) => map.get_mut(key),
        Value::Array(items) => items.get_mut(key.parse::<usize>().ok()?),
        _ => None,
    })
}

/// Sets `path` in `value`, creating objects along the way.
fn set(value: &mut Value, path: &str, new: Value) {
    let mut current = value;
    let mut keys = path.split('.').peekable();
    while let Some(key) = keys.next() {
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
        let map = current.as_object_mut().expect("made an object above");
        if keys.peek().is_none() {
            map.insert(key.to_string(), new);
            return;
        }
        current = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    }
}

fn reshape(event: &Event, mut data: Value) -> Result<Value> {
    let map = pairs("map")?;
    if !map.is_empty() {
        let mut out = Value::Object(Map::new());
        for (from, to) in map {
            let found = match from.as_str() {
                "$id" => Some(Value::String(event.id.clone())),
                "$type" => Some(Value::String(event.event_type.clone())),
                "$timestamp" => Some(Value::String(event.timestamp.clone())),
                path => get(&data, path).cloned(),
            };
            if let Some(found) = found {
                set(&mut out, &to, found);
            }
        }
        return Ok(out);
    }
    let keep = config::list("keep");
    if !keep.is_empty() {
        let mut kept = Value::Object(Map::new());
        for path in &keep {
            if let Some(found) = get(&data, path) {
                set(&mut kept, path, found.clone());
            }
        }
        data = kept;
    }
    for path in config::list("drop") {
        take(&mut data, &path);
    }
    for (from, to) in pairs("rename")? {
        if let Some(found) = take(&mut data, &from) {
            set(&mut data, &to, found);
        }
    }
    Ok(data)
}

impl Plugin for FieldMap {
    fn check_config() -> Result<()> {
        pairs("map")?;
        pairs("rename")?;
        if config::get("map").is_some() && ["keep", "drop", "rename"].iter().any(|k| config::get(k).is_some()) {
            return Err(Error::msg(
                "plugin_config.map builds a new object; do not combine it with keep, drop or rename",
            ));
        }
        Ok(())
    }

    fn transform(event: Event) -> Result<Action> {
        let data: Value = event.json()?;
        Action::deliver_json(&reshape(&event, data)?)
    }
}

export_plugin!(FieldMap);

#[cfg(test)]
mod tests {
    use super::*;
    use hookwasm_plugin_sdk::testing;
    use serde_json::json;

    fn sample(name: &str) -> Event {
        testing::load_event(format!("{}/../../examples/events/{name}.json", env!("CARGO_MANIFEST_DIR")))
    }

    fn run(config: &[(&str, &str)]) -> Value {
        testing::delivered_json(&testing::run::<FieldMap>(&sample("message.created"), config).result.unwrap())
    }

    #[test]
    fn map_builds_a_new_object() {
        let out = run(&[(
            "map",
            "$type=event, conversation.id=ticket.id, message.body=text, message.attachments.0.name=file, nope=x",
        )]);
        assert_eq!(
            out,
            json!({
                "event": "message.created",
                "ticket": {"id": "cnv_5Hq8Lm"},
                "text": "Hi, my order #10482 still has not arrived. Tracking says it left the depot on Monday. Can you help? You can reach me on +44 20 7946 0958.",
                "file": "tracking.png"
            })
        );
    }

    #[test]
    fn keep_drop_and_rename() {
        let out = run(&[
            ("keep", "conversation.id,conversation.customer,message.body"),
            ("drop", "conversation.customer.phone"),
            ("rename", "message.body=text"),
        ]);
        assert_eq!(
            out,
            json!({
                "conversation": {"id": "cnv_5Hq8Lm", "customer": {"id": "cus_91Fz", "name": "Ada Okafor", "email": "ada.okafor@example.org"}},
                "message": {},
                "text": "Hi, my order #10482 still has not arrived. Tracking says it left the depot on Monday. Can you help? You can reach me on +44 20 7946 0958."
            })
        );
    }

    #[test]
    fn bad_config_is_rejected() {
        let bad = testing::check_config::<FieldMap>(&[("map", "a.b")]).result.unwrap_err();
        assert_eq!(bad.to_string(), "plugin_config.map: \"a.b\" is not from=to");
        assert!(testing::check_config::<FieldMap>(&[("map", "a=b"), ("drop", "c")]).result.is_err());
    }
}
