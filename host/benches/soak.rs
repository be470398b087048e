//! The soak run (`tests/it/soak.rs` has what it does and checks) at the size: ten
//! minutes at 1,000 events/s against the release build.
//!
//! `cargo bench -p hookwasm --bench soak` prints a table per minute and every check's
//! outcome, and exits non-zero when a check fails. Environment: `SOAK_SECONDS` (default 600),
//! `SOAK_RATE` (events/s, default 1000).

#[allow(dead_code)]
#[path = "../../tests/it/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "../../tests/it/soak.rs"]
mod soak;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    support::plugin_dir();
    let plan = soak::Plan::bench();
    println!("{plan:?}");
    let report = runtime.block_on(soak::run(&plan));
    println!("{}", report.text);
    if !report.failures.is_empty() {
        std::process::exit(1);
    }
}
