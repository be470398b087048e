//! The plugin runtime: every example plugin, and every sandbox limit proven by a hostile plugin.

use std::time::{Duration, Instant};

use hookwasm::plugins::{Action, Limits, LoadError, LoadSource, LogLevel, PluginErrorKind, Runtime};

use crate::support::{config, default_runtime, plugin, plugin_in, plugin_path, runtime, sample};

fn hostile(mode: &str) -> hookwasm::plugins::Execution {
    plugin("hostile").transform(&sample("message.created").plugin_event(), &config(&[("mode", mode)]))
}

fn hostile_error(mode: &str) -> PluginErrorKind {
    let execution = hostile(mode);
    let error = execution.result.expect_err(mode);
    assert_eq!(error.plugin, "hostile");
    error.kind
}

#[test]
fn slack_notify_in_wasm_matches_the_native_build() {
    use hookwasm_plugin_sdk::testing;
    let event = sample("message.created");
    let pairs = [("base_url", "https://desk.example.com"), ("channel", "#support")];
    let execution = plugin("slack-notify").transform(&event.plugin_event(), &config(&pairs));
    let Ok(Action::Deliver { headers, body }) = execution.result else { panic!("{:?}", execution.result) };
    assert!(headers.is_empty());

    let native_event = hookwasm_plugin_sdk::Event::from_envelope(
        &std::fs::read(crate::support::sample_path("message.created")).unwrap(),
    )
    .unwrap();
    let native = testing::run::<slack_notify::SlackNotify>(&native_event, &pairs).result.unwrap();
    let hookwasm_plugin_sdk::Action::Deliver(native) = native else { panic!() };
    assert_eq!(String::from_utf8(body).unwrap(), String::from_utf8(native.body).unwrap());
}

/// Built without WASI (`hookwasm plugin build`), every example plugin imports no WASI at all
/// and decides exactly what its `wasm32-wasip2` build decides, on every sample event.
#[test]
fn plugins_built_without_wasi_import_none_and_decide_the_same() {
    let cases = [
        ("event-filter", vec![("labels", "vip")]),
        ("slack-notify", vec![("base_url", "https://desk.example.com")]),
        ("redact-pii", vec![]),
        ("field-map", vec![("map", "$type=event,conversation.id=ticket")]),
        ("pass-through", vec![]),
    ];
    let names = crate::support::sample_names();
    for (name, pairs) in &cases {
        let bytes = std::fs::read(crate::support::no_wasi_plugin_path(name)).unwrap();
        let engine = wasmtime::Engine::default();
        let component = wasmtime::component::Component::new(&engine, &bytes).unwrap();
        let imports: Vec<String> =
            component.component_type().imports(&engine).map(|(name, _)| name.to_string()).collect();
        assert!(imports.iter().all(|import| import.starts_with("hookwasm:plugin/")), "{name} imports {imports:?}");
        assert_eq!(core_instances(&bytes), 1, "{name} is one core instance");
        let bare = runtime().load(name, &bytes).unwrap();
        assert_eq!(bare.contract(), "0.2.0");
        let wasip2 = plugin(name);
        assert!(bare.check_config(&config(pairs)).result.is_ok(), "{name}");
        for sample_name in &names {
            let event = sample(sample_name).plugin_event();
            let (a, b) = (bare.transform(&event, &config(pairs)), wasip2.transform(&event, &config(pairs)));
            assert_eq!(format!("{:?}", a.result), format!("{:?}", b.result), "{name} on {sample_name}");
            assert_eq!(a.logs, b.logs, "{name} on {sample_name}");
        }
    }
}

/// Core modules a component instantiates: what the 0.2.0 contract's number-only imports keep
/// at one for a plugin without WASI (an import taking a string needs two more).
fn core_instances(component: &[u8]) -> usize {
    wasmparser::Parser::new(0)
        .parse_all(component)
        .map(|payload| match payload.unwrap() {
            wasmparser::Payload::InstanceSection(instances) => instances
                .into_iter()
                .filter(|instance| matches!(instance, Ok(wasmparser::Instance::Instantiate { .. })))
                .count(),
            _ => 0,
        })
        .sum()
}

/// Plugins built against `hookwasm:plugin@0.1.0` (the fixtures, built before 0.2.0 from the
/// same crates) load and decide exactly what the same crates built today decide, with the
/// same logs, on every sample event; their config checks still run.
#[test]
fn plugins_built_against_0_1_0_keep_working() {
    let cases = [
        ("field-map", vec![("map", "$type=event,conversation.id=ticket")]),
        ("field-map", vec![("keep", "conversation.id,message.body")]),
        ("redact-pii", vec![]),
        ("redact-pii", vec![("fields", "message.body")]),
    ];
    let names = crate::support::sample_names();
    for (name, pairs) in &cases {
        let fixture = crate::support::workspace_root().join(format!("tests/fixtures/plugins/{name}-0.1.0.wasm"));
        let old = runtime().load(name, &std::fs::read(&fixture).unwrap()).unwrap();
        let current = plugin(name);
        assert_eq!((old.contract(), current.contract()), ("0.1.0", "0.2.0"));
        assert!(old.check_config(&config(pairs)).result.is_ok(), "{name} {pairs:?}");
        for sample_name in &names {
            let event = sample(sample_name).plugin_event();
            let (a, b) = (old.transform(&event, &config(pairs)), current.transform(&event, &config(pairs)));
            assert_eq!(format!("{:?}", a.result), format!("{:?}", b.result), "{name} on {sample_name}");
            assert_eq!(a.logs, b.logs, "{name} on {sample_name}");
        }
    }
    let field_map = crate::support::workspace_root().join("tests/fixtures/plugins/field-map-0.1.0.wasm");
    let old = runtime().load("field-map", &std::fs::read(field_map).unwrap()).unwrap();
    let rejected = old.check_config(&config(&[("map", "a.b")])).result.unwrap_err();
    let current = plugin("field-map").check_config(&config(&[("map", "a.b")])).result.unwrap_err();
    assert_eq!(rejected.kind, current.kind);
}

/// The sandbox's limits hold for a plugin without WASI too, and its panic message reaches
/// the error through the host's trap-message import.
#[test]
fn the_sandbox_limits_hold_for_plugins_without_wasi() {
    let bytes = std::fs::read(crate::support::no_wasi_plugin_path("hostile")).unwrap();
    let bare = runtime().load("hostile", &bytes).unwrap();
    let run = |mode: &str| {
        bare.transform(&sample("message.created").plugin_event(), &config(&[("mode", mode)]))
            .result
            .expect_err(mode)
            .kind
    };
    assert!(matches!(run("spin"), PluginErrorKind::Timeout(_)));
    assert!(matches!(run("allocate"), PluginErrorKind::MemoryLimit(_)));
    let PluginErrorKind::Trap(message) = run("panic") else { panic!("a panic traps") };
    assert!(message.contains("hostile plugin panics on evt_01JDX4M8Q2"), "{message}");
    assert!(message.contains("src/lib.rs"), "{message}");
    assert!(matches!(run("error"), PluginErrorKind::Returned(_)));
    assert!(matches!(run("reserved-header"), PluginErrorKind::InvalidOutput(_)));
}

#[test]
fn every_example_plugin_runs_on_every_sample() {
    let cases = [
        ("event-filter", vec![("types", "conversation.*")]),
        ("slack-notify", vec![("base_url", "https://desk.example.com")]),
        ("redact-pii", vec![]),
        ("field-map", vec![("map", "$type=event,conversation.id=ticket")]),
    ];
    let names = crate::support::sample_names();
    assert!(names.len() >= 9);
    for (name, pairs) in &cases {
        let plugin = plugin(name);
        assert!(plugin.check_config(&config(pairs)).result.is_ok(), "{name}");
        for sample_name in &names {
            let execution = plugin.transform(&sample(sample_name).plugin_event(), &config(pairs));
            assert!(execution.result.is_ok(), "{name} on {sample_name}: {:?}", execution.result);
        }
    }
    let redacted = plugin("redact-pii").transform(&sample("message.created").plugin_event(), &config(&[]));
    let Ok(Action::Deliver { body, .. }) = redacted.result else { panic!() };
    assert!(!String::from_utf8(body).unwrap().contains("ada.okafor@example.org"));
    let filtered = plugin("event-filter")
        .transform(&sample("message.created").plugin_event(), &config(&[("types", "conversation.*")]));
    assert_eq!(filtered.result.unwrap(), Action::Skip("type message.created is not in types".into()));
}

#[test]
fn config_and_logs_cross_the_boundary() {
    let execution = hostile("echo-config");
    let Ok(Action::Deliver { body, .. }) = execution.result else { panic!("{:?}", execution.result) };
    let pairs: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(pairs, serde_json::json!([["echo-config", "mode"]]));
    let check = plugin("hostile").check_config(&config(&[("mode", "reject-config")]));
    let error = check.result.unwrap_err();
    assert_eq!(error.kind, PluginErrorKind::Returned("mode reject-config always rejects its config".into()));
}

fn spin_with_default_limits() -> PluginErrorKind {
    let hostile = plugin_in(default_runtime(), "hostile");
    hostile.transform(&sample("message.created").plugin_event(), &config(&[("mode", "spin")])).result.unwrap_err().kind
}

#[test]
fn a_spinning_plugin_is_stopped_at_the_deadline() {
    let started = Instant::now();
    assert_eq!(spin_with_default_limits(), PluginErrorKind::Timeout(Duration::from_millis(50)));
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(50) && elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[test]
fn a_sleeping_plugin_is_stopped_at_the_deadline() {
    // Sleeping blocks in the host (WASI poll), where epoch interruption cannot reach.
    let hostile = plugin_in(default_runtime(), "hostile");
    let started = Instant::now();
    let execution = hostile.transform(&sample("message.created").plugin_event(), &config(&[("mode", "sleep")]));
    let elapsed = started.elapsed();
    assert_eq!(execution.result.unwrap_err().kind, PluginErrorKind::Timeout(Duration::from_millis(50)));
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
}

#[test]
fn memory_is_capped() {
    assert_eq!(hostile_error("allocate"), PluginErrorKind::MemoryLimit(32 << 20));
}

#[test]
fn output_size_is_capped() {
    let kind = hostile_error("huge-output");
    assert!(matches!(kind, PluginErrorKind::OutputTooLarge { limit: 1048576, size } if size > 2 << 20), "{kind:?}");
}

#[test]
fn a_panic_is_a_trap_that_carries_the_panic_message() {
    let PluginErrorKind::Trap(message) = hostile_error("panic") else { panic!() };
    assert!(message.contains("hostile plugin panics on evt_01JDX4M8Q2"), "{message}");
}

#[test]
fn a_stack_overflow_is_a_trap() {
    let PluginErrorKind::Trap(message) = hostile_error("recurse") else { panic!() };
    assert!(message.contains("out of bounds") || message.contains("stack"), "{message}");
    assert!(plugin("hostile").transform(&sample("message.created").plugin_event(), &config(&[])).result.is_ok());
}

/// Plugins are built with a 64 KiB stack (`.cargo/config.toml`): enough for serde_json at its
/// nesting limit, parsed into a `Value`, walked, serialized and dropped.
#[test]
fn the_plugin_stack_holds_json_at_serde_json_nesting_limit() {
    let mut data = serde_json::json!({ "email": "someone@example.com" });
    for _ in 0..120 {
        data = serde_json::json!({ "nested": data, "phone": "+1 555 123 4567" });
    }
    let mut event = sample("message.created").plugin_event();
    event.data = serde_json::to_vec(&data).unwrap();
    let execution = plugin("redact-pii").transform(&event, &config(&[]));
    let Ok(Action::Deliver { body, .. }) = execution.result else { panic!("{:?}", execution.result) };
    let text = String::from_utf8(body).unwrap();
    assert!(!text.contains("someone@example.com") && text.matches("nested").count() == 120, "{text}");
}

#[test]
fn returned_errors_and_invalid_output_are_typed() {
    assert_eq!(hostile_error("error"), PluginErrorKind::Returned("the plugin refused this event".into()));
    let PluginErrorKind::InvalidOutput(reserved) = hostile_error("reserved-header") else { panic!() };
    assert!(reserved.contains("webhook-signature is reserved"), "{reserved}");
    let PluginErrorKind::InvalidOutput(not_json) = hostile_error("not-json") else { panic!() };
    assert!(not_json.contains("not JSON"), "{not_json}");
}

#[test]
fn no_files_env_args_or_network() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let execution = plugin("hostile")
        .transform(&sample("message.created").plugin_event(), &config(&[("mode", "probe"), ("connect", &target)]));
    let Ok(Action::Deliver { body, .. }) = execution.result else { panic!("{:?}", execution.result) };
    let probe: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(probe["file"].as_str().unwrap().starts_with("Err"), "{probe}");
    assert!(probe["dir"].as_str().unwrap().starts_with("Err"), "{probe}");
    assert_eq!(probe["env"], serde_json::json!([]));
    assert_eq!(probe["args"], serde_json::json!([]));
    assert!(probe["net"].as_str().unwrap().starts_with("Err"), "{probe}");
    assert!(probe["dns"].as_str().unwrap().starts_with("Err"), "{probe}");
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "the plugin reached the host's listener");
}

#[test]
fn stdout_and_logs_are_captured_and_capped() {
    for mode in ["stdout-flood", "log-flood"] {
        let execution = hostile(mode);
        assert_eq!(execution.result.unwrap(), Action::Pass, "{mode}");
        let kept: usize = execution.logs.iter().map(|l| l.message.len()).sum();
        assert!(kept <= (64 << 10) + 200, "{mode} kept {kept} bytes");
        let last = execution.logs.last().unwrap();
        assert!(last.message.contains("bytes of plugin output dropped"), "{mode}: {last:?}");
    }
    let execution = hostile("stdout-flood");
    assert_eq!(execution.logs[0].level, LogLevel::Stdout);
    assert_eq!(execution.logs[0].message, "line 0 of a flood of stdout");
}

#[test]
fn every_event_gets_a_fresh_instance() {
    for _ in 0..3 {
        let Ok(Action::Deliver { body, .. }) = hostile("counter").result else { panic!() };
        assert_eq!(body, br#"{"calls":1}"#);
    }
}

#[test]
fn a_hostile_plugin_does_not_disturb_others() {
    let spinners: Vec<_> = (0..4).map(|_| std::thread::spawn(spin_with_default_limits)).collect();
    let healthy = plugin("slack-notify");
    for _ in 0..50 {
        let execution =
            healthy.transform(&sample("message.created").plugin_event(), &config(&[("base_url", "https://d.example")]));
        assert!(matches!(execution.result, Ok(Action::Deliver { .. })));
    }
    for spinner in spinners {
        assert!(matches!(spinner.join().unwrap(), PluginErrorKind::Timeout(_)));
    }
}

fn load_bytes(bytes: &[u8]) -> LoadError {
    runtime().load("bad", bytes).expect_err("should not load")
}

#[test]
fn broken_files_are_refused_with_a_clear_error() {
    assert!(matches!(load_bytes(b"hello"), LoadError::NotWasm { .. }));
    let core = wat::parse_str("(module)").unwrap();
    let error = load_bytes(&core);
    assert!(error.to_string().contains("core WebAssembly module does not carry the plugin contract"), "{error}");
    let mut truncated = std::fs::read(plugin_path("slack-notify")).unwrap();
    truncated.truncate(truncated.len() / 2);
    assert!(matches!(load_bytes(&truncated), LoadError::Invalid { .. }));
}

#[test]
fn forbidden_imports_are_named() {
    let component = wat::parse_str(r#"(component (import "wasi:http/outgoing-handler@0.2.0" (instance)))"#).unwrap();
    let error = load_bytes(&component);
    assert!(
        matches!(&error, LoadError::ForbiddenImport { import, .. } if import == "wasi:http/outgoing-handler@0.2.0"),
        "{error}"
    );
    assert!(error.to_string().contains("imports `wasi:http/outgoing-handler@0.2.0`"));
}

#[test]
fn a_component_of_another_world_is_refused() {
    let error = load_bytes(&wat::parse_str("(component)").unwrap());
    assert!(matches!(error, LoadError::WrongInterface { .. }), "{error}");
    assert!(error.to_string().contains("transform"), "{error}");
}

#[test]
fn precompiled_code_is_cached_by_content_hash() {
    let cache = tempfile::tempdir().unwrap();
    let path = plugin_path("event-filter");
    let first = Runtime::new(Limits::default(), Some(cache.path().into())).unwrap().load_file("f", &path).unwrap();
    assert_eq!(first.load_source(), LoadSource::Compiled);
    let second = Runtime::new(Limits::default(), Some(cache.path().into())).unwrap().load_file("f", &path).unwrap();
    assert_eq!(second.load_source(), LoadSource::Cache);
    assert_eq!(first.sha256(), second.sha256());
    let event = sample("message.created").plugin_event();
    assert_eq!(second.transform(&event, &config(&[])).result.unwrap(), Action::Pass);
    drop(second);
    // A corrupt cache entry is recompiled, not trusted. (Replaced, not rewritten in place:
    // entries are memory-mapped, and hookwasm itself only ever renames new files in.)
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        let path = entry.unwrap().path();
        let garbage = cache.path().join("garbage");
        std::fs::write(&garbage, b"garbage").unwrap();
        std::fs::rename(&garbage, &path).unwrap();
    }
    let third = Runtime::new(Limits::default(), Some(cache.path().into())).unwrap().load_file("f", &path).unwrap();
    assert_eq!(third.load_source(), LoadSource::Compiled);
}

#[test]
fn a_new_version_of_known_code_runs_like_the_original() {
    // The second load is a new sha256 whose functions come from the incremental cache.
    let runtime = Runtime::new(Limits::default(), None).unwrap();
    let bytes = std::fs::read(plugin_path("slack-notify")).unwrap();
    let original = runtime.load("slack-notify", &bytes).unwrap();
    let redeployed = runtime.load("slack-notify", &crate::support::variant(&bytes, 1)).unwrap();
    assert_ne!(original.sha256(), redeployed.sha256());
    assert_eq!(redeployed.load_source(), LoadSource::Compiled);
    let pairs = config(&[("base_url", "https://desk.example.com"), ("channel", "#support")]);
    for name in ["message.created", "conversation.updated.large", "conversation.status_changed"] {
        let event = sample(name).plugin_event();
        assert_eq!(
            original.transform(&event, &pairs).result.unwrap(),
            redeployed.transform(&event, &pairs).result.unwrap()
        );
    }
}

/// A pool full of slow deliveries must not make a config check fail (a hot reload, a
/// webhook created through the API): checks have instance slots of their own.
#[test]
fn config_checks_have_instance_slots_of_their_own() {
    let limits = Limits { max_concurrent: 1, deadline: Duration::from_secs(2), ..Limits::default() };
    let runtime: &'static Runtime = Box::leak(Box::new(Runtime::new(limits, None).unwrap()));
    let (hostile, slack) = (plugin_in(runtime, "hostile"), plugin_in(runtime, "slack-notify"));
    let event = sample("message.created").plugin_event();
    let busy = std::thread::spawn(move || hostile.transform(&event, &config(&[("mode", "spin")])));
    std::thread::sleep(Duration::from_millis(300));
    let check = slack.check_config(&config(&[("base_url", "https://desk.example.com")]));
    assert!(!busy.is_finished(), "the spinning call still holds the one delivery instance");
    assert!(check.result.is_ok(), "{:?}", check.result);
    assert!(matches!(busy.join().unwrap().result.unwrap_err().kind, PluginErrorKind::Timeout(_)));
}
