//! Pure timing of a webhook's messages: a sliding-window rate limit and jittered
//! exponential backoff.

use std::collections::VecDeque;
use std::time::Duration;

/// At most `messages` sends in any `window`.
#[derive(Debug, Clone)]
pub struct RateWindow {
    messages: usize,
    window_ms: i64,
    sent_at_ms: VecDeque<i64>,
}

impl RateWindow {
    pub fn new(messages: u32, window: Duration) -> Self {
        Self {
            messages: usize::try_from(messages).unwrap_or(usize::MAX),
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
            sent_at_ms: VecDeque::new(),
        }
    }

    /// Messages that may still go at `now_ms`.
    pub fn remaining(&mut self, now_ms: i64) -> usize {
        while self
            .sent_at_ms
            .front()
            .is_some_and(|at| now_ms.saturating_sub(*at) >= self.window_ms)
        {
            self.sent_at_ms.pop_front();
        }
        self.messages.saturating_sub(self.sent_at_ms.len())
    }

    /// Records a message sent at `now_ms`.
    pub fn record(&mut self, now_ms: i64) {
        self.sent_at_ms.push_back(now_ms);
    }
}

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

    #[test]
    fn the_window_slides() {
        let mut window = RateWindow::new(2, Duration::from_secs(60));
        assert_eq!(window.remaining(0), 2);
        window.record(0);
        window.record(10_000);
        assert_eq!(window.remaining(59_999), 0);
        assert_eq!(window.remaining(60_000), 1);
        assert_eq!(window.remaining(70_000), 2);
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
