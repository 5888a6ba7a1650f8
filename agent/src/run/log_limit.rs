//! A log line per error source at most once per interval (200 VMs x 10 s polls must
//! not flood the journal), with a count of what was held back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Logs a repeated error of one source at most once per interval (200 VMs x 10 s
/// polls must not flood the journal), counting what it held back.
pub(super) struct RateLimitedLog {
    every: Duration,
    last: BTreeMap<String, (Instant, u64)>,
}

impl RateLimitedLog {
    pub(super) fn new(every: Duration) -> Self {
        Self {
            every,
            last: BTreeMap::new(),
        }
    }

    pub(super) fn warn(&mut self, source: &str, message: &str) {
        let now = Instant::now();
        match self.last.get_mut(source) {
            Some((last, held)) if now.duration_since(*last) < self.every => *held += 1,
            Some((last, held)) => {
                tracing::warn!(source, suppressed = *held, "{message}");
                *last = now;
                *held = 0;
            }
            None => {
                if self.last.len() >= 10_000 {
                    self.last.clear();
                }
                tracing::warn!(source, "{message}");
                self.last.insert(source.to_string(), (now, 0));
            }
        }
    }
}
