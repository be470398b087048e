//! Webhook filters without code: a CEL expression (the Common Expression Language) over the
//! event's `id`, `type`, `timestamp` and `data`, compiled once when the webhook is loaded and
//! evaluated before its plugin, for example
//! `data.conversation.priority == "urgent" && "vip" in data.conversation.labels`.
//!
//! The cost of one evaluation is bounded by the expression and the event: expressions are at
//! most [`MAX_LENGTH`] bytes, and a comprehension (`all`, `exists`, `exists_one`, `map`,
//! `filter`) may not sit inside another, so an evaluation walks each list in the event at
//! most a few times over, never once per element of another list.

use cel::common::types::{CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt};
use cel::common::value::Val;

use crate::model::Event;

/// The longest filter accepted, in bytes.
pub const MAX_LENGTH: usize = 1024;

thread_local! {
    /// CEL's functions and macros: building them costs more than most evaluations, so each
    /// thread builds them once and every evaluation adds its variables in a scope of its own.
    static STANDARD_LIBRARY: cel::Context<'static, 'static> = cel::Context::default();
}

const COMPREHENSIONS: &[&str] = &["all", "exists", "exists_one", "map", "filter"];

/// A compiled filter.
pub struct Filter {
    program: cel::Program,
    /// The parts of `data` the expression reads: only those are turned into CEL's values.
    reads: Reads,
    /// Which of the event's fields it names (`id`, `type`, `timestamp`, `data`): only those
    /// become variables.
    variables: [bool; 4],
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Filter")
    }
}

impl Filter {
    /// Compiles `source`; the error names the line and column of the mistake.
    pub fn compile(source: &str) -> Result<Filter, String> {
        if source.trim().is_empty() {
            return Err("the filter is empty".into());
        }
        if source.len() > MAX_LENGTH {
            return Err(format!("the filter is {} bytes; at most {MAX_LENGTH}", source.len()));
        }
        let program = cel::Program::compile(source).map_err(|errors| {
            let first = errors.errors.first();
            match first {
                Some(error) => format!("at line {}, column {}: {}", error.pos.0, error.pos.1 + 1, error.msg),
                None => errors.to_string(),
            }
        })?;
        if let Some(offset) = nested_comprehension(source) {
            let (line, column) = line_and_column(source, offset);
            return Err(format!(
                "at line {line}, column {column}: a comprehension inside another one (its cost would grow with the \
                 product of two lists); split the condition"
            ));
        }
        let references = program.references();
        let variables = ["id", "type", "timestamp", "data"].map(|name| references.has_variable(name));
        Ok(Filter { reads: reads_of_data(source), variables, program })
    }

    /// Whether `event` matches. An expression that does not evaluate to a boolean, or fails
    /// on this event (a missing key: test for it with `has(data.x)`), is an error.
    pub fn matches(&self, event: &Event) -> Result<bool, String> {
        let [id, event_type, timestamp, data] = self.variables;
        let data = if data { Some(self.data(event)?) } else { None };
        STANDARD_LIBRARY.with(|root| {
            let mut context = root.new_inner_scope();
            if id {
                context.add_variable_from_value("id", event.id.as_str());
            }
            if event_type {
                context.add_variable_from_value("type", event.event_type.as_str());
            }
            if timestamp {
                context.add_variable_from_value("timestamp", event.timestamp.as_str());
            }
            if let Some(data) = data {
                context.add_variable_as_val("data", data);
            }
            match self.program.execute(&context) {
                Ok(cel::Value::Bool(matched)) => Ok(matched),
                Ok(other) => Err(format!("the filter gave {other:?}, not true or false")),
                Err(error) => Err(error.to_string()),
            }
        })
    }
}

/// What of a JSON value an expression reads: all of it, or some of its fields.
#[derive(Debug, Clone, PartialEq)]
enum Reads {
    Whole,
    Fields(std::collections::BTreeMap<String, Reads>),
}

impl Reads {
    /// Marks `path` (field names from here) as read whole.
    fn add(&mut self, path: &[&str]) {
        let Reads::Fields(fields) = self else { return };
        match path {
            [] => *self = Reads::Whole,
            [first, rest @ ..] => {
                fields.entry(first.to_string()).or_insert_with(|| Reads::Fields(Default::default())).add(rest)
            }
        }
    }
}

/// The parts of `data` that `source` reads, from its `data.a.b` paths outside string
/// literals and comments. A path followed by a call or an index is read whole from its last field before
/// the call (`data.labels.exists(...)` reads `labels`); `data` used any other way is read
/// whole.
fn reads_of_data(source: &str) -> Reads {
    let code = code_only(source);
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut reads = Reads::Fields(Default::default());
    let mut i = 0;
    while i < bytes.len() {
        let starts_data = code[i..].starts_with("data")
            && (i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b'.')
            && !bytes.get(i + 4).is_some_and(|&b| is_ident(b));
        if !starts_data {
            i += 1;
            continue;
        }
        let mut path = Vec::new();
        let mut end = i + 4;
        while bytes.get(end) == Some(&b'.') {
            let start = end + 1;
            let mut stop = start;
            while stop < bytes.len() && is_ident(bytes[stop]) {
                stop += 1;
            }
            if stop == start {
                break;
            }
            path.push(&code[start..stop]);
            end = stop;
        }
        if code[end..].trim_start().starts_with('(') {
            path.pop();
        }
        if path.is_empty() {
            return Reads::Whole;
        }
        reads.add(&path);
        i = end;
    }
    reads
}

impl Filter {
    /// The parts of the event's data the expression reads, as CEL's runtime values, built
    /// while the JSON is parsed: nothing it does not name is built at all.
    fn data(&self, event: &Event) -> Result<Box<dyn Val>, String> {
        use serde::de::DeserializeSeed;
        let mut json = serde_json::Deserializer::from_str(&event.data);
        let value = CelValue(&self.reads).deserialize(&mut json).and_then(|value| json.end().map(|()| value));
        value.map_err(|e| format!("the event's data is not JSON: {e}"))
    }
}

/// Deserializes a JSON value into CEL's runtime values, keeping only what a [`Reads`] names:
/// fields absent from the JSON stay absent, and the others are skipped without being built.
struct CelValue<'r>(&'r Reads);

impl<'de> serde::de::DeserializeSeed<'de> for CelValue<'_> {
    type Value = Box<dyn Val>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Box<dyn Val>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for CelValue<'_> {
    type Value = Box<dyn Val>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Box<dyn Val>, A::Error> {
        let mut kept = std::collections::HashMap::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let reads = match self.0 {
                Reads::Whole => &Reads::Whole,
                Reads::Fields(wanted) => match wanted.get(key.as_ref()) {
                    Some(reads) => reads,
                    None => {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        continue;
                    }
                },
            };
            let value = map.next_value_seed(CelValue(reads))?;
            kept.insert(CelMapKey::from(key.into_owned()), value);
        }
        Ok(Box::new(CelMap::from(kept)))
    }

    // An expression names no fields inside a list's elements, so they are kept whole.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Box<dyn Val>, A::Error> {
        let mut elements = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(element) = seq.next_element_seed(CelValue(&Reads::Whole))? {
            elements.push(element);
        }
        Ok(Box::new(CelList::from(elements)))
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Box<dyn Val>, E> {
        Ok(Box::new(CelString::from(value.to_string())))
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Box<dyn Val>, E> {
        Ok(Box::new(CelBool::from(value)))
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Box<dyn Val>, E> {
        Ok(Box::new(CelInt::from(value)))
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Box<dyn Val>, E> {
        Ok(Box::new(CelUInt::from(value)))
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Box<dyn Val>, E> {
        Ok(Box::new(CelDouble::from(value)))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Box<dyn Val>, E> {
        Ok(Box::new(CelNull))
    }
}

/// `source` with string literals and comments blanked and any other non-ASCII byte made a
/// space: the same offsets, only code left, safe to slice anywhere.
fn code_only(source: &str) -> String {
    let bytes = source.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut code = bytes.to_vec();
    let mut i = 0;
    while i < bytes.len() {
        let end = if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'/') {
            bytes[i..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |n| i + n)
        } else if matches!(bytes[i], b'"' | b'\'') {
            // A literal, maybe raw (`r'...'`, no escapes) or triple-quoted.
            let prefix = bytes[..i].iter().rev().take_while(|b| matches!(b, b'r' | b'R' | b'b' | b'B')).count();
            let standalone = i == prefix || !is_ident(bytes[i - prefix - 1]);
            let raw = standalone && bytes[i - prefix..i].iter().any(|b| matches!(b, b'r' | b'R'));
            let quote = bytes[i];
            let triple = bytes.get(i + 1) == Some(&quote) && bytes.get(i + 2) == Some(&quote);
            let mut j = i + if triple { 3 } else { 1 };
            while j < bytes.len() {
                if !raw && bytes[j] == b'\\' {
                    j += 2;
                } else if triple && bytes[j..].starts_with(&[quote, quote, quote]) {
                    j += 3;
                    break;
                } else if !triple && bytes[j] == quote {
                    j += 1;
                    break;
                } else {
                    j += 1;
                }
            }
            j.min(bytes.len())
        } else {
            if !bytes[i].is_ascii() {
                code[i] = b' ';
            }
            i += 1;
            continue;
        };
        code[i..end].fill(b' ');
        i = end;
    }
    String::from_utf8(code).expect("only ASCII is left")
}

/// The byte offset of a comprehension inside another one's arguments, if any.
fn nested_comprehension(source: &str) -> Option<usize> {
    let code = code_only(source);
    // For each open parenthesis: whether it opened a comprehension's arguments.
    let mut open: Vec<bool> = Vec::new();
    for (i, byte) in code.bytes().enumerate() {
        match byte {
            b'(' => {
                let before = code[..i].trim_end();
                let name_start = before.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |p| p + 1);
                let is_method = before[..name_start].trim_end().ends_with('.');
                let comprehension = is_method && COMPREHENSIONS.contains(&&before[name_start..]);
                if comprehension && open.iter().any(|&inside| inside) {
                    return Some(name_start);
                }
                open.push(comprehension);
            }
            b')' => {
                open.pop();
            }
            _ => {}
        }
    }
    None
}

fn line_and_column(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |p| p + 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: &str) -> Event {
        Event {
            id: "evt_1".into(),
            event_type: "conversation.updated".into(),
            timestamp: "2026-12-01T10:00:00Z".into(),
            data: data.into(),
        }
    }

    #[test]
    fn matches_on_the_event_fields_and_data() {
        let filter =
            Filter::compile(r#"data.conversation.priority == "urgent" && "vip" in data.conversation.labels"#).unwrap();
        let urgent = event(r#"{"conversation": {"priority": "urgent", "labels": ["vip", "billing"]}}"#);
        let low = event(r#"{"conversation": {"priority": "low", "labels": ["vip"]}}"#);
        assert_eq!(filter.matches(&urgent), Ok(true));
        assert_eq!(filter.matches(&low), Ok(false));
        let by_type = Filter::compile(r#"type.startsWith("conversation.") && id == "evt_1""#).unwrap();
        assert_eq!(by_type.matches(&low), Ok(true));
        let labels = Filter::compile(r#"data.conversation.labels.exists(l, l == "billing")"#).unwrap();
        assert_eq!(labels.matches(&urgent), Ok(true));
        let whole =
            Filter::compile(r#"data.size() == 2 && data["n"] > 1 && data.x.y[1] == -2.5 && data.z == null"#).unwrap();
        let numbers = event(r#"{"n": 3, "x": {"y": [true, -2.5]}, "z": null}"#);
        assert_eq!(whole.matches(&numbers), Ok(false), "three fields, not two");
        let whole =
            Filter::compile(r#"data.size() == 3 && data["n"] > 1 && data.x.y[1] == -2.5 && data.z == null"#).unwrap();
        assert_eq!(whole.matches(&numbers), Ok(true));
    }

    #[test]
    fn mistakes_are_named_with_their_position() {
        let error = Filter::compile("data.priority == ").unwrap_err();
        assert!(error.starts_with("at line 1, column"), "{error}");
        let error = Filter::compile("type == \"a\" &&\n  data.x.all(a, data.y.exists(b, b == a))").unwrap_err();
        assert!(error.starts_with("at line 2, column 24: a comprehension inside another"), "{error}");
        assert!(Filter::compile("").is_err());
        assert!(Filter::compile(&"a".repeat(MAX_LENGTH + 1)).unwrap_err().contains("at most 1024"));
        assert!(Filter::compile(r#"data.x.all(a, a == "y.exists(b, b)")"#).is_ok(), "inside a string");
        let spaced = Filter::compile("data.a.all (x, data.b.exists (y, y == x))").unwrap_err();
        assert!(spaced.contains("a comprehension inside another"), "{spaced}");
        assert!(Filter::compile("data.x == 1 // café(\n").is_ok(), "non-ASCII in a comment");
    }

    #[test]
    fn only_the_fields_an_expression_reads_are_converted() {
        let reads = reads_of_data(
            r#"data.conversation.priority == "urgent" && "vip" in data.conversation.labels && data.x.exists(a, a > 1) && has(data.y.z) && "data.no" != """#,
        );
        let fields =
            |pairs: Vec<(&str, Reads)>| Reads::Fields(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
        let expected = fields(vec![
            ("conversation", fields(vec![("labels", Reads::Whole), ("priority", Reads::Whole)])),
            ("x", Reads::Whole),
            ("y", fields(vec![("z", Reads::Whole)])),
        ]);
        assert_eq!(reads, expected);
        assert_eq!(reads_of_data("data.size() > 2"), Reads::Whole);
        assert_eq!(reads_of_data("data == {}"), Reads::Whole);
        assert_eq!(reads_of_data(r#"data["a"] == 1"#), Reads::Whole);
        let commented = "// don't send tests\ndata.env != 'test' && r'C:\\' != data.drive && '''it's''' != data.x";
        let whole = |names: &[&str]| Reads::Fields(names.iter().map(|name| (name.to_string(), Reads::Whole)).collect());
        assert_eq!(reads_of_data(commented), whole(&["drive", "env", "x"]));
        let parse = |json: &str, reads: &Reads| {
            use serde::de::DeserializeSeed;
            CelValue(reads).deserialize(&mut serde_json::Deserializer::from_str(json)).unwrap()
        };
        let pruned =
            parse(r#"{"conversation": {"priority": "urgent", "labels": ["vip"], "big": [1, 2]}, "y": 3}"#, &expected);
        let kept = parse(r#"{"conversation": {"priority": "urgent", "labels": ["vip"]}, "y": 3}"#, &Reads::Whole);
        assert!(pruned.equals(kept.as_ref()), "{pruned:?}");
        assert!(!pruned.equals(parse(r#"{"conversation": {"priority": "urgent"}, "y": 3}"#, &Reads::Whole).as_ref()));
    }

    #[test]
    fn a_missing_key_or_a_non_boolean_is_an_error() {
        let filter = Filter::compile("data.conversation.priority == \"urgent\"").unwrap();
        assert!(filter.matches(&event("{}")).is_err());
        let guarded = Filter::compile("has(data.conversation) && data.conversation.priority == \"urgent\"").unwrap();
        assert_eq!(guarded.matches(&event("{}")), Ok(false));
        assert!(Filter::compile("data").unwrap().matches(&event("{}")).unwrap_err().contains("not true or false"));
    }
}
