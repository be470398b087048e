//! When to try again: the configured schedule with jitter, `Retry-After` honoured up to a cap.

use std::time::Duration;

/// The outcome class of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// `410 Gone`: the endpoint is gone; stop and disable the webhook.
    Gone,
    Retry,
}

pub fn verdict(status: Option<u16>) -> Verdict {
    match status {
        Some(200..=299) => Verdict::Delivered,
        Some(410) => Verdict::Gone,
        _ => Verdict::Retry,
    }
}

/// The delay before the next attempt after `attempts_made` attempts, or `None` when the
/// schedule is exhausted. `schedule[n]` is the delay before attempt `n + 1`.
pub fn next_delay(
    schedule: &[Duration],
    attempts_made: u32,
    retry_after: Option<Duration>,
    max_retry_after: Duration,
) -> Option<Duration> {
    let base = *schedule.get(attempts_made as usize)?;
    // +-20% so that endpoints recovering from an outage are not hit by one synchronized wave.
    let jittered = base.mul_f64(rand::random_range(0.8..1.2));
    Some(match retry_after {
        Some(wanted) => jittered.max(wanted.min(max_retry_after)),
        None => jittered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_schedule_with_jitter_and_honours_retry_after() {
        let schedule = [Duration::ZERO, Duration::from_secs(5), Duration::from_secs(300)];
        let max = Duration::from_secs(3600);
        let second = next_delay(&schedule, 1, None, max).unwrap();
        assert!(second >= Duration::from_secs(4) && second <= Duration::from_secs(6), "{second:?}");
        assert_eq!(next_delay(&schedule, 3, None, max), None);
        assert!(next_delay(&schedule, 1, Some(Duration::from_secs(60)), max).unwrap() >= Duration::from_secs(60));
        assert!(next_delay(&schedule, 1, Some(Duration::from_secs(86400)), max).unwrap() <= Duration::from_secs(3600));
        assert_eq!(verdict(Some(204)), Verdict::Delivered);
        assert_eq!(verdict(Some(301)), Verdict::Retry);
        assert_eq!(verdict(Some(410)), Verdict::Gone);
        assert_eq!(verdict(None), Verdict::Retry);
    }

    proptest::proptest! {
        /// Each delay is its schedule entry within the jitter bounds, raised to `Retry-After`
        /// capped at the maximum, and there is none past the schedule's end.
        #[test]
        fn delays_stay_within_jitter_and_retry_after_is_capped(
            schedule in proptest::collection::vec(0u64..100_000_000, 0..12),
            attempts in 0u32..16,
            retry_after in proptest::option::of(0u64..10_000_000_000),
            cap in 0u64..1_000_000_000,
        ) {
            let schedule: Vec<Duration> = schedule.into_iter().map(Duration::from_millis).collect();
            let (retry_after, cap) = (retry_after.map(Duration::from_millis), Duration::from_millis(cap));
            let delay = next_delay(&schedule, attempts, retry_after, cap);
            let Some(&base) = schedule.get(attempts as usize) else {
                proptest::prop_assert_eq!(delay, None);
                return Ok(());
            };
            let delay = delay.unwrap();
            let (low, high) = (base.mul_f64(0.8), base.mul_f64(1.2));
            let floor = retry_after.map_or(Duration::ZERO, |wanted| wanted.min(cap));
            proptest::prop_assert!(delay >= low.max(floor) - Duration::from_nanos(1), "{:?} < {:?}", delay, low.max(floor));
            proptest::prop_assert!(delay <= high.max(floor) + Duration::from_nanos(1), "{:?} > {:?}", delay, high.max(floor));
        }
    }
}
