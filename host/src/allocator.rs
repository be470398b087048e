//! The C allocator's settings for a host that runs for months.
//!
//! glibc's defaults suit short programs, not a busy multi-threaded server:
//! - it opens up to eight arenas per core, and memory freed into one arena is reused only by
//!   the threads that allocate from it, so each arena keeps its own spare chunks;
//! - its mmap threshold rises after the first large free (up to 32 MiB), so later large
//!   buffers come from the arenas instead of being returned to the kernel when freed, and the
//!   trim threshold rises with it.
//!
//! Under the soak's load the process then held ever more free memory while its live heap
//! stayed flat (see BENCHMARKS.md, "Soak"). Two arenas per core and a fixed mmap threshold
//! keep the free memory flat. An operator who tunes glibc's allocator through the
//! environment (`GLIBC_TUNABLES` with `glibc.malloc.*`, or a `MALLOC_*` variable) keeps
//! those settings: this leaves the allocator alone then.
//!
//! Even so, glibc gives memory back to the kernel only from the top of each arena, so a
//! freed buffer below a live one stays resident. [`give_back_freed`] runs `malloc_trim`,
//! which releases every whole free page, every [`TRIM_EVERY`].

use std::time::Duration;

use tokio::sync::watch;

/// How often the allocator's free pages are given back.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Allocations of this size or more get their own mapping, returned to the kernel on free.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: libc::c_int = 256 << 10;

/// Two per core: one per core cost a busy host CPU per event (threads waiting on each other's
/// arena lock); two per core cost nothing measurable (BENCHMARKS.md).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS_PER_CORE: usize = 2;

/// What [`tune_for_long_runs`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuning {
    /// Arenas capped at this many, and the mmap threshold fixed.
    Applied { arenas: usize },
    /// The environment already tunes the allocator.
    LeftToEnvironment,
    /// Not glibc, or `mallopt` refused a setting.
    NotApplied,
}

/// Applies the settings above, unless `environment` (the process's variables) tunes the
/// allocator itself. Call it before the process starts its threads.
pub fn tune_for_long_runs(environment: impl IntoIterator<Item = (String, String)>) -> Tuning {
    let tuned_by_environment = environment.into_iter().any(|(name, value)| {
        (name == "GLIBC_TUNABLES" && value.contains("glibc.malloc.")) || name.starts_with("MALLOC_")
    });
    if tuned_by_environment {
        return Tuning::LeftToEnvironment;
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> Tuning {
    let cores = std::thread::available_parallelism().map_or(2, |cores| cores.get());
    let arenas = cores * ARENAS_PER_CORE;
    let arenas_setting = libc::c_int::try_from(arenas).unwrap_or(libc::c_int::MAX);
    // SAFETY: `mallopt` only changes glibc's allocator parameters; both values are in range.
    let applied = unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas_setting) == 1
            && libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    };
    if applied { Tuning::Applied { arenas } } else { Tuning::NotApplied }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> Tuning {
    Tuning::NotApplied
}

/// Until `shutdown` turns true, every [`TRIM_EVERY`], gives the allocator's free pages back
/// to the kernel (off the async runtime: it takes each arena's lock in turn).
pub async fn give_back_freed(mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + TRIM_EVERY, TRIM_EVERY);
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
    // SAFETY: `malloc_trim` has no preconditions; it only returns free pages to the kernel.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
    }

    #[test]
    fn an_operators_own_allocator_settings_are_kept() {
        for environment in [
            vars(&[("GLIBC_TUNABLES", "glibc.malloc.arena_max=4")]),
            vars(&[("MALLOC_ARENA_MAX", "4")]),
            vars(&[("MALLOC_MMAP_THRESHOLD_", "1048576")]),
        ] {
            assert_eq!(tune_for_long_runs(environment.clone()), Tuning::LeftToEnvironment, "{environment:?}");
        }
    }

    #[test]
    fn otherwise_glibc_gets_two_arenas_per_core() {
        let tuning = tune_for_long_runs(vars(&[("GLIBC_TUNABLES", "glibc.rtld.optional_static_tls=512")]));
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            let cores = std::thread::available_parallelism().unwrap().get();
            assert_eq!(tuning, Tuning::Applied { arenas: 2 * cores });
        } else {
            assert_eq!(tuning, Tuning::NotApplied);
        }
    }
}
