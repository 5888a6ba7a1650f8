//! Failed authentications per source address: a client that keeps sending bad
//! tokens gets 429 (with `Retry-After`) before any lookup, held for
//! [`REFUSAL_DELAY`] first, so a flood on kept-alive connections slows to one
//! request per second per connection instead of costing the CPU its full rate.
//!
//! Each address has a bucket of [`FAILURE_BURST`] failures refilled at
//! [`FAILURES_PER_SEC`]; an address with an empty bucket is refused until it
//! refills. A lookup takes one failure before it starts and gives it back when the
//! token was good, so only failures cost (and concurrent lookups cannot overdraw the
//! bucket); a token found in the in-memory table is let through before this check,
//! so agents behind the same proxy as a misconfigured one keep working. At most [`MAX_ADDRESSES`] addresses
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

    /// Takes one failure from `address`'s bucket before its token is looked up;
    /// `Err(retry_after_secs)` when none is left. Taken before the lookup, not after
    /// it fails: concurrent requests cannot all pass on the same last failure while
    /// their lookups run. A token found good gives it back ([`Self::give_back`]).
    pub fn take(&self, address: IpAddr, now: Instant) -> Result<(), u64> {
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
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - bucket.tokens) / FAILURES_PER_SEC).ceil();
        Err((wait as u64).max(1))
    }

    /// Gives back the failure [`Self::take`] took: the token was good. An address
    /// back to a full bucket is not tracked any more.
    pub fn give_back(&self, address: IpAddr) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = buckets.get_mut(&address) {
            bucket.tokens = (bucket.tokens + 1.0).min(FAILURE_BURST);
            if bucket.tokens >= FAILURE_BURST {
                buckets.remove(&address);
            }
        }
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
            assert_eq!(limiter.take(flooder, start), Ok(()));
        }
        assert_eq!(limiter.take(flooder, start), Err(1));
        assert_eq!(limiter.take(other, start), Ok(()), "others unaffected");
        assert_eq!(
            limiter.take(flooder, start + Duration::from_millis(1100)),
            Ok(())
        );
        assert_eq!(
            limiter.take(flooder, start + Duration::from_millis(1100)),
            Err(1),
            "one failure a second"
        );
    }

    #[test]
    fn a_good_token_gives_its_failure_back_and_is_not_tracked() {
        let limiter = FailedAuthLimiter::new();
        let agent: IpAddr = "192.0.2.9".parse().expect("ip");
        let now = Instant::now();
        for _ in 0..FAILURE_BURST as usize * 3 {
            assert_eq!(limiter.take(agent, now), Ok(()));
            limiter.give_back(agent);
        }
        assert_eq!(limiter.tracked(), 0);
        // Failures in flight are counted before their lookups end: the 21st
        // concurrent lookup is refused although none has failed yet.
        for _ in 0..FAILURE_BURST as usize {
            assert_eq!(limiter.take(agent, now), Ok(()));
        }
        assert_eq!(limiter.take(agent, now), Err(1));
    }

    #[test]
    fn the_map_stays_bounded() {
        let limiter = FailedAuthLimiter::new();
        let now = Instant::now();
        for n in 0..(MAX_ADDRESSES as u32 + 100) {
            let _ = limiter.take(IpAddr::from(n.to_be_bytes()), now);
        }
        assert!(limiter.tracked() <= MAX_ADDRESSES, "{}", limiter.tracked());
    }
}
