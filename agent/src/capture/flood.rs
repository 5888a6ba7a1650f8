//! Rate limits for guest-triggered events: a token bucket (OOM events) and a
//! minimum interval (near-miss events). Pure: the caller passes the time.

use std::time::{Duration, Instant};

/// A token bucket: `burst` tokens, one more every `refill_every`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    burst: u32,
    refill_every: Duration,
    tokens: u32,
    /// When the next token is due (refill time is accounted exactly, not per call).
    refilled_at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: u32, refill_every: Duration, now: Instant) -> Self {
        TokenBucket {
            burst: burst.max(1),
            refill_every: refill_every.max(Duration::from_millis(1)),
            tokens: burst.max(1),
            refilled_at: now,
        }
    }

    /// Takes a token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// Tokens left right now.
    pub fn available(&mut self, now: Instant) -> u32 {
        self.refill(now);
        self.tokens
    }

    fn refill(&mut self, now: Instant) {
        if self.tokens >= self.burst {
            self.refilled_at = now;
            return;
        }
        let elapsed = now.saturating_duration_since(self.refilled_at);
        let earned = elapsed.as_nanos() / self.refill_every.as_nanos();
        if earned == 0 {
            return;
        }
        let earned = u32::try_from(earned).unwrap_or(u32::MAX);
        self.tokens = self.tokens.saturating_add(earned).min(self.burst);
        if self.tokens >= self.burst {
            self.refilled_at = now;
        } else {
            self.refilled_at += self.refill_every * earned;
        }
    }
}

/// Lets one event through per `interval`; counts the rest.
#[derive(Debug, Clone)]
pub struct MinInterval {
    interval: Duration,
    last: Option<Instant>,
    /// Events dropped since the last one let through.
    pub dropped: u64,
}

impl MinInterval {
    pub fn new(interval: Duration) -> Self {
        MinInterval {
            interval,
            last: None,
            dropped: 0,
        }
    }

    /// True when an event may go out now; then the dropped count is reset by the caller.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.dropped += 1;
                false
            }
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flood_of_1000_per_second_gets_burst_then_refill_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(20, Duration::from_secs(60), start);
        let mut allowed = 0;
        // 1000 reports per second for 5 minutes.
        for ms in 0..300_000u64 {
            if bucket.try_take(start + Duration::from_millis(ms)) {
                allowed += 1;
            }
        }
        // 20 at once, then one per minute: at 60, 120, 180, 240 s.
        assert_eq!(allowed, 24);
    }

    #[test]
    fn bucket_refills_to_burst_and_no_further() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(3, Duration::from_secs(1), start);
        for _ in 0..3 {
            assert!(bucket.try_take(start));
        }
        assert!(!bucket.try_take(start));
        assert_eq!(bucket.available(start + Duration::from_millis(2500)), 2);
        assert_eq!(bucket.available(start + Duration::from_secs(3600)), 3);
    }

    #[test]
    fn min_interval_counts_what_it_drops() {
        let start = Instant::now();
        let mut limit = MinInterval::new(Duration::from_secs(60));
        assert!(limit.allow(start));
        assert!(!limit.allow(start + Duration::from_secs(1)));
        assert!(!limit.allow(start + Duration::from_secs(59)));
        assert_eq!(limit.dropped, 2);
        assert!(limit.allow(start + Duration::from_secs(60)));
    }
}
