//! Hostile and broken endpoints: a chaos receiver whose listeners each misbehave one way, and
//! the real binary delivering to all of them and to one healthy receiver at once. Every
//! attempt ends within the webhook's timeout, is recorded with what went wrong, is retried on
//! schedule, reads a bounded amount, and the healthy webhook is not slowed.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::host::{TestHost, TestReceiver, delivery_for, webhook};

/// How one listener misbehaves.
#[derive(Clone, Copy, Debug)]
enum Misbehaviour {
    /// The status line at one byte per second.
    OneBytePerSecond,
    /// A 200 whose chunked body never ends.
    EndlessBody,
    /// A 200 announcing 100 MB of body, and sending it.
    HugeBody,
    /// Resets the connection after the first bytes of the request.
    ResetMidRequest,
    /// Resets the connection halfway through the response's headers.
    ResetMidResponse,
    /// Reads the request and never answers.
    NeverAnswers,
    /// Answers bytes that are not HTTP.
    Garbage,
    /// Redirects to itself.
    RedirectsToItself,
    /// Plain HTTP where TLS is expected: answers at once, before any request.
    PlainHttpOnTls,
    /// No listener: a host name that resolves to nothing. It has a label over 63 characters,
    /// which the system resolver refuses without sending a query; a name the DNS answers
    /// NXDOMAIN for would take the same path, but asking would leave loopback.
    ResolvesToNothing,
}

/// A host name no resolver can answer for (see [`Misbehaviour::ResolvesToNothing`]).
fn unresolvable_url() -> String {
    format!("http://{}.invalid/hook", "a".repeat(64))
}

async fn serve(listener: TcpListener, misbehaviour: Misbehaviour) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        tokio::spawn(misbehave(stream, misbehaviour));
    }
}

/// Reads until the end of the request's headers (the body is small and follows at once).
async fn read_head(stream: &mut TcpStream) {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
        }
    }
}

/// Closes with a TCP reset rather than a FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn misbehave(mut stream: TcpStream, misbehaviour: Misbehaviour) {
    match misbehaviour {
        Misbehaviour::OneBytePerSecond => {
            read_head(&mut stream).await;
            for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n" {
                if stream.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Misbehaviour::EndlessBody => {
            read_head(&mut stream).await;
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await;
            let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
            while stream.write_all(chunk.as_bytes()).await.is_ok() {}
        }
        Misbehaviour::HugeBody => {
            read_head(&mut stream).await;
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000000\r\n\r\n").await;
            let block = vec![b'x'; 1 << 20];
            for _ in 0..100 {
                if stream.write_all(&block).await.is_err() {
                    return;
                }
            }
        }
        Misbehaviour::ResetMidRequest => {
            let mut first = [0u8; 16];
            let _ = stream.read(&mut first).await;
            reset(stream);
        }
        Misbehaviour::ResetMidResponse => {
            read_head(&mut stream).await;
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-le").await;
            let _ = stream.flush().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            reset(stream);
        }
        Misbehaviour::NeverAnswers => {
            read_head(&mut stream).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Misbehaviour::Garbage => {
            read_head(&mut stream).await;
            let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\x00\x01\x02 not http at all\r\n\r\n").await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Misbehaviour::PlainHttpOnTls => {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Misbehaviour::ResolvesToNothing => {}
        Misbehaviour::RedirectsToItself => {
            read_head(&mut stream).await;
            let port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{port}/\r\ncontent-length: 0\r\n\r\n"
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    }
}

/// What the attempts against each endpoint must show: a status, or an error containing one
/// of these words.
fn expected(misbehaviour: Misbehaviour) -> (Option<u16>, &'static [&'static str]) {
    match misbehaviour {
        Misbehaviour::OneBytePerSecond | Misbehaviour::NeverAnswers => (None, &["timed out"]),
        Misbehaviour::EndlessBody | Misbehaviour::HugeBody => (Some(200), &[]),
        Misbehaviour::ResetMidRequest | Misbehaviour::ResetMidResponse => {
            (None, &["reset", "closed", "incomplete", "connection"])
        }
        Misbehaviour::Garbage => (None, &["invalid", "parse", "HTTP"]),
        Misbehaviour::RedirectsToItself => (Some(307), &[]),
        Misbehaviour::PlainHttpOnTls => (None, &["tls", "corrupt", "handshake", "invalid"]),
        Misbehaviour::ResolvesToNothing => (None, &["dns", "resolve", "lookup", "not known"]),
    }
}

const TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread")]
async fn hostile_endpoints_end_within_the_timeout_are_recorded_and_do_not_slow_the_others() {
    let all = [
        Misbehaviour::OneBytePerSecond,
        Misbehaviour::EndlessBody,
        Misbehaviour::HugeBody,
        Misbehaviour::ResetMidRequest,
        Misbehaviour::ResetMidResponse,
        Misbehaviour::NeverAnswers,
        Misbehaviour::Garbage,
        Misbehaviour::RedirectsToItself,
    ];
    let healthy = TestReceiver::start().await;
    let mut config = String::from(
        "[delivery]\nallow_http = true\nallow_private_networks = true\ntimeout = \"2s\"\nretry_schedule = [\"0s\", \"1s\", \"1s\", \"1s\", \"1h\"]\n",
    );
    config += &webhook("healthy", &healthy.url("/ok"), r#"["*"]"#, "");
    for (index, misbehaviour) in all.iter().enumerate() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(serve(listener, *misbehaviour));
        config += &webhook(&format!("chaos-{index}"), &url, r#"["*"]"#, "");
    }
    // An https URL whose server speaks plain HTTP: the TLS handshake fails.
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_url = format!("https://{}/hook", plain.local_addr().unwrap());
    tokio::spawn(serve(plain, Misbehaviour::PlainHttpOnTls));
    config += &webhook("tls", &tls_url, r#"["*"]"#, "");
    config += &webhook("nowhere", &unresolvable_url(), r#"["*"]"#, "");

    let host = TestHost::start(&config, &[]);
    let started = Instant::now();
    let mut events = Vec::new();
    for i in 0..5 {
        events.push(host.post_sample_like("message.created", &format!("evt_chaos_{i}")).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The healthy webhook gets every event promptly, whatever the others do.
    let received = healthy.wait_for("/ok", events.len(), Duration::from_secs(10)).await;
    assert_eq!(received.len(), events.len());
    for event in &events {
        let detail = host.get(&format!("/v1/events/{event}")).await;
        let deliveries = detail["deliveries"].as_array().unwrap();
        let ok = delivery_for(deliveries, "healthy");
        assert_eq!(ok["state"], "delivered", "{ok:#}");
        let latency = ok["attempts"][0]["latency_ms"].as_u64().unwrap();
        assert!(latency < 500, "the healthy webhook's attempt took {latency} ms");
    }

    // Every hostile endpoint: at least two attempts (the first and a retry) within the
    // schedule, each ended within the timeout and recorded with what happened.
    let deadline = started + Duration::from_secs(30);
    let mut names: Vec<(String, Misbehaviour)> =
        all.iter().enumerate().map(|(i, m)| (format!("chaos-{i}"), *m)).collect();
    names.push(("tls".into(), Misbehaviour::PlainHttpOnTls));
    names.push(("nowhere".into(), Misbehaviour::ResolvesToNothing));
    for (name, misbehaviour) in names {
        let delivery = loop {
            let detail = host.get(&format!("/v1/events/{}", events[0])).await;
            let delivery = delivery_for(detail["deliveries"].as_array().unwrap(), &name).clone();
            let attempts = delivery["attempts"].as_array().map_or(0, Vec::len);
            let done = delivery["state"] == "delivered" || attempts >= 2;
            if done {
                break delivery;
            }
            assert!(
                Instant::now() < deadline,
                "{name} ({misbehaviour:?}) was not retried: {delivery:#}\n{}",
                host.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for attempt in delivery["attempts"].as_array().unwrap() {
            let latency = Duration::from_millis(attempt["latency_ms"].as_u64().unwrap());
            assert!(latency <= TIMEOUT + Duration::from_millis(500), "{name}: an attempt took {latency:?}: {attempt}");
            assert!(attempt["response_excerpt"].as_str().unwrap().len() <= 512, "{name}: bounded read");
            let error = attempt["error"].as_str().unwrap_or("");
            match expected(misbehaviour) {
                (Some(status), _) => assert_eq!(attempt["status"], status, "{name}: {attempt}"),
                (None, words) => {
                    assert!(attempt["status"].is_null(), "{name}: {attempt}");
                    assert!(
                        words.iter().any(|w| error.to_lowercase().contains(&w.to_lowercase())),
                        "{name} ({misbehaviour:?}): {error:?}"
                    );
                }
            }
        }
        if delivery["state"] != "delivered" {
            assert_eq!(delivery["state"], "retrying", "{name}: {delivery:#}");
        }
    }
}
