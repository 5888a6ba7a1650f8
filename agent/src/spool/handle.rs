//! [`SpoolHandle`]: the spool shared between the capture side (push) and the
//! sender (batches, acks), with a wake-up for the sender.
//!
//! Spool calls do blocking file I/O (fsync); async code calls the `*_blocking`
//! methods from `tokio::task::spawn_blocking`, which the sender does.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ballast_model::Envelope;
use tokio::sync::Notify;

use super::{PushOutcome, Spool, SpoolError, SpoolStats};

/// A cloneable handle to one [`Spool`].
#[derive(Debug, Clone)]
pub struct SpoolHandle {
    spool: Arc<Mutex<Spool>>,
    pushed: Arc<Notify>,
}

impl SpoolHandle {
    pub fn new(spool: Spool) -> Self {
        Self {
            spool: Arc::new(Mutex::new(spool)),
            pushed: Arc::new(Notify::new()),
        }
    }

    /// [`Spool::push`], then wakes the sender. Blocking (fsync).
    pub fn push_blocking(&self, envelope: &Envelope) -> Result<PushOutcome, SpoolError> {
        let outcome = self.lock().push(envelope)?;
        self.pushed.notify_one();
        Ok(outcome)
    }

    /// [`Spool::stats`] (cheap; no I/O).
    pub fn stats(&self) -> SpoolStats {
        self.lock().stats()
    }

    /// Exclusive access for anything else. A panic while holding the lock leaves the
    /// spool usable: its in-memory summary is only changed after the disk agrees.
    pub fn lock(&self) -> MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves after the next push (or at once if one happened since the last wait).
    pub async fn pushed(&self) {
        self.pushed.notified().await;
    }
}
