//! `hostile`: misbehaves as `plugin_config.mode` asks, so tests can prove each sandbox limit.
//!
//! Modes: `spin` (never returns), `allocate` (grows memory without bound), `huge-output`
//! (a 2 MiB body), `recurse` (overflows the stack), `panic`, `error`, `reserved-header`, `not-json`, `probe` (tries files, env
//! and network and reports what it got), `stdout-flood`, `log-flood`, `reject-config`,
//! `counter` (counts calls in a static: proves instances are fresh), `echo-config`. Anything else passes the event.

use hookwasm_plugin_sdk::prelude::*;
use serde_json::json;

pub struct Hostile;

fn probe() -> serde_json::Value {
    let file = std::fs::read_to_string("/etc/passwd").map(|s| s.len()).map_err(|e| e.to_string());
    let dir = std::fs::read_dir(".").map(|d| d.count()).map_err(|e| e.to_string());
    let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    let target = config::get("connect").unwrap_or_else(|| "127.0.0.1:9".into());
    let net = std::net::TcpStream::connect(&target).map(|_| "connected").map_err(|e| e.to_string());
    let dns =
        std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 80)).map(|a| a.count()).map_err(|e| e.to_string());
    json!({
        "file": format!("{file:?}"),
        "dir": format!("{dir:?}"),
        "env": env,
        "args": std::env::args().collect::<Vec<_>>(),
        "net": format!("{net:?}"),
        "dns": format!("{dns:?}"),
    })
}

/// Recursion without a base case that the optimizer cannot turn into a loop.
#[allow(unconditional_recursion, reason = "overflowing the stack is the point")]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 16]);
    recurse(depth + 1) + frame[(depth % 16) as usize]
}

impl Plugin for Hostile {
    fn check_config() -> Result<()> {
        match config::get("mode").as_deref() {
            Some("reject-config") => Err(Error::msg("mode reject-config always rejects its config")),
            _ => Ok(()),
        }
    }

    fn transform(event: Event) -> Result<Action> {
        match config::get("mode").unwrap_or_default().as_str() {
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(5));
                Ok(Action::Pass)
            }
            "allocate" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 4 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "huge-output" => Action::deliver_json(&json!({ "blob": "x".repeat(2 << 20) })),
            "recurse" => Action::deliver_json(&json!({ "depth": recurse(std::hint::black_box(0)) })),
            "panic" => panic!("hostile plugin panics on {}", event.id),
            "error" => Err(Error::msg("the plugin refused this event")),
            "reserved-header" => Ok(Request::json(&json!({}))?.header("webhook-signature", "v1,forged").into()),
            "not-json" => Ok(Action::deliver(Request::bytes("this is not json"))),
            "probe" => Action::deliver_json(&probe()),
            "stdout-flood" => {
                for i in 0..10_000 {
                    println!("line {i} of a flood of stdout");
                }
                eprintln!("and some stderr");
                Ok(Action::Pass)
            }
            "log-flood" => {
                for i in 0..10_000 {
                    log::info(format!("log line {i}"));
                }
                Ok(Action::Pass)
            }
            "counter" => {
                static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                Action::deliver_json(&json!({ "calls": calls }))
            }
            "echo-config" => Action::deliver_json(
                &config::keys().into_iter().map(|k| (config::get(&k).unwrap_or_default(), k)).collect::<Vec<_>>(),
            ),
            _ => Ok(Action::Pass),
        }
    }
}

export_plugin!(Hostile);
