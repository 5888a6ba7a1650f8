//! Failed authentications per source address: a client that keeps sending bad
//! tokens gets 429 (with `Retry-After`) before any lookup, held for
//! [`REFUSAL_DELAY`] first, so a flood on kept-alive connections slows to one
//! request per second per connection instead of costing the CPU its full rate.
//!
//! Each address has a bucket of [`FAILURE_BURST`] failures refilled at
//! [`FAILURES_PER_SEC`]; an address with an empty bucket is refused until it
//! refills. Only failures take from the bucket, and a token found in the
//! in-memory table is let through before this check, so agents behind the same
//! proxy as a misconfigured one keep working. At most [`MAX_ADDRESSES`] addresses
//! are tracked: when full, addresses whose bucket refilled are dropped, and if
//! none did, the map starts over.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Failures an address may make in a row ...
pub const FAILURE_BURST: f64 = 20.0;
/// ... and per second after that.
pub const FAILURES_PER_SEC: f64 = 1.0;
/// How long a refused (429) answer is held back.
pub const REFUSAL_DELAY: std::time::Duration = std::time::Duration::from_secs(1);
/// Addresses tracked at most.
pub const MAX_ADDRESSES: usize = 16_384;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * FAILURES_PER_SEC).min(FAILURE_BURST);
        self.refilled_at = now.max(self.refilled_at);
    }
}

/// The per-address failure buckets; one per process, kept across reloads.
#[derive(Debug, Default)]
pub struct FailedAuthLimiter {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl FailedAuthLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// `Err(retry_after_secs)` when `address` has used up its failures.
    pub fn check(&self, address: IpAddr, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(bucket) = buckets.get_mut(&address) else {
            return Ok(());
        };
        bucket.refill(now);
        if bucket.tokens >= 1.0 {
            return Ok(());
        }
        let wait = ((1.0 - bucket.tokens) / FAILURES_PER_SEC).ceil();
        Err((wait as u64).max(1))
    }

    /// Counts one failed authentication of `address`.
    pub fn failed(&self, address: IpAddr, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_ADDRESSES && !buckets.contains_key(&address) {
            buckets.retain(|_, bucket| {
                bucket.refill(now);
                bucket.tokens < FAILURE_BURST
            });
            if buckets.len() >= MAX_ADDRESSES {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(address).or_insert(Bucket {
            tokens: FAILURE_BURST,
            refilled_at: now,
        });
        bucket.refill(now);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_address_is_refused_after_its_burst_and_let_in_after_the_refill() {
        let limiter = FailedAuthLimiter::new();
        let flooder: IpAddr = "192.0.2.7".parse().expect("ip");
        let other: IpAddr = "192.0.2.8".parse().expect("ip");
        let start = Instant::now();
        for _ in 0..FAILURE_BURST as usize {
            assert_eq!(limiter.check(flooder, start), Ok(()));
            limiter.failed(flooder, start);
        }
        assert_eq!(limiter.check(flooder, start), Err(1));
        assert_eq!(limiter.check(other, start), Ok(()), "others unaffected");
        assert_eq!(
            limiter.check(flooder, start + Duration::from_millis(1100)),
            Ok(())
        );
    }

    #[test]
    fn the_map_stays_bounded() {
        let limiter = FailedAuthLimiter::new();
        let now = Instant::now();
        for n in 0..(MAX_ADDRESSES as u32 + 100) {
            limiter.failed(IpAddr::from(n.to_be_bytes()), now);
        }
        assert!(limiter.tracked() <= MAX_ADDRESSES, "{}", limiter.tracked());
    }
}
