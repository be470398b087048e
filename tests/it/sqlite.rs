//! What only a single host on SQLite does, against the real binary: a data dir from before
//! versioned schemas upgraded in place, a full disk under the data dir, `[[webhooks]]` in the
//! config file edited while running, and secrets kept in the config file. Everything else
//! runs on both backends (`main.rs` and `on_postgres.rs`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::host::{LOCAL_DELIVERY, TestHost, TestReceiver, delivery_for, webhook};
use crate::reload::post_numbered;

const SETTLE: Duration = Duration::from_secs(20);

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The fixture was written by the last binary before versioned schemas
/// (`tests/fixtures/make-data-dir.sh`): every delivery state, attempts, a webhook disabled by
/// a 410, one created through the API, generated secrets, a retry due 30 s after it was
/// written, and a pending delivery leased by the killed process that was sending it. This binary must adopt it, upgrade it in place and carry on where it stopped.
#[tokio::test(flavor = "multi_thread")]
async fn a_data_dir_from_before_versioned_schemas_upgrades_and_works() {
    let receiver = TestReceiver::start().await;
    let fixture = crate::support::workspace_root().join("tests/fixtures/data-dir-unversioned");
    // The webhooks of the fixture's config; `gone` keeps its URL, so it stays disabled.
    let config = format!(
        "{LOCAL_DELIVERY}{}",
        [
            ("ok", receiver.url("/ok"), "", r#"["*"]"#),
            (
                "filtered",
                receiver.url("/ok"),
                "plugin = \"event-filter\"\nplugin_config = { types = \"conversation.*\" }",
                r#"["*"]"#
            ),
            ("held", receiver.url("/ok"), "plugin = \"not-deployed\"", r#"["*"]"#),
            ("gone", "http://127.0.0.1:47861/gone".to_string(), "", r#"["*"]"#),
            ("retry", receiver.url("/retry"), "", r#"["message.created"]"#),
            ("hang", receiver.url("/hang"), "", r#"["conversation.updated"]"#),
        ]
        .map(|(id, url, extra, events)| format!(
            "[[webhooks]]\nid = \"{id}\"\nurl = \"{url}\"\nevents = {events}\n{extra}\n"
        ))
        .concat()
    );
    let mut host = TestHost::create(&config, &["event-filter"]);
    copy_dir(&fixture, &host.dir.path().join("data"));
    std::fs::remove_file(host.dir.path().join("data/hookwasm.toml")).unwrap();
    host.spawn();
    let log = host.log();
    assert!(log.contains("adopting it as version 1"), "{log}");
    assert!(log.contains("store schema migration applied"), "{log}");

    // The retry due since 30 s after the fixture was written goes out: same id, same bytes,
    // signed with the secret the old binary generated.
    let sent = receiver.wait_for("/retry", 1, SETTLE).await;
    let secret = std::fs::read_to_string(fixture.join("secrets/retry")).unwrap();
    let verifier = standardwebhooks::Webhook::new(secret.trim()).unwrap();
    verifier.verify(&sent[0].body, &sent[0].headers).expect("signed with the generated secret");
    assert_eq!(sent[0].json()["id"], "evt_fixture_1");

    let first = host.settled_deliveries("evt_fixture_1", SETTLE).await;
    let state = |webhook: &str| delivery_for(&first, webhook)["state"].as_str().unwrap().to_string();
    assert_eq!(
        ["ok", "api-hook", "filtered", "held", "gone", "retry"].map(state),
        ["delivered", "delivered", "filtered", "held", "dead", "delivered"]
    );
    let retry = delivery_for(&first, "retry");
    assert_eq!(retry["id"].as_str().unwrap(), sent[0].webhook_id, "the same webhook-id");
    let statuses: Vec<u64> =
        retry["attempts"].as_array().unwrap().iter().map(|a| a["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [500, 200], "the old attempt read back, then the new one");
    assert_eq!(delivery_for(&first, "gone")["attempts"][0]["status"], 410);
    assert!(delivery_for(&first, "held")["reason"].as_str().unwrap().contains("not-deployed"));

    // The pending delivery the old binary was sending when it was killed (its lease left
    // behind) goes out too.
    let hang = receiver.wait_for("/hang", 1, SETTLE).await;
    assert_eq!(hang[0].json()["id"], "evt_fixture_2");
    let second = host.settled_deliveries("evt_fixture_2", SETTLE).await;
    let state = |webhook: &str| delivery_for(&second, webhook)["state"].as_str().unwrap().to_string();
    assert_eq!(["ok", "filtered", "held", "hang"].map(state), ["delivered", "delivered", "held", "delivered"]);

    let gone = host.get("/v1/webhooks/gone").await;
    assert_eq!(gone["active"], false);
    assert!(gone["disabled_reason"].as_str().unwrap().contains("410"), "{gone}");
    let api_hook = host.get("/v1/webhooks/api-hook").await;
    assert_eq!(api_hook["source"], "api");

    // The file now carries the schema history, and this binary opens it again as it is.
    host.terminate();
    host.spawn();
    assert!(!host.log().contains("store schema migration applied"), "nothing left to migrate");
    assert_eq!(host.get("/v1/events/evt_fixture_1").await["event"]["id"], "evt_fixture_1");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_edits_apply_without_restart_and_invalid_ones_are_rejected_whole() {
    let receiver = TestReceiver::start().await;
    let first = [LOCAL_DELIVERY.to_string(), webhook("a", &receiver.url("/a"), r#"["message.created"]"#, "")].concat();
    let host = TestHost::start(&first, &[]);
    let text = std::fs::read_to_string(host.config_path()).unwrap();

    let edited = text.replace(r#"events = ["message.created"]"#, r#"events = ["conversation.*"]"#)
        + &webhook("b", &receiver.url("/b"), r#"["message.created"]"#, "headers = { \"x-added\" = \"yes\" }");
    std::fs::write(host.config_path(), &edited).unwrap();
    let deadline = Instant::now() + SETTLE;
    let mut attempt = 0;
    let id = loop {
        attempt += 1;
        let id = post_numbered(&host, "edit", attempt).await;
        let deliveries = host.settled_deliveries(&id, SETTLE).await;
        if deliveries.len() == 1 && deliveries[0]["webhook_id"] == "b" {
            break id;
        }
        assert!(Instant::now() < deadline, "the edit never applied: {deliveries:?}\n{}", host.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let got = receiver.wait_for("/b", 1, SETTLE).await;
    assert_eq!(got.last().unwrap().headers["x-added"], "yes");
    assert!(got.iter().any(|r| r.json()["id"] == id.as_str()));

    // A bad URL in one webhook rejects the whole edit; `b` keeps receiving.
    let broken = edited.replace(&receiver.url("/b"), "ftp://nowhere")
        + &webhook("c", &receiver.url("/c"), r#"["message.created"]"#, "");
    std::fs::write(host.config_path(), broken).unwrap();
    let deadline = Instant::now() + SETTLE;
    while !host.log().contains("config edit rejected") {
        assert!(Instant::now() < deadline, "no rejection logged:\n{}", host.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        host.log().contains("scheme \\\"ftp\\\" is not http(s)") || host.log().contains("is not http(s)"),
        "{}",
        host.log()
    );
    let after = post_numbered(&host, "after-broken", 0).await;
    let deliveries = host.settled_deliveries(&after, SETTLE).await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0]["webhook_id"], "b");
}

/// A small tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts a `size`-byte tmpfs at `path`; `None` where mounting is not allowed (not root,
    /// no CAP_SYS_ADMIN), which fails the test under `CI=true`.
    fn mount(path: &Path, size: u64) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).unwrap();
        let status =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(path).status();
        match status {
            Ok(status) if status.success() => Some(SmallDisk { path: path.to_path_buf() }),
            outcome => {
                let message = format!("cannot mount a tmpfs for the full-disk test ({outcome:?}): run as root");
                assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
                eprintln!("skipped: {message}");
                None
            }
        }
    }

    fn available(&self) -> u64 {
        let output = Command::new("df").args(["--output=avail", "-B1"]).arg(&self.path).output().unwrap();
        String::from_utf8(output.stdout).unwrap().lines().nth(1).unwrap().trim().parse().unwrap()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// The data dir on a 16 MiB tmpfs, nearly filled by a ballast file: ingest answers 503
/// `storage_full` once the disk is full, never a 500, and the host keeps running; once the
/// ballast is gone and the host restarted, every event that got a 202 is there and delivered.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_events_with_storage_full_and_loses_none_it_accepted() {
    let receiver = TestReceiver::start().await;
    let config = [LOCAL_DELIVERY.to_string(), webhook("sink", &receiver.url("/sink"), r#"["*"]"#, "")].concat();
    let mut host = TestHost::create(&config, &[]);
    let Some(disk) = SmallDisk::mount(&host.dir.path().join("data"), 16 << 20) else { return };
    host.spawn();
    host.post_sample("message.created").await;
    let ballast = disk.path.join("ballast");
    std::fs::write(&ballast, vec![0u8; (disk.available() - (1 << 20)) as usize]).unwrap();

    let filler = "x".repeat(16 << 10);
    let mut accepted = HashSet::new();
    let mut refused = None;
    for i in 0..400 {
        let (status, body) =
            host.post_event(&format!(r#"{{"id": "full-{i}", "type": "a.b", "data": {{"filler": "{filler}"}}}}"#)).await;
        match status {
            202 => {
                accepted.insert(format!("full-{i}"));
            }
            503 => {
                refused = Some(body);
                break;
            }
            other => panic!("ingest answered {other} on a full disk: {body}\n{}", host.log()),
        }
    }
    let refused =
        refused.unwrap_or_else(|| panic!("the disk never filled: {} accepted\n{}", accepted.len(), host.log()));
    assert_eq!(refused["code"], "storage_full", "{refused}");
    assert!(!accepted.is_empty());
    for _ in 0..3 {
        let (status, body) = host.post_event(r#"{"type": "a.b", "data": {}}"#).await;
        assert!(status == 503 && body["code"] == "storage_full" || status == 202, "{status} {body}");
    }
    assert_eq!(host.http.get(host.url("/healthz")).send().await.unwrap().status(), 200, "still running");
    // Deliveries handed to the worker at ingest go out while the disk is full.
    let deadline = Instant::now() + SETTLE;
    while !receiver.received("/sink").iter().any(|r| r.json()["id"].as_str().is_some_and(|id| accepted.contains(id))) {
        assert!(Instant::now() < deadline, "nothing accepted on the filling disk was delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    std::fs::remove_file(&ballast).unwrap();
    host.terminate();
    host.spawn();
    for id in &accepted {
        let event = host.get(&format!("/v1/events/{id}")).await;
        assert_eq!(event["event"]["id"], id.as_str(), "{id} got a 202 and must still be there");
    }
    let deadline = Instant::now() + SETTLE;
    loop {
        let delivered: HashSet<String> =
            receiver.received("/sink").iter().filter_map(|r| r.json()["id"].as_str().map(String::from)).collect();
        if accepted.is_subset(&delivered) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} accepted events never delivered",
            accepted.difference(&delivered).count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    host.kill();
    drop(disk);
}

/// A secret written in the config file is changed there, not rotated through the API.
#[tokio::test(flavor = "multi_thread")]
async fn a_secret_in_the_config_file_is_not_rotated_through_the_api() {
    let receiver = TestReceiver::start().await;
    let fixed = format!("{LOCAL_DELIVERY}{}", webhook("fixed", &receiver.url("/f"), r#"["a.b"]"#, ""));
    let host = TestHost::start(&fixed, &[]);
    let output = host.cli(&["webhooks", "rotate-secret", "fixed"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("answered 409") && stderr.contains("secret in the config file"),
        "{stderr}"
    );
}

/// Every file below `dir`, with its bytes.
fn files_below(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_below(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            files.push((path, bytes));
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle.as_bytes())
}

/// With `[server] secret_key_file`, the secrets the host stores are sealed: nothing in the
/// data dir holds them; a copy of it without the key signs nothing; a key rotation (new key,
/// old one as `previous_secret_key_file`) reseals them at start.
#[tokio::test(flavor = "multi_thread")]
async fn stored_secrets_are_sealed_with_the_operators_key() {
    use base64::Engine as _;
    let receiver = TestReceiver::start().await;
    let mut host = TestHost::create(LOCAL_DELIVERY, &[]);
    let key_file = |name: &str, byte: u8| {
        let path = host.dir.path().join(name);
        std::fs::write(&path, base64::engine::general_purpose::STANDARD.encode([byte; 32])).unwrap();
        path
    };
    let (old_key, new_key) = (key_file("old.key", 7), key_file("new.key", 9));
    let plain_config = std::fs::read_to_string(host.config_path()).unwrap();
    let with_keys = |current: &Path, previous: Option<&Path>| {
        let mut server = format!("[server]\nsecret_key_file = {:?}\n", current.display().to_string());
        if let Some(previous) = previous {
            server += &format!("previous_secret_key_file = {:?}\n", previous.display().to_string());
        }
        plain_config.replacen("[server]\n", &server, 1)
    };
    std::fs::write(host.config_path(), with_keys(&old_key, None)).unwrap();
    host.spawn();

    let add = |id: &str, secret: Option<&str>| {
        let url = receiver.url(&format!("/{id}"));
        let mut args = vec!["webhooks", "add", "--id", id, "--url", &url, "--events", "*"];
        if let Some(secret) = secret {
            args.extend(["--secret", secret]);
        }
        let output = host.cli(&args);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    add("given", Some(crate::host::SECRET));
    add("generated", None);
    let generated = String::from_utf8(host.cli(&["webhooks", "secret", "generated"]).stdout).unwrap();
    let generated = generated.trim().to_string();
    assert!(generated.starts_with("whsec_"), "{generated}");
    host.post_sample("message.created").await;
    let delivered = receiver.wait_for("/given", 1, Duration::from_secs(20)).await;
    assert!(delivered[0].verified, "it signs with the secret it was given");

    let data = host.dir.path().join("data");
    let leaks = |secrets: &[&str]| -> Vec<PathBuf> {
        files_below(&data)
            .into_iter()
            .filter(|(_, bytes)| secrets.iter().any(|s| contains(bytes, s.trim_start_matches("whsec_"))))
            .map(|(path, _)| path)
            .collect()
    };
    assert_eq!(leaks(&[crate::host::SECRET, &generated]), Vec::<PathBuf>::new(), "no stored secret in the clear");

    // A copy of the data without the key: the webhooks cannot sign, and say why.
    host.kill();
    std::fs::write(host.config_path(), &plain_config).unwrap();
    host.spawn();
    let log = host.log();
    assert!(log.contains("no secret key is configured"), "{log}");
    assert!(host.get("/v1/webhooks").await["webhooks"].as_array().unwrap().is_empty());

    // Rotation: the new key, the old one as previous; everything is resealed at start.
    host.kill();
    std::fs::write(host.config_path(), with_keys(&new_key, Some(&old_key))).unwrap();
    host.spawn();
    assert!(host.log().contains("sealed stored webhook secrets with the current secret key"), "{}", host.log());
    host.kill();
    std::fs::write(host.config_path(), with_keys(&new_key, None)).unwrap();
    host.spawn();
    let after = String::from_utf8(host.cli(&["webhooks", "secret", "generated"]).stdout).unwrap();
    assert_eq!(after.trim(), generated, "the same secret, under the new key alone");
    assert_eq!(leaks(&[crate::host::SECRET, &generated]), Vec::<PathBuf>::new());
    let event = host.post_sample_like("message.created", "evt_after_rotation").await;
    let delivered = receiver.wait_for("/given", 2, Duration::from_secs(20)).await;
    assert!(delivered.iter().all(|r| r.verified), "{event} still signed with the given secret");
}
