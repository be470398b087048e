//! The operator console in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`, installed here when missing, as root). The
//! seed's flow end to end, deliveries and their attempts, replay, disable and enable, a
//! plugin's load error, hostile payloads shown as text, a phone-sized screen, and a
//! screenshot of each page (`target/console-screenshots/`). Under `CI=true` a browser that
//! cannot start fails the test; elsewhere the test says so and skips.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

use crate::host::{Answer, LOCAL_DELIVERY, TestHost, TestReceiver, webhook};

const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "console-admin-token-0123456789";

struct Browser {
    driver: Child,
    client: Client,
    /// The window's size beyond its viewport (borders, bars), to size the viewport.
    chrome: (u32, u32),
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `chromedriver`, installing Debian's packages if it is missing.
fn chromedriver() -> Result<String, String> {
    let found = |name: &str| Command::new("which").arg(name).output().ok().filter(|o| o.status.success());
    if found("chromedriver").is_none() {
        let install = Command::new("apt-get")
            .args(["install", "-y", "-q", "chromium", "chromium-driver"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .map_err(|e| format!("apt-get: {e}"))?;
        if !install.status.success() {
            return Err(format!(
                "apt-get install chromium chromium-driver: {}",
                String::from_utf8_lossy(&install.stderr)
            ));
        }
    }
    found("chromedriver").map(|_| "chromedriver".to_string()).ok_or_else(|| "no chromedriver after installing".into())
}

impl Browser {
    /// A headless browser at 1280x800, or `None` (outside CI) when none can start.
    async fn start() -> Option<Browser> {
        match Browser::try_start().await {
            Ok(browser) => Some(browser),
            Err(error) if std::env::var("CI").as_deref() == Ok("true") => panic!("the browser did not start: {error}"),
            Err(error) => {
                eprintln!("skipped: the browser did not start ({error})");
                None
            }
        }
    }

    async fn try_start() -> Result<Browser, String> {
        let binary = chromedriver()?;
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let driver = Command::new(binary)
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("chromedriver: {e}"))?;
        let mut browser = BrowserGuard(Some(driver));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({"args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,800"]}),
        );
        let deadline = Instant::now() + WAIT;
        loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            let connected = ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await;
            match connected {
                Ok(client) => {
                    let chrome = client
                        .execute("return [outerWidth - innerWidth, outerHeight - innerHeight]", vec![])
                        .await
                        .map_err(|e| e.to_string())?;
                    let chrome = (chrome[0].as_u64().unwrap_or(0) as u32, chrome[1].as_u64().unwrap_or(0) as u32);
                    let browser = Browser { driver: browser.0.take().unwrap(), client, chrome };
                    browser.viewport(1280, 800).await;
                    return Ok(browser);
                }
                Err(error) if Instant::now() > deadline => return Err(format!("no WebDriver session: {error}")),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Sizes the page's viewport (what screenshots show) to `width` x `height`.
    async fn viewport(&self, width: u32, height: u32) {
        self.client.set_window_size(width + self.chrome.0, height + self.chrome.1).await.unwrap();
    }

    async fn open(&self, host: &TestHost, hash: &str) {
        self.client.goto(&host.url(&format!("/console/#{hash}"))).await.unwrap();
    }

    /// The element `css` once it is there.
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client.wait().at_most(WAIT).for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    /// The text of `css` once it holds `wanted`.
    async fn text_of(&self, css: &str, wanted: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = element.text().await
                && text.contains(wanted)
            {
                return text;
            }
            if Instant::now() > deadline {
                let page = self.client.source().await.unwrap_or_default();
                panic!("{css} never showed {wanted:?}:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = crate::support::workspace_root().join("target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Accepts the `confirm()` the page opens next.
    async fn accept_confirm(&self) {
        let deadline = Instant::now() + WAIT;
        while self.client.accept_alert().await.is_err() {
            assert!(Instant::now() < deadline, "no confirmation was asked");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Kills chromedriver if the session never starts.
struct BrowserGuard(Option<Child>);

impl Drop for BrowserGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn host_config(receiver: &TestReceiver) -> String {
    format!(
        "{LOCAL_DELIVERY}[server]\nadmin_token = \"{TOKEN}\"\n{}",
        webhook("existing", &receiver.url("/existing"), r#"["message.created"]"#, "")
    )
}

async fn sign_in(browser: &Browser, host: &TestHost) {
    browser.open(host, "/overview").await;
    browser.fill("#token", TOKEN).await;
    browser.click("#sign-in button[type=submit]").await;
    browser.text_of("#trouble", "Needs attention").await;
}

/// Sign in, create a webhook, send a test event and see its result; disable and enable it.
#[tokio::test(flavor = "multi_thread")]
async fn the_setup_flow_works_in_a_browser() {
    let Some(browser) = Browser::start().await else { return };
    let receiver = TestReceiver::start().await;
    let host = TestHost::start(&host_config(&receiver), &["slack-notify"]);

    browser.open(&host, "/overview").await;
    browser.find("#token").await;
    browser.screenshot("sign-in").await;
    browser.fill("#token", "wrong-token").await;
    browser.click("#sign-in button[type=submit]").await;
    browser.text_of("main", "That token was refused").await;
    sign_in(&browser, &host).await;
    browser.screenshot("overview").await;

    browser.open(&host, "/webhooks").await;
    browser.click("#new-webhook").await;
    browser.fill("#f-id", "slack").await;
    browser.fill("#f-url", &receiver.url("/slack")).await;
    browser.click("input.f-event[value='message.created']").await;
    browser.find("#f-plugin option[value='slack-notify']").await.click().await.unwrap();
    browser.fill("#f-plugin-config", "base_url=https://desk.example.com\nchannel=#support").await;
    browser.screenshot("webhook-new").await;
    browser.click("#save-webhook").await;
    browser.text_of("#webhook-state", "active").await;

    browser.click("#send-test").await;
    let status = browser.text_of("#test-status", "delivered").await;
    assert!(status.contains("HTTP 200"), "{status}");
    browser.text_of("#test-body", "blocks").await;
    let received = receiver.wait_for("/slack", 1, WAIT).await;
    assert!(received[0].json()["blocks"].is_array(), "slack-notify reshaped it");
    browser.click("#show-secret").await;
    let secret = browser.text_of("#secret-value", "whsec_").await;
    assert!(
        standardwebhooks::Webhook::new(secret.trim()).unwrap().verify(&received[0].body, &received[0].headers).is_ok()
    );
    browser.screenshot("webhook").await;

    browser.click("#toggle").await;
    browser.text_of("#webhook-state", "disabled").await;
    assert_eq!(host.get("/v1/webhooks/slack").await["active"], false);
    browser.click("#toggle").await;
    browser.text_of("#webhook-state", "active").await;

    // Its health comes from real deliveries (a test send is not one).
    host.post_sample("message.created").await;
    receiver.wait_for("/slack", 2, WAIT).await;
    browser.open(&host, "/webhooks").await;
    browser.text_of("main", "100% of 1, last 200").await;
    browser.screenshot("webhooks").await;
}

/// Events posted while the page is open appear as deliveries; a delivery shows its
/// attempts and body; dead deliveries are replayed after a confirmation naming how many;
/// payloads with markup stay text; an event's explanation lists every webhook.
#[tokio::test(flavor = "multi_thread")]
async fn deliveries_appear_replay_and_hostile_payloads_stay_text() {
    let Some(browser) = Browser::start().await else { return };
    let receiver = TestReceiver::start().await;
    receiver.script("/existing", &[Answer::status(500); 4], Answer::status(200));
    let host = TestHost::start(&host_config(&receiver), &[]);
    sign_in(&browser, &host).await;
    browser.open(&host, "/deliveries?webhook=existing&state=dead").await;
    browser.find("#no-deliveries").await;

    let hostile = r#"{"id": "evt_hostile", "type": "message.created", "data": {"text": "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\">"}}"#;
    assert_eq!(host.post_event(hostile).await.0, 202);
    // Four failed attempts: the schedule gives up and the delivery is dead.
    let row = browser.text_of("#delivery-list", "dead").await;
    assert!(row.contains("existing"), "{row}");
    browser.screenshot("deliveries").await;

    browser.click("#delivery-list tr.link").await;
    let body = browser.text_of("#delivery-body", "<script>").await;
    assert!(body.contains("onerror"), "{body}");
    let attempts = browser.text_of("main", "Attempts (4)").await;
    assert!(attempts.contains("500"), "{attempts}");
    assert_eq!(browser.client.execute("return window.pwned === undefined", vec![]).await.unwrap(), true);
    let injected = browser.client.find_all(Locator::Css("main img, main script")).await.unwrap();
    assert!(injected.is_empty(), "payload markup became elements");
    browser.screenshot("delivery").await;

    browser.open(&host, "/deliveries?webhook=existing&state=dead").await;
    browser.text_of("#delivery-list", "dead").await;
    browser.click("#replay").await;
    let question = browser.client.get_alert_text().await;
    let deadline = Instant::now() + WAIT;
    let mut question = question;
    while question.is_err() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        question = browser.client.get_alert_text().await;
    }
    assert!(question.unwrap().contains("Send 1 dead deliveries of existing again?"));
    browser.accept_confirm().await;
    receiver.wait_for("/existing", 5, WAIT).await;
    let deadline = Instant::now() + WAIT;
    while host.get("/v1/deliveries?state=delivered").await["deliveries"].as_array().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the replay was not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    browser.open(&host, "/events/evt_hostile").await;
    let why = browser.text_of("#why", "existing").await;
    assert!(why.contains("delivered") || why.contains("in progress"), "{why}");
    browser.text_of("#event-data", "<img src=x").await;
    assert_eq!(browser.client.execute("return window.pwned === undefined", vec![]).await.unwrap(), true);
    browser.screenshot("event").await;

    let policy = host.http.get(host.url("/console/")).send().await.unwrap();
    let csp = policy.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(policy.headers()["x-frame-options"], "DENY");
}

/// A bad plugin deploy shows its load error on the Plugins page while the previous version
/// keeps serving; the console fits a phone-sized screen.
#[tokio::test(flavor = "multi_thread")]
async fn a_bad_deploy_shows_its_error_and_the_console_fits_a_phone() {
    let Some(browser) = Browser::start().await else { return };
    let receiver = TestReceiver::start().await;
    let host = TestHost::start(&host_config(&receiver), &["slack-notify"]);
    sign_in(&browser, &host).await;
    std::fs::write(host.plugins_dir().join("slack-notify.wasm"), b"\0asm\x0d\0\x01\0garbage").unwrap();
    host.wait_plugin("slack-notify", WAIT, |p| p["state"] == "failed").await;
    browser.open(&host, "/plugins").await;
    browser.text_of("main", "invalid component").await;
    browser.screenshot("plugins").await;
    browser.open(&host, "/plugins/slack-notify").await;
    browser.text_of("#plugin-error", "invalid component").await;
    browser.text_of("main", "serving").await;
    browser.screenshot("plugin").await;

    let inner = browser.client.execute("return [innerWidth, innerHeight]", vec![]).await.unwrap();
    assert_eq!(inner, serde_json::json!([1280, 800]), "screenshots are 1280x800");
    browser.viewport(390, 844).await;
    let inner = browser.client.execute("return [innerWidth, innerHeight]", vec![]).await.unwrap();
    assert_eq!(inner, serde_json::json!([390, 844]));
    for page in [
        "/overview",
        "/webhooks",
        "/deliveries",
        "/plugins/slack-notify",
        "/webhooks/existing",
        "/webhooks/new",
        "/events",
    ] {
        browser.open(&host, page).await;
        browser.find("main h1").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let overflow = browser
            .client
            .execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth", vec![])
            .await
            .unwrap();
        assert!(overflow.as_i64().unwrap() <= 0, "{page} scrolls sideways on a phone by {overflow}px");
    }
    browser.open(&host, "/webhooks/existing").await;
    browser.find("#send-test").await;
    browser.screenshot("phone-webhook").await;
}
