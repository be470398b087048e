//! Test doubles around the real binary: `TestHost` runs `hookwasm serve` on 127.0.0.1:0 with
//! a real SQLite file and real plugins; `TestReceiver` is a real HTTP endpoint whose answers
//! can be scripted and which verifies every signature with the official library.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub webhook_id: String,
    pub body: Vec<u8>,
    pub verified: bool,
    pub at: Instant,
    pub headers: HeaderMap,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A scripted answer: status, optional Retry-After, optional delay.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub delay: Duration,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer { status, retry_after: None, delay: Duration::ZERO }
    }
}

#[derive(Default)]
struct ReceiverState {
    received: Vec<Received>,
    /// Per path prefix: answers to give in order, then `default`.
    scripts: Vec<(String, VecDeque<Answer>, Answer)>,
}

#[derive(Clone)]
pub struct TestReceiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
}

impl TestReceiver {
    pub async fn start() -> TestReceiver {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let app = axum::Router::new().fallback(receive).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        TestReceiver { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests to `path` get `first` answers in order, then `then` forever.
    pub fn script(&self, path: &str, first: &[Answer], then: Answer) {
        let mut state = self.state.lock().unwrap();
        state.scripts.push((path.to_string(), first.iter().copied().collect(), then));
    }

    pub fn received(&self, path: &str) -> Vec<Received> {
        self.state.lock().unwrap().received.iter().filter(|r| r.path == path).cloned().collect()
    }

    pub fn all(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Waits until `path` got at least `count` requests.
    pub async fn wait_for(&self, path: &str, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received(path);
            if got.len() >= count {
                return got;
            }
            assert!(Instant::now() < deadline, "{path}: got {} of {count} requests in {timeout:?}", got.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let verified = standardwebhooks::Webhook::new(SECRET).unwrap().verify(&body, &headers).is_ok();
    let answer = {
        let mut state = state.lock().unwrap();
        state.received.push(Received {
            path: uri.path().to_string(),
            webhook_id: headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string(),
            body: body.to_vec(),
            verified,
            at: Instant::now(),
            headers: headers.clone(),
        });
        match state.scripts.iter_mut().find(|(path, _, _)| uri.path() == path) {
            Some((_, queue, then)) => queue.pop_front().unwrap_or(*then),
            None => Answer::status(200),
        }
    };
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    let mut response = (StatusCode::from_u16(answer.status).unwrap(), "receiver says hi").into_response();
    if let Some(seconds) = answer.retry_after {
        response.headers_mut().insert("retry-after", seconds.to_string().parse().unwrap());
    }
    response
}

/// A running `hookwasm serve`. In the `it-postgres` test target (`crate::ON_POSTGRES`) each
/// host gets a fresh database on the throwaway PostgreSQL server, and its `[[webhooks]]`
/// (refused in a PostgreSQL host's config file) are loaded with `hookwasm webhooks apply`
/// once it listens.
pub struct TestHost {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    child: Option<Child>,
    pub http: reqwest::Client,
    /// `[[webhooks]]` to apply through the CLI at the first start (PostgreSQL only).
    webhooks_to_apply: Option<PathBuf>,
    admin_token: Option<String>,
}

impl TestHost {
    /// Writes `config` (TOML without `[server]`) plus a `[server]` section pointing into a
    /// fresh temp dir, copies `plugins` (built crate names) into its plugins dir, starts it.
    pub fn start(config: &str, plugins: &[&str]) -> TestHost {
        let mut host = TestHost::create(config, plugins);
        host.spawn();
        host
    }

    /// As [`TestHost::start`], without starting it: the data dir is `dir/data`, to prepare.
    pub fn create(config: &str, plugins: &[&str]) -> TestHost {
        let dir = tempfile::tempdir().unwrap();
        let plugins_dir = dir.path().join("plugins.d");
        std::fs::create_dir_all(&plugins_dir).unwrap();
        for plugin in plugins {
            std::fs::copy(crate::support::plugin_path(plugin), plugins_dir.join(format!("{plugin}.wasm"))).unwrap();
        }
        let server = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\nplugins_dir = {:?}\n",
            dir.path().join("data").display().to_string(),
            plugins_dir.display().to_string()
        );
        let config = if config.contains("[server]") {
            config.replace("[server]\n", &server)
        } else {
            format!("{server}{config}")
        };
        let admin_token = config
            .parse::<toml::Table>()
            .ok()
            .and_then(|table| table.get("server")?.get("admin_token")?.as_str().map(String::from));
        let (config, webhooks_to_apply) =
            if crate::ON_POSTGRES { on_postgres(&config, dir.path()) } else { (config, None) };
        std::fs::write(dir.path().join("hookwasm.toml"), config).unwrap();
        TestHost {
            dir,
            addr: "127.0.0.1:1".parse().unwrap(),
            child: None,
            http: reqwest::Client::new(),
            webhooks_to_apply,
            admin_token,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("hookwasm.toml")
    }

    /// (Re)starts the process on the same data dir (on a new port).
    pub fn spawn(&mut self) {
        // `HOOKWASM_BIN` runs the tests against another build (to show a test fails on it).
        let binary = std::env::var("HOOKWASM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_hookwasm").to_string());
        let mut child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(self.config_path())
            .env("HOOKWASM_LOG", "hookwasm=debug,info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(self.log_path()).unwrap()))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("hookwasm listening on http://").unwrap_or_else(|| {
            panic!("host did not start: {line:?}\n{}", std::fs::read_to_string(self.log_path()).unwrap_or_default())
        });
        self.addr = addr.parse().unwrap();
        self.child = Some(child);
        let config: toml::Table = std::fs::read_to_string(self.config_path()).unwrap().parse().unwrap();
        let backend = config.get("store").and_then(|s| s.get("backend")).and_then(|b| b.as_str()).unwrap_or("sqlite");
        let opened = format!("store opened backend=\"{backend}\"");
        let another_build = std::env::var_os("HOOKWASM_BIN").is_some();
        assert!(
            another_build || self.log().contains(&opened),
            "the host did not open its {backend} store:\n{}",
            self.log()
        );
        if let Some(file) = self.webhooks_to_apply.take() {
            let mut args = vec!["webhooks", "apply", file.to_str().unwrap()];
            if let Some(token) = &self.admin_token {
                args.extend(["--token", token]);
            }
            let output = self.cli(&args);
            assert!(output.status.success(), "webhooks apply: {}", String::from_utf8_lossy(&output.stderr));
        }
    }

    /// Runs the CLI against this host (with its admin token, if it has one, only for the
    /// webhooks it applies itself).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_hookwasm")).args(args).args(["--server", &self.url("")]).output().unwrap()
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins.d")
    }

    /// Installs a built plugin crate's `.wasm` as plugin `name` the documented way: write a
    /// hidden temporary file in the folder, then rename it into place.
    pub fn deploy(&self, crate_name: &str, name: &str) {
        let tmp = self.plugins_dir().join(format!(".{name}.wasm.tmp"));
        std::fs::copy(crate::support::plugin_path(crate_name), &tmp).unwrap();
        std::fs::rename(&tmp, self.plugins_dir().join(format!("{name}.wasm"))).unwrap();
    }

    /// The status of plugin `name` once `ready` holds for it.
    pub async fn wait_plugin(
        &self,
        name: &str,
        timeout: Duration,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let plugins = self.get("/v1/plugins").await;
            let status = plugins["plugins"].as_array().into_iter().flatten().find(|p| p["name"] == name).cloned();
            if let Some(status) = status.filter(|s| ready(s)) {
                return status;
            }
            assert!(Instant::now() < deadline, "plugin {name} never got there: {plugins:#}\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("host-{}.log", std::process::id()))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then wait for exit; returns the exit status and how long it took.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        let status = child.wait().unwrap();
        (status, started.elapsed())
    }

    pub async fn post_event(&self, body: &str) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(self.url("/v1/events"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn post_sample(&self, name: &str) -> String {
        let body = std::fs::read_to_string(crate::support::sample_path(name)).unwrap();
        let (status, answer) = self.post_event(&body).await;
        assert_eq!(status, 202, "{answer}");
        answer["id"].as_str().unwrap().to_string()
    }

    /// Posts an event of `event_type` with id `id` and empty data; returns its id.
    pub async fn post_sample_like(&self, event_type: &str, id: &str) -> String {
        let (status, answer) =
            self.post_event(&format!(r#"{{"id": "{id}", "type": "{event_type}", "data": {{}}}}"#)).await;
        assert_eq!(status, 202, "{answer}");
        id.to_string()
    }

    pub async fn metrics(&self) -> String {
        self.http.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    /// `GET path` as JSON, with the host's admin token if it has one.
    pub async fn get(&self, path: &str) -> serde_json::Value {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = &self.admin_token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap().json().await.unwrap()
    }

    /// The deliveries of an event, once every one of them is in a final state.
    pub async fn settled_deliveries(&self, event_id: &str, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let event = self.get(&format!("/v1/events/{event_id}")).await;
            let deliveries = event["deliveries"].as_array().cloned().unwrap_or_default();
            let settled = deliveries
                .iter()
                .all(|d| ["delivered", "filtered", "held", "dead"].contains(&d["state"].as_str().unwrap_or("")));
            if settled {
                return deliveries;
            }
            assert!(Instant::now() < deadline, "event {event_id} not settled: {deliveries:#?}\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A config for a host on a fresh PostgreSQL database: `[store]` points there and the
/// `[[webhooks]]` move to a file of their own, to be applied through the API.
fn on_postgres(config: &str, dir: &std::path::Path) -> (String, Option<PathBuf>) {
    let database = std::thread::spawn(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(hookwasm::store::postgres::throwaway::Database::create())
    })
    .join()
    .unwrap()
    .expect("the it-postgres tests need a PostgreSQL server (they run as root, which installs and starts one)");
    let mut table: toml::Table = config.parse().unwrap();
    let store = table.entry("store").or_insert_with(|| toml::Value::Table(Default::default()));
    let store = store.as_table_mut().unwrap();
    store.insert("backend".into(), "postgres".into());
    store.insert("url".into(), database.url.into());
    let webhooks = table.remove("webhooks").map(|webhooks| {
        let path = dir.join("webhooks.toml");
        let mut file = toml::Table::new();
        file.insert("webhooks".into(), webhooks);
        std::fs::write(&path, toml::to_string(&file).unwrap()).unwrap();
        path
    });
    (toml::to_string(&table).unwrap(), webhooks)
}

pub fn delivery_for<'a>(deliveries: &'a [serde_json::Value], webhook: &str) -> &'a serde_json::Value {
    deliveries
        .iter()
        .find(|d| d["webhook_id"] == webhook)
        .unwrap_or_else(|| panic!("no delivery for {webhook}: {deliveries:#?}"))
}

pub fn webhook(id: &str, url: &str, events: &str, extra: &str) -> String {
    format!("[[webhooks]]\nid = \"{id}\"\nurl = \"{url}\"\nevents = {events}\nsecret = \"{SECRET}\"\n{extra}\n")
}

/// The extra lines of a webhook that runs slack-notify with a valid configuration.
pub const SLACK_NOTIFY: &str = "plugin = \"slack-notify\"\nplugin_config = { base_url = \"https://desk.example.com\" }";

pub const LOCAL_DELIVERY: &str = "[delivery]\nallow_http = true\nallow_private_networks = true\nretry_schedule = [\"0s\", \"200ms\", \"200ms\", \"200ms\"]\ntimeout = \"5s\"\n";
