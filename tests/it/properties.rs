//! Random input at the binary's ingest boundary: random bytes and random JSON, posted to the
//! real server, always get a 202 or a 4xx that names what is wrong, never a 5xx, and the
//! server keeps serving.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use crate::host::TestHost;

/// Any JSON value, nested a few levels.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Envelopes whose every field may be missing, of the wrong type, or right.
fn envelope() -> impl Strategy<Value = serde_json::Value> {
    let field =
        |right: BoxedStrategy<serde_json::Value>| prop_oneof![Just(None), json().prop_map(Some), right.prop_map(Some)];
    (
        field("[a-zA-Z0-9_]{1,40}".prop_map(serde_json::Value::from).boxed()),
        field("[a-z]{1,10}(\\.[a-z_]{1,12}){0,2}".prop_map(serde_json::Value::from).boxed()),
        field(
            "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]Z"
                .prop_map(serde_json::Value::from)
                .boxed(),
        ),
        field(json().prop_map(|value| serde_json::json!({ "x": value })).boxed()),
    )
        .prop_map(|(id, kind, timestamp, data)| {
            let mut object = serde_json::Map::new();
            for (key, value) in [("id", id), ("type", kind), ("timestamp", timestamp), ("data", data)] {
                if let Some(value) = value {
                    object.insert(key.to_string(), value);
                }
            }
            serde_json::Value::Object(object)
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn random_bytes_and_json_at_ingest_get_a_202_or_a_4xx_naming_the_fault() {
    let host = TestHost::start("", &[]);
    let mut runner = TestRunner::deterministic();
    let mut bodies: Vec<(Vec<u8>, bool)> = Vec::new();
    for _ in 0..150 {
        bodies.push((proptest::collection::vec(any::<u8>(), 0..256).new_tree(&mut runner).unwrap().current(), false));
        bodies.push((serde_json::to_vec(&json().new_tree(&mut runner).unwrap().current()).unwrap(), false));
        bodies.push((serde_json::to_vec(&envelope().new_tree(&mut runner).unwrap().current()).unwrap(), true));
    }
    let mut accepted = 0;
    for (body, is_object) in &bodies {
        let response = host
            .http
            .post(host.url("/v1/events"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let answer: serde_json::Value = response.json().await.unwrap_or_default();
        let shown = String::from_utf8_lossy(body);
        match status {
            202 => accepted += 1,
            400..=499 => {
                assert!(answer["code"].is_string() && answer["error"].is_string(), "{status} {answer} for {shown}");
                if *is_object {
                    assert!(answer["field"].is_string(), "a field is named: {answer} for {shown}");
                }
            }
            _ => panic!("{status} {answer} for {shown}\n{}", host.log()),
        }
    }
    assert!(accepted > 0, "some generated envelopes are valid");
    let health = host.http.get(host.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "the server still serves");
}
