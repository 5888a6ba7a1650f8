//! [`SpoolHandle`]: the spool shared between the capture side (push) and the
//! sender (batches, acks), with a wake-up for the sender.
//!
//! OOM events and near misses (the critical lane) that the spool cannot store because
//! its disk is full (or its cap is reached) are held in memory, in order, up to
//! [`HELD_MAX`], and pushed again before any newer event and whenever the sender looks
//! for work ([`SpoolHandle::flush_held`]): a full disk delays them, it does not lose
//! them while the agent runs. Other events are refused as before (counted by the spool).
//!
//! Spool calls do blocking file I/O (fsync); async code calls the `*_blocking`
//! methods from `tokio::task::spawn_blocking`, which the sender does.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ballast_model::Envelope;
use tokio::sync::Notify;

use super::{Lane, PushOutcome, Spool, SpoolError, SpoolStats};

/// Critical events held in memory at most while the spool cannot store them.
pub const HELD_MAX: usize = 10_000;

/// A cloneable handle to one [`Spool`].
#[derive(Debug, Clone)]
pub struct SpoolHandle {
    spool: Arc<Mutex<Spool>>,
    pushed: Arc<Notify>,
    held: Arc<Mutex<VecDeque<Envelope>>>,
}

impl SpoolHandle {
    pub fn new(spool: Spool) -> Self {
        Self {
            spool: Arc::new(Mutex::new(spool)),
            pushed: Arc::new(Notify::new()),
            held: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    /// [`Spool::push`], then wakes the sender. Blocking (fsync).
    ///
    /// A critical event that does not fit (full disk, cap) is held in memory and the
    /// error still returned (the caller logs it); held events go first, so an event is
    /// never stored before an older held one.
    pub fn push_blocking(&self, envelope: &Envelope) -> Result<PushOutcome, SpoolError> {
        let critical = Lane::of(&envelope.event) == Lane::Critical;
        let mut held = self.held();
        let drained = Self::flush(&mut self.lock(), &mut held);
        let result = if drained || !critical {
            self.lock().push(envelope)
        } else {
            Err(SpoolError::DiskFull {
                path: std::path::PathBuf::from("(spool; older events are waiting in memory)"),
                source: std::io::Error::from(std::io::ErrorKind::StorageFull),
            })
        };
        match result {
            Ok(outcome) => {
                self.pushed.notify_one();
                Ok(outcome)
            }
            Err(error) => {
                let retryable = error.is_disk_full() || matches!(error, SpoolError::Full { .. });
                if retryable && critical {
                    if held.len() < HELD_MAX {
                        held.push_back(envelope.clone());
                        tracing::warn!(
                            key = %envelope.key,
                            held = held.len(),
                            "Spool cannot store an OOM/near-miss event ({error}); kept in memory until there is room."
                        );
                    } else {
                        tracing::error!(
                            key = %envelope.key,
                            "Spool cannot store an OOM/near-miss event and {HELD_MAX} are already waiting in memory; this one is lost."
                        );
                    }
                }
                Err(error)
            }
        }
    }

    /// Pushes the held critical events that fit now; returns how many are still held.
    /// Blocking (fsync). The sender calls it before looking for a batch.
    pub fn flush_held(&self) -> usize {
        let mut held = self.held();
        if held.is_empty() {
            return 0;
        }
        let before = held.len();
        Self::flush(&mut self.lock(), &mut held);
        if held.len() < before {
            tracing::info!(
                stored = before - held.len(),
                still_held = held.len(),
                "Spool has room again: OOM/near-miss events kept in memory are stored."
            );
            self.pushed.notify_one();
        }
        held.len()
    }

    /// Events waiting in memory for room in the spool.
    pub fn held_count(&self) -> usize {
        self.held().len()
    }

    /// Pushes held events oldest first; true when none is left.
    fn flush(spool: &mut Spool, held: &mut VecDeque<Envelope>) -> bool {
        while let Some(envelope) = held.front() {
            if spool.push(envelope).is_err() {
                return false;
            }
            held.pop_front();
        }
        true
    }

    fn held(&self) -> MutexGuard<'_, VecDeque<Envelope>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
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

#[cfg(test)]
mod tests {
    use super::super::tests::{oom, rollup};
    use super::super::{BatchLimits, SpoolConfig};
    use super::*;

    fn keys(handle: &SpoolHandle) -> Vec<String> {
        let mut spool = handle.lock();
        let batch = spool.next_batch(BatchLimits::default()).expect("batch");
        batch.events.iter().map(|event| event.key.clone()).collect()
    }

    #[test]
    fn an_oom_the_spool_cannot_store_is_held_and_stored_once_there_is_room() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = oom("a", 1);
        let one_record =
            u64::try_from(serde_json::to_vec(&first).expect("json").len()).expect("size") + 64;
        // Room for one OOM event, not two.
        let config = SpoolConfig::with_cap(dir.path().join("spool"), one_record + 16);
        let (spool, _) = Spool::open(config).expect("open");
        let handle = SpoolHandle::new(spool);
        handle.push_blocking(&first).expect("the first fits");

        let second = oom("a", 2);
        let third = oom("a", 3);
        assert!(handle.push_blocking(&second).is_err(), "the cap is reached");
        assert!(handle.push_blocking(&third).is_err(), "behind the held one");
        assert!(matches!(
            handle.push_blocking(&rollup("a", 5)),
            Ok(PushOutcome::DroppedRollup)
        ));
        assert_eq!(handle.held_count(), 2, "OOM events are held, rollups not");
        assert_eq!(handle.flush_held(), 2, "still no room");

        // The collector acknowledges the first: room for one more, oldest first.
        {
            let mut spool = handle.lock();
            let batch = spool.next_batch(BatchLimits::default()).expect("batch");
            spool.ack(&batch).expect("ack");
        }
        assert_eq!(handle.flush_held(), 1);
        assert_eq!(keys(&handle), vec![second.key.clone()]);
        {
            let mut spool = handle.lock();
            let batch = spool.next_batch(BatchLimits::default()).expect("batch");
            spool.ack(&batch).expect("ack");
        }
        assert_eq!(handle.flush_held(), 0);
        assert_eq!(keys(&handle), vec![third.key.clone()]);
    }
}
