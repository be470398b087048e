//! The `hookwasm` command line: parse arguments and call into the library.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use hookwasm::client::{self, AdminClient};
use hookwasm::config::Config;
use hookwasm::delivery::sign::Secret;
use hookwasm::devtools;
use hookwasm::model::Event;
use hookwasm::plugins::{Limits, Runtime};

#[derive(Parser)]
#[command(
    name = "hookwasm",
    version,
    about = "Webhook transformer host: signed, retried delivery through Wasm plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: ingest events, transform them through plugins, deliver them.
    Serve(ServeArgs),
    /// Send events to a running server.
    #[command(subcommand)]
    Events(EventsCommand),
    /// The plugins of a running server: list them (state, version, last error, users), or
    /// deploy, list, activate and dry-run their versions.
    Plugins {
        #[command(subcommand)]
        command: Option<PluginsCommand>,
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the server's JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Inspect, retry and replay deliveries on a running server.
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// List, test, enable and disable the webhooks of a running server.
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the server's JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Develop plugins locally: run, validate or scaffold one.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Try webhook filters locally.
    #[command(subcommand)]
    Filter(FilterCommand),
}

#[derive(Subcommand)]
enum FilterCommand {
    /// Evaluate a filter (a CEL expression) on an event envelope: prints `match` (exit 0),
    /// `no match` (exit 1) or the error (exit 2).
    Test {
        /// The expression, e.g. 'data.conversation.priority == "urgent"'.
        expression: String,
        /// An event envelope file, or - for standard input.
        #[arg(long)]
        event: PathBuf,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Config file (TOML); without one, the built-in defaults and HOOKWASM_* env apply.
    #[arg(long, env = "HOOKWASM_CONFIG")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "HOOKWASM_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
struct AdminArgs {
    /// The server's base URL.
    #[arg(long, global = true, env = "HOOKWASM_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Admin bearer token (not needed on loopback when the server has none).
    #[arg(long, global = true, env = "HOOKWASM_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Args)]
struct DeliveryFilterArgs {
    #[arg(long)]
    webhook: Option<String>,
    /// pending, retrying, delivered, filtered, held or dead.
    #[arg(long)]
    state: Option<String>,
    #[arg(long)]
    event_type: Option<String>,
    /// Only deliveries created within this long, e.g. 1h.
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<std::time::Duration>,
    /// Page cursor printed by the previous page.
    #[arg(long)]
    before: Option<String>,
    #[arg(long)]
    limit: Option<u32>,
    /// Only deliveries transformed by this plugin version (a sha256 or a prefix of one).
    #[arg(long)]
    plugin_sha: Option<String>,
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Upload a component as a new version of plugin NAME; it serves at once unless
    /// --no-activate.
    Deploy {
        name: String,
        file: PathBuf,
        /// Store the version without serving it.
        #[arg(long)]
        no_activate: bool,
    },
    /// The stored versions of plugin NAME, newest first.
    Versions { name: String },
    /// Serve a stored version (a rollback is activating an earlier one); with --percent, as
    /// a canary beside the serving version.
    Activate {
        name: String,
        /// A sha256, or a prefix naming one stored version.
        sha256: String,
        /// The share of deliveries the version serves as a canary (1-99).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100))]
        percent: Option<u8>,
    },
    /// Make the canary of plugin NAME serve every delivery.
    Promote { name: String },
    /// What would FILE change? Replays stored events through the serving version and FILE,
    /// sending nothing. Exits 1 when FILE fails on an event the serving version handled.
    Diff {
        name: String,
        file: PathBuf,
        /// Only this webhook's events (default: every webhook that uses the plugin).
        #[arg(long)]
        webhook: Option<String>,
        /// The newest this many events.
        #[arg(long, default_value_t = hookwasm::dryrun::DEFAULT_LIMIT)]
        last: u32,
        /// Only events received within this long, e.g. 24h (retention bounds how far back).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        /// Changed events printed in full.
        #[arg(long, default_value_t = 10)]
        show: usize,
    },
}

#[derive(Args)]
struct AddWebhookArgs {
    #[arg(long)]
    id: String,
    #[arg(long)]
    url: String,
    /// Comma-separated event types or prefixes, e.g. message.created,conversation.*
    #[arg(long, value_delimiter = ',', required = true)]
    events: Vec<String>,
    #[arg(long)]
    plugin: Option<String>,
    /// A plugin_config entry (KEY=@FILE reads the value from a file, KEY=@@V is @V); repeat for more.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config_entry)]
    config: Vec<(String, String)>,
    /// An extra header; repeat for more.
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_key_value)]
    headers: Vec<(String, String)>,
    /// whsec_... (default: generated; `webhooks secret ID` prints it).
    #[arg(long, env = "HOOKWASM_WEBHOOK_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Deliver only events this CEL expression is true for, e.g. 'type == "message.created"'.
    #[arg(long)]
    filter: Option<String>,
    /// At most this many requests per second or minute, e.g. 50/s or 100/m.
    #[arg(long)]
    rate_limit: Option<String>,
    /// Disable the webhook once every attempt has failed this long (default:
    /// delivery.disable_after).
    #[arg(long)]
    disable_after: Option<String>,
    /// Request timeout for this webhook, e.g. 5s (default: delivery.timeout).
    #[arg(long)]
    timeout: Option<String>,
    /// Comma-separated retry delays, e.g. 0s,1m,1h (default: delivery.retry_schedule).
    #[arg(long, value_delimiter = ',')]
    retry_schedule: Option<Vec<String>>,
    /// Requests on the wire at once (default: delivery.max_in_flight_per_webhook).
    #[arg(long)]
    max_in_flight: Option<usize>,
}

#[derive(Subcommand)]
enum WebhooksCommand {
    /// Every webhook (secrets are never shown).
    List,
    /// One webhook.
    Show { id: String },
    /// Send a test event through the webhook's plugin and endpoint now and show the outcome.
    Test {
        id: String,
        /// An event envelope file to send instead of the built-in sample message.created.
        #[arg(long)]
        event: Option<PathBuf>,
    },
    /// Create a webhook (stored in the server's database; same rules as the config file).
    Add(Box<AddWebhookArgs>),
    /// Create or replace the `[[webhooks]]` of a TOML file through the API (the way to load
    /// webhooks into a cluster on PostgreSQL); prints what it did to each.
    Apply {
        /// A file of `[[webhooks]]` entries, as in the config file.
        file: PathBuf,
    },
    /// Print a webhook's signing secret, to give to its receiver.
    Secret { id: String },
    /// Delete a webhook created with `add`.
    Rm { id: String },
    /// Replace the signing secret; both sign during `delivery.secret_rotation_grace`.
    RotateSecret { id: String },
    /// Resume deliveries to a webhook disabled at runtime (by a 410 Gone or an operator).
    Enable { id: String },
    /// Stop deliveries to a webhook until it is enabled again.
    Disable { id: String },
}

#[derive(Subcommand)]
enum DeliveriesCommand {
    /// List deliveries, newest first.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        filter: DeliveryFilterArgs,
        #[arg(long)]
        json: bool,
    },
    /// One delivery with every attempt.
    Show {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        json: bool,
    },
    /// Send one delivery again now.
    Retry {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        json: bool,
    },
    /// Send again every delivery of a webhook in a state (dead, held, filtered, ...).
    Replay {
        #[arg(long)]
        webhook: String,
        #[arg(long)]
        state: String,
        /// Only deliveries created within this long, e.g. 24h.
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        /// Only deliveries created more than this long ago.
        #[arg(long, value_parser = humantime::parse_duration)]
        until: Option<std::time::Duration>,
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// POST event envelope files to `/v1/events`.
    Send {
        /// Event files (`{"id"?, "type", "timestamp"?, "data"}`); `-` reads stdin.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show an event: its deliveries and why each webhook did or did not get one.
    Show {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ServerArgs {
    /// The server's base URL.
    #[arg(long, env = "HOOKWASM_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Bearer token for the ingest endpoint.
    #[arg(long, env = "HOOKWASM_INGEST_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Run a plugin on one event, with the same runtime and limits as `serve`, and print
    /// exactly what would be sent.
    Test(TestArgs),
    /// Validate a plugin (a component implementing hookwasm:plugin/transformer) without running it.
    Check(CheckArgs),
    /// Create a new plugin crate in the directory NAME.
    New(NewArgs),
    /// Build the plugin at PATH into a component; prints the file to deploy. A Rust crate is
    /// built without WASI (wasm32-unknown-unknown); JavaScript, TypeScript and Python plugins
    /// with their SDK's build (componentize-js, componentize-py).
    Build(BuildArgs),
}

#[derive(Args)]
struct BuildArgs {
    /// The plugin's directory.
    #[arg(default_value = ".")]
    path: PathBuf,
    /// The cargo profile to build a Rust crate with.
    #[arg(long, default_value = "release")]
    profile: String,
}

#[derive(Args)]
struct RuntimeArgs {
    /// Wall-clock deadline per call, e.g. 50ms.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    deadline: std::time::Duration,
    /// Linear memory cap in MiB.
    #[arg(long, default_value_t = 32)]
    memory_mib: usize,
    /// Precompiled-code cache directory [default: ~/.cache/hookwasm].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Always compile; neither read nor write the cache.
    #[arg(long)]
    no_cache: bool,
}

#[derive(Args)]
struct TestArgs {
    /// The plugin component (`.wasm`).
    plugin: PathBuf,
    /// The event envelope file (`{"id", "type", "timestamp", "data"}`); `-` reads stdin.
    #[arg(long)]
    event: PathBuf,
    /// A plugin_config entry (KEY=@FILE reads the value from a file, KEY=@@V is @V); repeat for more.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config_entry)]
    config: Vec<(String, String)>,
    /// Secret to sign with [default: a random one, printed in the headers' signature only].
    #[arg(long, env = "HOOKWASM_TEST_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Args)]
struct CheckArgs {
    /// The plugin component (`.wasm`).
    plugin: PathBuf,
    /// Also run the plugin's check-config with this plugin_config entry (KEY=@FILE reads the
    /// value from a file, KEY=@@V is @V); repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config_entry)]
    config: Vec<(String, String)>,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Args)]
struct NewArgs {
    /// Directory to create; its name is the plugin's name.
    name: PathBuf,
    /// Depend on an SDK checkout at this path instead of writing the SDK this binary carries
    /// into the new project (`sdk/`).
    #[arg(long)]
    sdk_path: Option<PathBuf>,
    /// The plugin's language.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    lang: Lang,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Lang {
    Rust,
    Ts,
    Js,
    Py,
}

/// A `plugin_config` entry: `KEY=VALUE`, or `KEY=@FILE` for a value kept in a file (a
/// transformation's script, say); `KEY=@@VALUE` is the value `@VALUE`.
fn parse_config_entry(text: &str) -> Result<(String, String), String> {
    let (key, value) = parse_key_value(text)?;
    if let Some(literal) = value.strip_prefix("@@") {
        return Ok((key, format!("@{literal}")));
    }
    match value.strip_prefix('@') {
        Some(path) => {
            let value = std::fs::read_to_string(path).map_err(|error| format!("reading {path} for {key}: {error}"))?;
            Ok((key, value))
        }
        None => Ok((key, value)),
    }
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

fn runtime(args: &RuntimeArgs) -> anyhow::Result<Runtime> {
    let limits =
        Limits { deadline: args.deadline, memory_bytes: args.memory_mib << 20, max_concurrent: 4, ..Limits::default() };
    let cache = if args.no_cache { None } else { args.cache_dir.clone().or_else(devtools::default_cache_dir) };
    Runtime::new(limits, cache).context("starting the Wasm runtime")
}

fn read_event(path: &Path) -> anyhow::Result<Event> {
    let bytes = if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).context("reading the event from stdin")?;
        bytes
    } else {
        std::fs::read(path).with_context(|| format!("reading event file {}", path.display()))?
    };
    Event::parse_envelope(&bytes).with_context(|| format!("event {}", path.display()))
}

fn plugin_test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let event = read_event(&args.event)?;
    let secret = match &args.secret {
        Some(text) => Secret::parse(text)?,
        None => Secret::generate(),
    };
    let runtime = runtime(&args.runtime)?;
    let plugin = runtime.load_file(&devtools::plugin_name(&args.plugin), &args.plugin)?;
    let config: BTreeMap<String, String> = args.config.into_iter().collect();
    let report = devtools::run_plugin_test(&plugin, &event, config, &secret);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.failed() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn filter_test(expression: &str, event: &Path) -> anyhow::Result<ExitCode> {
    let filter = match hookwasm::filter::Filter::compile(expression) {
        Ok(filter) => filter,
        Err(error) => {
            println!("error: the filter {error}");
            return Ok(ExitCode::from(2));
        }
    };
    match filter.matches(&read_event(event)?) {
        Ok(true) => println!("match"),
        Ok(false) => {
            println!("no match");
            return Ok(ExitCode::from(1));
        }
        Err(error) => {
            println!("error: {error}");
            return Ok(ExitCode::from(2));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn plugin_check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let runtime = runtime(&args.runtime)?;
    let plugin = runtime.load_file(&devtools::plugin_name(&args.plugin), &args.plugin)?;
    println!(
        "ok: {} implements hookwasm:plugin/transformer@{} (sha256 {}, {:?} in {:.1} ms)",
        args.plugin.display(),
        plugin.contract(),
        plugin.sha256(),
        plugin.load_source(),
        plugin.load_time().as_secs_f64() * 1e3
    );
    if !args.config.is_empty() {
        let config = std::sync::Arc::new(args.config.into_iter().collect());
        if let Err(error) = plugin.check_config(&config).result {
            bail!("{error}");
        }
        println!("ok: plugin_config accepted");
    }
    Ok(ExitCode::SUCCESS)
}

fn plugin_new(args: NewArgs) -> anyhow::Result<ExitCode> {
    let lang = match args.lang {
        Lang::Rust => None,
        Lang::Ts => Some(devtools::ScriptLang::TypeScript),
        Lang::Js => Some(devtools::ScriptLang::JavaScript),
        Lang::Py => Some(devtools::ScriptLang::Python),
    };
    let options = devtools::ScaffoldOptions { sdk_path: args.sdk_path, lang };
    devtools::scaffold(&args.name, &options)?;
    let dir = args.name.display();
    println!("created plugin {dir}");
    match args.lang {
        Lang::Rust => println!("  cd {dir} && cargo test && hookwasm plugin build"),
        Lang::Ts | Lang::Js => println!("  cd {dir} && npm install && npm test && hookwasm plugin build"),
        Lang::Py => println!(
            "  cd {dir} && python3 -m venv .venv && .venv/bin/pip install -r requirements.txt && .venv/bin/python -m unittest && hookwasm plugin build"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOOKWASM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log redirected to a file or a collector stays plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.log_format);
    let tuning = hookwasm::allocator::tune_for_long_runs(std::env::vars());
    tracing::debug!(?tuning, "memory allocator");
    let config = Config::load(args.config.as_deref(), std::env::vars())?;
    tokio_runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("listening on {}", config.server.listen))?;
        hookwasm::server::run(config, args.config.clone(), listener, shutdown_signal(), |address| {
            println!("hookwasm listening on http://{address}");
        })
        .await
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

fn events_send(files: Vec<PathBuf>, server: ServerArgs) -> anyhow::Result<ExitCode> {
    tokio_runtime()?.block_on(async {
        let client = reqwest::Client::new();
        let url = format!("{}/v1/events", server.server.trim_end_matches('/'));
        let mut failed = false;
        for file in files {
            let body = if file == Path::new("-") {
                let mut bytes = Vec::new();
                std::io::stdin().read_to_end(&mut bytes)?;
                bytes
            } else {
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?
            };
            let mut request = client.post(&url).header("content-type", "application/json").body(body);
            if let Some(token) = &server.token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.with_context(|| format!("sending to {url}"))?;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            println!("{} {} {}", file.display(), status.as_u16(), text);
            failed |= !status.is_success();
        }
        Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
    })
}

/// Runs one admin request and prints the answer as a table, or as JSON with `--json`.
fn admin(args: AdminArgs, json: bool, request: AdminRequest) -> anyhow::Result<ExitCode> {
    type Render = fn(&serde_json::Value) -> String;
    let delete = matches!(request, AdminRequest::DeleteWebhook(_));
    let answer_type = request.answer_type();
    let (path, body, render): (String, Option<serde_json::Value>, Render) = match request {
        AdminRequest::Plugins => ("/v1/plugins".into(), None, client::render_plugins),
        AdminRequest::Webhooks => ("/v1/webhooks".into(), None, client::render_webhooks),
        AdminRequest::Webhook(id) => (format!("/v1/webhooks/{id}"), None, client::render_webhook),
        AdminRequest::TestWebhook(id, event) => (format!("/v1/webhooks/{id}/test"), Some(event), client::render_test),
        AdminRequest::CreateWebhook(webhook) => ("/v1/webhooks".into(), Some(webhook), client::render_webhook),
        AdminRequest::RotateSecret(id) => {
            (format!("/v1/webhooks/{id}/rotate-secret"), Some(serde_json::Value::Null), |v| {
                let until = humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::from_millis(v["previous_valid_until_ms"].as_u64().unwrap_or_default()),
                );
                let id = v["id"].as_str().unwrap_or_default();
                format!(
                    "rotated: `hookwasm webhooks secret {id}` prints the new secret; the previous one signs too until \
                     {until}\n"
                )
            })
        }
        AdminRequest::Secret(id) => (format!("/v1/webhooks/{id}/secret"), None, |v| {
            let mut out = format!("{}\n", v["secret"].as_str().unwrap_or_default());
            if let Some(until) = v["previous_valid_until_ms"].as_u64() {
                let until = std::time::UNIX_EPOCH + std::time::Duration::from_millis(until);
                out += &format!("(the previous secret signs too until {})\n", humantime::format_rfc3339_seconds(until));
            }
            out
        }),
        AdminRequest::DeleteWebhook(id) => (format!("/v1/webhooks/{id}"), None, |_| "deleted\n".to_string()),
        AdminRequest::WebhookAction(id, action) => {
            (format!("/v1/webhooks/{id}/{action}"), Some(serde_json::Value::Null), client::render_webhook)
        }
        AdminRequest::Event(id) => (format!("/v1/events/{id}"), None, client::render_event),
        AdminRequest::ListDeliveries(query) => (format!("/v1/deliveries?{query}"), None, client::render_deliveries),
        AdminRequest::Delivery(id) => (format!("/v1/deliveries/{id}"), None, client::render_delivery),
        AdminRequest::Retry(id) => (format!("/v1/deliveries/{id}/retry"), Some(serde_json::Value::Null), |v| {
            format!("retrying {}\n", v["id"].as_str().unwrap_or_default())
        }),
        AdminRequest::Replay(filter) => {
            ("/v1/deliveries/replay".into(), Some(filter), |v| format!("replaying {} deliveries\n", v["replayed"]))
        }
    };
    let client = AdminClient::new(&args.server, args.token);
    let method = match (&body, delete) {
        (_, true) => reqwest::Method::DELETE,
        (Some(_), false) => reqwest::Method::POST,
        (None, false) => reqwest::Method::GET,
    };
    let answer = tokio_runtime()?.block_on(client.request(method, &path, body.as_ref()))?;
    // The server's answer is read as the API's own type for it, so a mismatch between this
    // CLI and the server is an error here rather than a table of blanks.
    answer_type(&answer).with_context(|| format!("{path} answered something this CLI does not understand"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", render(&answer));
    }
    Ok(ExitCode::SUCCESS)
}

impl AdminRequest {
    /// Reads an answer as the type the API documents for this request.
    fn answer_type(&self) -> fn(&serde_json::Value) -> anyhow::Result<()> {
        use hookwasm::api::types as api;
        fn read<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> anyhow::Result<()> {
            T::deserialize(value).map(drop).map_err(Into::into)
        }
        match self {
            AdminRequest::Plugins => read::<api::PluginList>,
            AdminRequest::Webhooks => read::<api::WebhookList>,
            AdminRequest::Webhook(_) | AdminRequest::CreateWebhook(_) | AdminRequest::WebhookAction(..) => {
                read::<api::WebhookView>
            }
            AdminRequest::TestWebhook(..) => read::<api::TestOutcome>,
            AdminRequest::DeleteWebhook(_) => |_| Ok(()),
            AdminRequest::RotateSecret(_) => read::<api::RotatedSecret>,
            AdminRequest::Secret(_) => read::<api::WebhookSecret>,
            AdminRequest::Event(_) => read::<api::EventExplained>,
            AdminRequest::ListDeliveries(_) => read::<hookwasm::api::DeliveryPage>,
            AdminRequest::Delivery(_) => read::<api::Delivery>,
            AdminRequest::Retry(_) | AdminRequest::Replay(_) => read::<api::Replayed>,
        }
    }
}

enum AdminRequest {
    Plugins,
    Webhooks,
    Webhook(String),
    TestWebhook(String, serde_json::Value),
    WebhookAction(String, &'static str),
    CreateWebhook(serde_json::Value),
    DeleteWebhook(String),
    RotateSecret(String),
    Secret(String),
    Event(String),
    ListDeliveries(String),
    Delivery(String),
    Retry(String),
    Replay(serde_json::Value),
}

fn webhooks(command: WebhooksCommand, args: AdminArgs, json: bool) -> anyhow::Result<ExitCode> {
    let request = match command {
        WebhooksCommand::List => AdminRequest::Webhooks,
        WebhooksCommand::Show { id } => AdminRequest::Webhook(id),
        WebhooksCommand::Test { id, event } => {
            let event = match event {
                Some(path) => serde_json::from_slice(
                    &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
                )
                .with_context(|| format!("{} is not JSON", path.display()))?,
                None => serde_json::Value::Null,
            };
            AdminRequest::TestWebhook(id, event)
        }
        WebhooksCommand::Add(args) => {
            let AddWebhookArgs {
                id,
                url,
                events,
                plugin,
                config,
                headers,
                secret,
                filter,
                rate_limit,
                disable_after,
                timeout,
                retry_schedule,
                max_in_flight,
            } = *args;
            AdminRequest::CreateWebhook(serde_json::json!({
            "id": id,
            "url": url,
            "events": events,
            "plugin": plugin,
            "plugin_config": config.into_iter().collect::<BTreeMap<_, _>>(),
            "headers": headers.into_iter().collect::<BTreeMap<_, _>>(),
            "secret": secret,
            "filter": filter,
            "rate_limit": rate_limit,
            "disable_after": disable_after,
            "timeout": timeout,
            "retry_schedule": retry_schedule,
            "max_in_flight": max_in_flight,
            }))
        }
        WebhooksCommand::Apply { file } => return webhooks_apply(&file, args),
        WebhooksCommand::Secret { id } => AdminRequest::Secret(id),
        WebhooksCommand::Rm { id } => AdminRequest::DeleteWebhook(id),
        WebhooksCommand::RotateSecret { id } => AdminRequest::RotateSecret(id),
        WebhooksCommand::Enable { id } => AdminRequest::WebhookAction(id, "enable"),
        WebhooksCommand::Disable { id } => AdminRequest::WebhookAction(id, "disable"),
    };
    admin(args, json, request)
}

/// `hookwasm webhooks apply FILE`: every entry is tried; the exit status says whether all were
/// applied.
fn webhooks_apply(file: &Path, args: AdminArgs) -> anyhow::Result<ExitCode> {
    let wanted = client::read_webhooks_file(file)?;
    let client = AdminClient::new(&args.server, args.token);
    let runtime = tokio_runtime()?;
    let mut failed = 0;
    for webhook in &wanted {
        match runtime.block_on(client.apply_webhook(webhook)) {
            Ok(applied) => println!("{:<10} {}", format!("{applied:?}").to_lowercase(), webhook.id),
            Err(error) => {
                failed += 1;
                println!("{:<10} {}: {error:#}", "failed", webhook.id);
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} webhooks were not applied", wanted.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `--since 1h` -> ms since the epoch that long ago.
fn ago_ms(duration: std::time::Duration) -> i64 {
    hookwasm::store::now_ms() - duration.as_millis() as i64
}

fn deliveries(command: DeliveriesCommand) -> anyhow::Result<ExitCode> {
    match command {
        DeliveriesCommand::List { admin: args, json, filter } => {
            let mut url = reqwest::Url::parse("http://query.invalid/")?;
            let mut query = url.query_pairs_mut();
            for (key, value) in [
                ("webhook", filter.webhook),
                ("state", filter.state),
                ("event_type", filter.event_type),
                ("since_ms", filter.since.map(|d| ago_ms(d).to_string())),
                ("before", filter.before),
                ("limit", filter.limit.map(|n| n.to_string())),
                ("plugin_sha", filter.plugin_sha),
            ] {
                if let Some(value) = value {
                    query.append_pair(key, &value);
                }
            }
            drop(query);
            admin(args, json, AdminRequest::ListDeliveries(url.query().unwrap_or_default().to_string()))
        }
        DeliveriesCommand::Show { admin: args, json, id } => admin(args, json, AdminRequest::Delivery(id)),
        DeliveriesCommand::Retry { admin: args, json, id } => admin(args, json, AdminRequest::Retry(id)),
        DeliveriesCommand::Replay { admin: args, json, webhook, state, since, until } => {
            let filter = serde_json::json!({
                "webhook": webhook,
                "state": state,
                "since_ms": since.map(ago_ms),
                "until_ms": until.map(ago_ms),
            });
            admin(args, json, AdminRequest::Replay(filter))
        }
    }
}

/// `hookwasm plugins deploy|versions|activate|promote|diff`.
fn plugins(command: PluginsCommand, args: AdminArgs, json: bool) -> anyhow::Result<ExitCode> {
    use hookwasm::api::types::{DeployedVersion, PluginActivation, PluginVersions};
    let client = AdminClient::new(&args.server, args.token);
    let print = |answer: &serde_json::Value, render: &dyn Fn() -> anyhow::Result<String>| -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(answer)?);
        } else {
            print!("{}", render()?);
        }
        Ok(())
    };
    let read = |file: &Path| std::fs::read(file).with_context(|| format!("reading {}", file.display()));
    let runtime = tokio_runtime()?;
    match command {
        PluginsCommand::Deploy { name, file, no_activate } => {
            let path = format!("/v1/plugins/{name}{}", if no_activate { "?activate=false" } else { "" });
            let answer = runtime.block_on(client.send_component(reqwest::Method::PUT, &path, read(&file)?))?;
            print(&answer, &|| {
                Ok(client::render_deployed(&serde_json::from_value::<DeployedVersion>(answer.clone())?))
            })?;
        }
        PluginsCommand::Versions { name } => {
            let answer = runtime.block_on(client.request(
                reqwest::Method::GET,
                &format!("/v1/plugins/{name}/versions"),
                None,
            ))?;
            print(&answer, &|| {
                Ok(client::render_versions(&serde_json::from_value::<PluginVersions>(answer.clone())?))
            })?;
        }
        PluginsCommand::Activate { name, sha256, percent } => {
            let body = serde_json::json!({ "sha256": sha256, "percent": percent });
            let path = format!("/v1/plugins/{name}/activate");
            let answer = runtime.block_on(client.request(reqwest::Method::POST, &path, Some(&body)))?;
            print(&answer, &|| {
                Ok(client::render_activation(&serde_json::from_value::<PluginActivation>(answer.clone())?))
            })?;
        }
        PluginsCommand::Promote { name } => {
            let path = format!("/v1/plugins/{name}/promote");
            let answer =
                runtime.block_on(client.request(reqwest::Method::POST, &path, Some(&serde_json::json!({}))))?;
            print(&answer, &|| {
                Ok(client::render_activation(&serde_json::from_value::<PluginActivation>(answer.clone())?))
            })?;
        }
        PluginsCommand::Diff { name, file, webhook, last, since, show } => {
            let mut url = reqwest::Url::parse("http://query.invalid/")?;
            url.query_pairs_mut().append_pair("limit", &last.to_string());
            if let Some(since) = since {
                url.query_pairs_mut().append_pair("since_ms", &ago_ms(since).to_string());
            }
            if let Some(webhook) = &webhook {
                url.query_pairs_mut().append_pair("webhook", webhook);
            }
            let path = format!("/v1/plugins/{name}/dry-run?{}", url.query().unwrap_or_default());
            let answer = runtime.block_on(client.send_component(reqwest::Method::POST, &path, read(&file)?))?;
            let report: hookwasm::dryrun::DryRunReport = serde_json::from_value(answer.clone())?;
            let colour = std::io::IsTerminal::is_terminal(&std::io::stdout());
            print(&answer, &|| Ok(client::render_dry_run(&report, show, colour)))?;
            if report.summary.new_errors > 0 {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Plugins { command: None, admin: args, json } => admin(args, json, AdminRequest::Plugins),
        Command::Plugins { command: Some(command), admin: args, json } => plugins(command, args, json),
        Command::Deliveries(command) => deliveries(command),
        Command::Webhooks { command, admin: args, json } => webhooks(command, args, json),
        Command::Events(EventsCommand::Show { id, admin: args, json }) => admin(args, json, AdminRequest::Event(id)),
        Command::Events(EventsCommand::Send { files, server }) => events_send(files, server),
        Command::Plugin(PluginCommand::Test(args)) => plugin_test(args),
        Command::Plugin(PluginCommand::Check(args)) => plugin_check(args),
        Command::Plugin(PluginCommand::New(args)) => plugin_new(args),
        Command::Plugin(PluginCommand::Build(args)) => devtools::build(&args.path, &args.profile).map(|path| {
            println!("{}", path.display());
            ExitCode::SUCCESS
        }),
        Command::Filter(FilterCommand::Test { expression, event }) => filter_test(&expression, &event),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
