//! Ingest tokens and per-host admission.
//!
//! Tokens: 32 random bytes from the OS, printed once as `blt_<64 hex>`; the store
//! keeps only their SHA-256 (hex). A token is looked up by its hash and the stored
//! hash is compared again in constant time. For 256-bit random tokens a plain
//! SHA-256 is enough: there is nothing to brute-force, unlike passwords.
//!
//! Admission: a token bucket per host (sustained rate + burst; 429 with
//! `Retry-After` when empty) and a cap on requests in flight per host, so one
//! misbehaving host cannot queue work in front of the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The token prefix (recognisable in logs and secret scanners).
pub const TOKEN_PREFIX: &str = "blt_";

/// Failure to get randomness from the OS.
#[derive(Debug, thiserror::Error)]
#[error("Failed to read random bytes from the OS: {0}")]
pub struct RandomError(String);

/// What one ingest request may cost.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestLimits {
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub body_timeout: Duration,
    pub rate_per_sec: f64,
    pub burst: u32,
    pub max_in_flight_per_host: u32,
}

/// The defaults of `ingest:` (`crate::config::IngestConfig` starts from them).
impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
            max_decompressed_bytes: 8 * 1024 * 1024,
            body_timeout: Duration::from_secs(30),
            rate_per_sec: 2.0,
            burst: 30,
            max_in_flight_per_host: 2,
        }
    }
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// A new token: `blt_` + 64 hex digits.
pub fn generate_token() -> Result<String, RandomError> {
    Ok(format!("{TOKEN_PREFIX}{}", random_hex(32)?))
}

/// `bytes` random bytes from the OS, in hex.
pub fn random_hex(bytes: usize) -> Result<String, RandomError> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|error| RandomError(error.to_string()))?;
    Ok(hex(&buffer))
}

/// The stored form of a token.
pub fn token_sha256(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Constant-time equality of two strings (length is not secret).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The bucket is empty; retry after this many seconds.
    Rate { retry_after_secs: u64 },
    /// Too many requests of this host are being handled.
    Busy,
}

/// Per-host token buckets and in-flight caps.
#[derive(Debug)]
pub struct Admission {
    rate_per_sec: f64,
    burst: f64,
    max_in_flight: usize,
    hosts: Mutex<HashMap<String, HostState>>,
}

#[derive(Debug)]
struct HostState {
    tokens: f64,
    refilled_at: Instant,
    in_flight: Arc<Semaphore>,
}

impl Admission {
    pub fn new(limits: &IngestLimits) -> Self {
        Self {
            rate_per_sec: limits.rate_per_sec,
            burst: f64::from(limits.burst),
            max_in_flight: usize::try_from(limits.max_in_flight_per_host).unwrap_or(1),
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token of `host`'s bucket and an in-flight slot (held by the permit).
    pub fn admit(&self, host: &str, now: Instant) -> Result<OwnedSemaphorePermit, Refused> {
        let semaphore = {
            let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
            let state = hosts.entry(host.to_string()).or_insert_with(|| HostState {
                tokens: self.burst,
                refilled_at: now,
                in_flight: Arc::new(Semaphore::new(self.max_in_flight)),
            });
            let elapsed = now.saturating_duration_since(state.refilled_at);
            state.tokens =
                (state.tokens + elapsed.as_secs_f64() * self.rate_per_sec).min(self.burst);
            state.refilled_at = now;
            if state.tokens < 1.0 {
                let wait_secs = ((1.0 - state.tokens) / self.rate_per_sec).ceil();
                return Err(Refused::Rate {
                    retry_after_secs: (wait_secs as u64).max(1),
                });
            }
            state.tokens -= 1.0;
            Arc::clone(&state.in_flight)
        };
        semaphore.try_acquire_owned().map_err(|_| Refused::Busy)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hashed() {
        let a = generate_token().expect("random");
        let b = generate_token().expect("random");
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == 4 + 64, "{a}");
        assert_eq!(token_sha256("abc").len(), 64);
        assert_eq!(
            token_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
    }

    #[test]
    fn the_bucket_refills_at_the_rate_and_caps_in_flight() {
        let limits = IngestLimits {
            rate_per_sec: 1.0,
            burst: 2,
            max_in_flight_per_host: 1,
            ..IngestLimits::default()
        };
        let admission = Admission::new(&limits);
        let start = Instant::now();
        let first = admission.admit("a", start).expect("burst 1");
        assert_eq!(
            admission.admit("a", start).map(|_| ()),
            Err(Refused::Busy),
            "one in flight"
        );
        drop(first);
        // The refused busy request cost its token too: the bucket is empty.
        assert!(matches!(
            admission.admit("a", start),
            Err(Refused::Rate {
                retry_after_secs: 1
            })
        ));
        // Another host is not affected.
        assert!(admission.admit("b", start).is_ok());
        assert!(admission
            .admit("a", start + Duration::from_millis(1100))
            .is_ok());
    }
}
