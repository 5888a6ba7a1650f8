//! Pure timing of a webhook's messages: which sent messages still count against the
//! sliding-window rate limit, and jittered exponential backoff.

use std::time::Duration;

/// The wait before retry number `attempt` (1 = the first retry): `initial * 2^(attempt-1)`
/// capped at `max`, then scaled by `jitter` in [0.5, 1.0] (pass a random draw).
pub fn backoff(attempt: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let doubling = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
    let base = initial.saturating_mul(doubling).min(max);
    base.mul_f64(jitter.clamp(0.5, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::outbox::Limit;

    #[test]
    fn a_message_counts_for_one_window_from_when_it_was_sent() {
        let limit = Limit::new(2, Duration::from_secs(60));
        let counts = |sent_at_ms: i64, now_ms: i64| sent_at_ms > limit.counted_after(now_ms);
        assert!(counts(0, 0));
        assert!(counts(0, 59_999));
        assert!(!counts(0, 60_000));
        assert!(counts(10_000, 60_000));
        assert!(!counts(10_000, 70_000));
        let huge = Limit::new(1, Duration::from_secs(u64::MAX));
        assert_eq!(huge.counted_after(-10), i64::MIN, "saturates, never wraps");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_below() {
        let initial = Duration::from_secs(1);
        let max = Duration::from_secs(300);
        assert_eq!(backoff(1, initial, max, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(4, initial, max, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(30, initial, max, 1.0), max);
        assert_eq!(backoff(1000, initial, max, 0.5), Duration::from_secs(150));
        assert_eq!(backoff(1, initial, max, 7.0), Duration::from_secs(1));
    }
}
