//! Per-event cost of the plugin runtime against the same transform compiled natively, and
//! plugin load time: cold, a new version of known code, and from the precompiled cache.
//!
//! `cargo bench -p hookwasm --bench runtime` (figures in BENCHMARKS.md); `-- filter` runs only
//! the webhook filter's cost against the pass-through plugin, `-- wasi` only plugins built
//! with and without WASI against native, `-- languages` the JavaScript and Python plugins
//! against their Rust twins (load time, memory, per-event p50/p99).

use std::sync::Arc;

use criterion::{Criterion, criterion_group};
use hookwasm::plugins::{Limits, Runtime};

#[allow(dead_code)]
#[path = "../../tests/it/support.rs"]
mod support;

const SLACK_CONFIG: [(&str, &str); 2] = [("base_url", "https://desk.example.com"), ("channel", "#support")];

/// A sample event as the native build of a plugin receives it.
fn native_event(sample: &str) -> hookwasm_plugin_sdk::Event {
    hookwasm_plugin_sdk::Event::from_envelope(&std::fs::read(support::sample_path(sample)).unwrap()).unwrap()
}

/// slack-notify compiled for the host, through the SDK's native harness.
fn native_slack(event: &hookwasm_plugin_sdk::Event) -> hookwasm_plugin_sdk::Action {
    hookwasm_plugin_sdk::testing::run::<slack_notify::SlackNotify>(event, &SLACK_CONFIG).result.unwrap()
}

fn per_event(c: &mut Criterion) {
    let runtime = Runtime::new(Limits::default(), None).unwrap();
    let slack = runtime.load_file("slack-notify", &support::plugin_path("slack-notify")).unwrap();
    let pass = runtime.load_file("pass-through", &support::plugin_path("pass-through")).unwrap();
    let config = support::config(&SLACK_CONFIG);

    let mut group = c.benchmark_group("per_event");
    for sample in ["message.created", "conversation.updated.large"] {
        let event = support::sample(sample).plugin_event();
        let native_event = native_event(sample);
        assert!(slack.transform(&event, &config).result.is_ok());
        group.bench_function(format!("native/slack-notify/{sample}"), |b| b.iter(|| native_slack(&native_event)));
        group.bench_function(format!("wasm/slack-notify/{sample}"), |b| {
            b.iter(|| slack.transform(&event, &config).result.unwrap())
        });
    }
    let event = support::sample("message.created").plugin_event();
    let empty = Arc::new(Default::default());
    group.bench_function("wasm/pass-through/message.created", |b| {
        b.iter(|| pass.transform(&event, &empty).result.unwrap())
    });
    group.finish();
}

fn load(c: &mut Criterion) {
    let path = support::plugin_path("slack-notify");
    let bytes = std::fs::read(&path).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cached = Runtime::new(Limits::default(), Some(cache.path().into())).unwrap();
    cached.load("slack-notify", &bytes).unwrap();
    let warm = Runtime::new(Limits::default(), None).unwrap();
    warm.load("slack-notify", &bytes).unwrap();
    let mut version = 0;

    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    // A new runtime each time: nothing of the plugin has been compiled before.
    group.bench_function("slack-notify/compile", |b| {
        b.iter_batched(
            || Runtime::new(Limits::default(), None).unwrap(),
            |cold| cold.load("slack-notify", &bytes).unwrap(),
            criterion::BatchSize::PerIteration,
        )
    });
    // A new version (new sha256) whose functions the runtime has compiled before: a redeploy.
    group.bench_function("slack-notify/new-version-known-code", |b| {
        b.iter_batched(
            || {
                version += 1;
                support::variant(&bytes, version)
            },
            |variant| warm.load("slack-notify", &variant).unwrap(),
            criterion::BatchSize::PerIteration,
        )
    });
    group.bench_function("slack-notify/from-cache", |b| b.iter(|| cached.load("slack-notify", &bytes).unwrap()));
    group.finish();
}

/// Native and wasm slack-notify in alternating blocks, so that the machine's drift (this VM's
/// speed varies by ±30% over minutes) hits both alike; prints the median block's ratio.
/// Microseconds per call of `run`, over a block of 500 calls.
fn block(run: &dyn Fn()) -> f64 {
    let started = std::time::Instant::now();
    for _ in 0..500 {
        run();
    }
    started.elapsed().as_secs_f64() / 500.0 * 1e6
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn interleaved_ratio() {
    let runtime = Runtime::new(Limits::default(), None).unwrap();
    let slack = runtime.load_file("slack-notify", &support::plugin_path("slack-notify")).unwrap();
    let config = support::config(&SLACK_CONFIG);
    let event = support::sample("message.created").plugin_event();
    let native_event = native_event("message.created");
    let (mut native, mut wasm, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..60 {
        let n = block(&|| {
            std::hint::black_box(native_slack(&native_event));
        });
        let w = block(&|| {
            std::hint::black_box(slack.transform(&event, &config).result.unwrap());
        });
        native.push(n);
        wasm.push(w);
        ratios.push(w / n);
    }
    println!(
        "interleaved slack-notify message.created (60 alternating blocks of 500): native {:.1} µs, wasm {:.1} µs, wasm/native {:.2}x (median of block ratios)",
        median(&mut native),
        median(&mut wasm),
        median(&mut ratios)
    );
}

/// slack-notify and pass-through built for `wasm32-wasip2` and without WASI (`hookwasm plugin
/// build`), against native slack-notify, in alternating blocks.
fn without_wasi() {
    let runtime = Runtime::new(Limits::default(), None).unwrap();
    let load = |name: &str, path: std::path::PathBuf| runtime.load(name, &std::fs::read(path).unwrap()).unwrap();
    let slack = load("slack-notify", support::plugin_path("slack-notify"));
    let slack_bare = load("slack-notify", support::no_wasi_plugin_path("slack-notify"));
    let pass = load("pass-through", support::plugin_path("pass-through"));
    let pass_bare = load("pass-through", support::no_wasi_plugin_path("pass-through"));
    let config = support::config(&SLACK_CONFIG);
    let empty = Arc::new(Default::default());
    let event = support::sample("message.created").plugin_event();
    let native_event = native_event("message.created");
    let mut times = [(); 5].map(|_| Vec::new());
    let (mut wasip2_ratio, mut bare_ratio) = (Vec::new(), Vec::new());
    for _ in 0..60 {
        let native = block(&|| {
            std::hint::black_box(native_slack(&native_event));
        });
        let wasip2 = block(&|| {
            std::hint::black_box(slack.transform(&event, &config).result.unwrap());
        });
        let bare = block(&|| {
            std::hint::black_box(slack_bare.transform(&event, &config).result.unwrap());
        });
        let pass_wasip2 = block(&|| {
            std::hint::black_box(pass.transform(&event, &empty).result.unwrap());
        });
        let pass_bare = block(&|| {
            std::hint::black_box(pass_bare.transform(&event, &empty).result.unwrap());
        });
        for (series, value) in times.iter_mut().zip([native, wasip2, bare, pass_wasip2, pass_bare]) {
            series.push(value);
        }
        wasip2_ratio.push(wasip2 / native);
        bare_ratio.push(bare / native);
    }
    let [native, wasip2, bare, pass_wasip2, pass_bare] = times.map(|mut series| median(&mut series));
    println!(
        "without WASI, message.created (60 alternating blocks of 500): slack-notify native {native:.1} µs, wasip2 {wasip2:.1} µs ({:.2}x), no WASI {bare:.1} µs ({:.2}x); pass-through wasip2 {pass_wasip2:.1} µs, no WASI {pass_bare:.1} µs",
        median(&mut wasip2_ratio),
        median(&mut bare_ratio)
    );
}

/// The JavaScript (SpiderMonkey) and Python (CPython) plugins beside their Rust twins built
/// without WASI: load time (compile, and from the precompiled cache), linear memory per
/// instance, and per-event time of 1,000 calls each, in alternating blocks.
fn languages() {
    const SVIX: &str = "function handler(webhook) {\n  webhook.payload = { text: `${webhook.eventType}: ${webhook.payload.data.conversation.subject}` };\n  return webhook;\n}";
    let cases = [
        ("slack-notify (Rust)", support::no_wasi_plugin_path("slack-notify"), SLACK_CONFIG.to_vec()),
        ("slack-notify-js (TypeScript)", support::script_plugin_path("slack-notify-js"), SLACK_CONFIG.to_vec()),
        ("svix-adapter (JavaScript)", support::script_plugin_path("svix-adapter"), vec![("script", SVIX)]),
        ("redact-pii (Rust)", support::no_wasi_plugin_path("redact-pii"), vec![]),
        ("redact-pii-py (Python)", support::script_plugin_path("redact-pii-py"), vec![]),
    ];
    let cache = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(Limits::default(), Some(cache.path().into())).unwrap();
    let event = support::sample("message.created").plugin_event();
    let mut loaded = Vec::new();
    for (label, path, pairs) in &cases {
        let bytes = std::fs::read(path).unwrap();
        let compiled = runtime.load(label, &bytes).unwrap();
        let from_cache =
            Runtime::new(Limits::default(), Some(cache.path().into())).unwrap().load(label, &bytes).unwrap();
        let config = support::config(pairs);
        let first = compiled.transform(&event, &config);
        assert!(first.result.is_ok(), "{label}: {:?}", first.result);
        loaded.push((
            label,
            bytes.len(),
            compiled.load_time(),
            from_cache.load_time(),
            first.memory_bytes,
            compiled,
            config,
        ));
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..20 {
        for ((.., plugin, config), series) in loaded.iter().zip(&mut times) {
            for call in 0..55 {
                let execution = plugin.transform(&event, config);
                assert!(execution.result.is_ok(), "{:?}", execution.result);
                // The first calls of a block warm the caches the other plugins' blocks cooled.
                if call >= 5 {
                    series.push(execution.duration.as_secs_f64() * 1e6);
                }
            }
        }
    }
    println!("languages, message.created (20 alternating blocks of 50 calls; default limits: 50 ms, 32 MiB):");
    for ((label, size, compile, cached, memory, ..), mut series) in loaded.into_iter().zip(times) {
        series.sort_by(f64::total_cmp);
        let at = |q: f64| series[((series.len() - 1) as f64 * q).round() as usize];
        println!(
            "  {label}: {:.1} MiB file, compile {:.0} ms, from cache {:.1} ms, memory {:.1} MiB, p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
            size as f64 / f64::from(1 << 20),
            compile.as_secs_f64() * 1e3,
            cached.as_secs_f64() * 1e3,
            memory as f64 / f64::from(1 << 20),
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }
}

/// A webhook filter (the README's example) against the pass-through plugin, on the same
/// event, in alternating blocks.
fn filter_against_pass_through() {
    let runtime = Runtime::new(Limits::default(), None).unwrap();
    let pass = runtime.load_file("pass-through", &support::plugin_path("pass-through")).unwrap();
    let empty = Arc::new(Default::default());
    let event = support::sample("conversation.label_added");
    let plugin_event = event.plugin_event();
    let filter = hookwasm::filter::Filter::compile(
        r#"data.conversation.priority == "normal" && "vip" in data.conversation.labels"#,
    )
    .unwrap();
    assert_eq!(filter.matches(&event), Ok(true));
    let (mut filtered, mut passed) = (Vec::new(), Vec::new());
    for _ in 0..60 {
        filtered.push(block(&|| {
            std::hint::black_box(filter.matches(&event).unwrap());
        }));
        passed.push(block(&|| {
            std::hint::black_box(pass.transform(&plugin_event, &empty).result.unwrap());
        }));
    }
    println!(
        "filter against pass-through, conversation.label_added (60 alternating blocks of 500): filter {:.1} µs, pass-through plugin {:.1} µs",
        median(&mut filtered),
        median(&mut passed)
    );
}

criterion_group!(benches, per_event, load);

fn main() {
    // Criterion's positional argument is a name filter; skip the values of its options.
    const VALUELESS: &[&str] =
        &["--bench", "--test", "--list", "--noplot", "--quick", "--exact", "--verbose", "--quiet", "--ignored"];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filters: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            let option_value = *i > 0 && args[i - 1].starts_with("--") && !VALUELESS.contains(&args[i - 1].as_str());
            !a.starts_with('-') && !option_value
        })
        .map(|(_, a)| a)
        .collect();
    if filters.is_empty() || filters.iter().any(|f| "interleaved".contains(f.as_str())) {
        interleaved_ratio();
    }
    if filters.is_empty() || filters.iter().any(|f| "filter".contains(f.as_str())) {
        filter_against_pass_through();
    }
    if filters.is_empty() || filters.iter().any(|f| "wasi".contains(f.as_str())) {
        without_wasi();
    }
    if filters.is_empty() || filters.iter().any(|f| "languages".contains(f.as_str())) {
        languages();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
