//! What this process's webhook senders did ([`NotifyStats`]), read by `crate::metrics`.

use std::sync::atomic::AtomicU64;

/// What this process's senders did since it started.
#[derive(Debug, Default)]
pub struct NotifyStats {
    /// OOM notifications delivered (2xx).
    pub sent: AtomicU64,
    /// Notifications given up (attempts exhausted, or their OOM deleted first).
    pub failed: AtomicU64,
    /// Notifications held back by a rate limit (then counted in a summary).
    pub suppressed: AtomicU64,
    /// "N more suppressed" summaries delivered.
    pub summaries: AtomicU64,
    /// Failed posts that will be retried.
    pub retries: AtomicU64,
}
