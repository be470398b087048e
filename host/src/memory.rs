//! Gives the memory the allocator holds but no longer uses back to the system, so a host
//! running for months keeps a flat resident size.
//!
//! glibc's allocator keeps a heap per thread (up to 8 per core) and returns freed memory to the
//! system only from the top of each. Threads come and go here (blocking plugin calls, plugin
//! compiles), and under steady load those heaps kept growing with memory nothing used (the soak
//! run in BENCHMARKS.md). `malloc_trim` releases every free page of every heap and takes
//! milliseconds, so it runs every [`EVERY`], off the async runtime. Elsewhere (musl, other
//! systems) nothing runs.

use std::time::Duration;

use tokio::sync::watch;

/// How often freed memory is given back.
pub const EVERY: Duration = Duration::from_secs(10);

/// Until `shutdown` turns true, every [`EVERY`], gives the allocator's free pages back.
pub async fn give_back_freed(mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + EVERY, EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*shutdown.borrow() {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.changed() => continue,
        }
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim has no preconditions; it only returns free memory to the system.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
