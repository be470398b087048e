//! The threads plugin calls run on: up to `Limits::max_concurrent` long-lived threads that
//! take calls from one queue, and wake only as many of themselves as the load needs.
//!
//! A call blocks its thread until the plugin returns or its deadline passes, so it must not
//! run on a Tokio worker. Tokio's blocking pool would do, but with dozens of idle threads it
//! wakes one for nearly every call, and a wake-up is expensive in a VM. Here a new call wakes
//! (or starts) a thread only while fewer than `busy_target` calls run (one per core);
//! beyond that it waits in the queue for the next thread to finish, which takes it without
//! sleeping. At saturation that costs less host CPU per event (BENCHMARKS.md).
//!
//! A slow call (a hostile plugin spinning or sleeping until its deadline) must not hold up
//! everyone else's: a call running longer than [`SLOW_AFTER`] no longer counts towards the
//! busy target, so the next call to arrive wakes another thread, up to `max_threads`.
//!
//! The threads enter the host's Tokio runtime, so WASI's blocking calls inside a plugin run
//! on it as they would on the blocking pool.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A call running this long no longer counts as keeping a core busy. Well above a normal
/// call (tens of µs) plus the scheduler's time slices, well below the default deadline.
pub const SLOW_AFTER: Duration = Duration::from_millis(10);

type Job = Box<dyn FnOnce() + Send>;

pub struct CallThreads {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    job_queued: Condvar,
    max_threads: usize,
    busy_target: usize,
    runtime: Option<tokio::runtime::Handle>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Per thread started: when its current call began, or `None` between calls.
    calls: Vec<Option<Instant>>,
    /// Threads waiting for a call.
    idle: usize,
    /// Threads started that have not yet looked at the queue.
    starting: usize,
    /// Idle threads notified that have not yet looked at the queue.
    woken: usize,
    closed: bool,
}

impl State {
    /// Calls running that are not (yet) slow.
    fn busy(&self, now: Instant) -> usize {
        self.calls.iter().flatten().filter(|&&began| now.duration_since(began) < SLOW_AFTER).count()
    }
}

impl CallThreads {
    /// Up to `max_threads` threads, started as the load needs them; a new call wakes or
    /// starts one only while fewer than `busy_target` calls run (slow ones not counted).
    pub fn new(max_threads: usize, busy_target: usize) -> CallThreads {
        let shared = Shared {
            state: Mutex::default(),
            job_queued: Condvar::new(),
            max_threads: max_threads.max(1),
            busy_target: busy_target.max(1),
            runtime: tokio::runtime::Handle::try_current().ok(),
        };
        CallThreads { shared: Arc::new(shared) }
    }

    /// Runs `call` on one of the threads. `None` if it panicked (a host bug: plugin faults
    /// are results, not panics); the thread carries on.
    pub async fn run<T: Send + 'static>(&self, call: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (reply, result) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move || {
            if let Ok(value) = std::panic::catch_unwind(AssertUnwindSafe(call)) {
                let _ = reply.send(value);
            }
        }));
        result.await.ok()
    }

    fn submit(&self, job: Job) {
        let shared = &self.shared;
        let mut state = shared.lock();
        state.queue.push_back(job);
        // Threads on their way to the queue will take this call as well as any other.
        let active = state.busy(Instant::now()) + state.starting + state.woken;
        if active >= shared.busy_target {
            return;
        }
        if state.idle > state.woken {
            state.woken += 1;
            drop(state);
            shared.job_queued.notify_one();
        } else if state.calls.len() < shared.max_threads {
            let slot = state.calls.len();
            state.calls.push(None);
            state.starting += 1;
            drop(state);
            let thread = shared.clone();
            let started = std::thread::Builder::new()
                .name(format!("hookwasm-plugin-{}", slot + 1))
                .spawn(move || thread.work(slot));
            if let Err(error) = started {
                // The call stays queued for a running thread to take; the slot stays unused.
                tracing::error!(%error, "cannot start a plugin thread");
                shared.lock().starting -= 1;
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Jobs run outside the lock and catch their panics, so it is never poisoned mid-update.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn work(&self, slot: usize) {
        let _runtime = self.runtime.as_ref().map(|runtime| runtime.enter());
        let mut state = self.lock();
        state.starting -= 1;
        loop {
            if let Some(job) = state.queue.pop_front() {
                state.calls[slot] = Some(Instant::now());
                drop(state);
                job();
                state = self.lock();
                state.calls[slot] = None;
            } else if state.closed {
                return;
            } else {
                state.idle += 1;
                state = self.job_queued.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
                state.idle -= 1;
                state.woken = state.woken.saturating_sub(1);
            }
        }
    }
}

impl Drop for CallThreads {
    /// The threads finish the queued calls, then stop.
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.job_queued.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    const WAIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn calls_run_off_the_runtime_and_a_panic_costs_no_thread() {
        let threads = CallThreads::new(1, 1);
        let name = threads.run(|| std::thread::current().name().map(str::to_string)).await;
        assert_eq!(name.flatten().as_deref(), Some("hookwasm-plugin-1"));
        assert_eq!(threads.run(|| -> u32 { panic!("a bug") }).await, None);
        // The one thread survived the panic and still has the runtime entered.
        assert_eq!(threads.run(|| tokio::runtime::Handle::try_current().is_ok()).await, Some(true));
        assert_eq!(threads.shared.lock().calls.len(), 1);
    }

    #[tokio::test]
    async fn no_more_than_max_threads_run_at_once() {
        let threads = Arc::new(CallThreads::new(2, 2));
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let (threads, running, peak) = (threads.clone(), running.clone(), peak.clone());
                tokio::spawn(async move {
                    threads
                        .run(move || {
                            peak.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(5));
                            running.fetch_sub(1, Ordering::SeqCst);
                        })
                        .await
                })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap(), Some(()));
        }
        assert!(peak.load(Ordering::SeqCst) <= 2, "{} calls ran at once", peak.load(Ordering::SeqCst));
        assert!(threads.shared.lock().calls.len() <= 2);
    }

    /// Two calls that each wait for the other, or give up after `WAIT`; true if they met.
    async fn rendezvous(threads: &CallThreads) -> (Option<bool>, Option<bool>) {
        let (a_to_b, b_from_a) = mpsc::channel();
        let (b_to_a, a_from_b) = mpsc::channel();
        let a = threads.run(move || a_to_b.send(()).is_ok() && a_from_b.recv_timeout(WAIT).is_ok());
        let b = threads.run(move || b_to_a.send(()).is_ok() && b_from_a.recv_timeout(WAIT).is_ok());
        tokio::join!(a, b)
    }

    #[tokio::test]
    async fn calls_below_the_busy_target_run_at_once() {
        assert_eq!(rendezvous(&CallThreads::new(8, 2)).await, (Some(true), Some(true)));
    }

    #[tokio::test]
    async fn slow_calls_do_not_hold_up_the_queue() {
        let threads = Arc::new(CallThreads::new(8, 2));
        // Two slow calls take the busy target's threads until released.
        let (release, released) = mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let slow: Vec<_> = (0..2)
            .map(|_| {
                let (threads, released) = (threads.clone(), released.clone());
                tokio::spawn(
                    async move { threads.run(move || released.lock().unwrap().recv_timeout(WAIT).is_ok()).await },
                )
            })
            .collect();
        while threads.shared.lock().calls.iter().flatten().count() < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // A quick call queues behind them; once they count as slow, the next call starts a
        // thread that runs both.
        let quick = tokio::spawn({
            let threads = threads.clone();
            async move { threads.run(|| "quick").await }
        });
        tokio::time::sleep(SLOW_AFTER * 2).await;
        assert_eq!(threads.run(|| "next").await, Some("next"));
        assert_eq!(quick.await.unwrap(), Some("quick"));
        for _ in 0..2 {
            release.send(()).unwrap();
        }
        for call in slow {
            assert_eq!(call.await.unwrap(), Some(true));
        }
    }

    #[tokio::test]
    async fn threads_stop_once_dropped() {
        let threads = CallThreads::new(2, 2);
        assert_eq!(rendezvous(&threads).await, (Some(true), Some(true)));
        let shared = threads.shared.clone();
        drop(threads);
        let deadline = Instant::now() + WAIT;
        // Each thread holds the shared state until it stops.
        while Arc::strong_count(&shared) > 1 {
            assert!(Instant::now() < deadline, "plugin threads still running");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
