//! A counting semaphore over guests, across threads and test processes: tests sharing
//! 2 host cores queue for slots.
//!
//! Within a process a mutex and condvar hand slots out in turn; across processes (two
//! test binaries run side by side by `scripts/test.sh`) each slot is also one lock file
//! `<lab>/slots/<n>.lock` held (`flock`) while its guest lives, so the lab never runs
//! more than `BALLAST_LAB_MAX_GUESTS` guests in all. The kernel drops a dead process's
//! locks. A guest taking several slots takes their files all at once or none, so two
//! processes never deadlock holding half of what each needs.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long a guest waits for slots held by other processes before it gives up.
const CROSS_PROCESS_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// Poll interval while other processes hold every slot file.
const POLL: Duration = Duration::from_millis(200);

/// At most `max` guests run at once, in this process and in all together.
#[derive(Debug)]
pub(crate) struct Slots {
    max: usize,
    dir: PathBuf,
    used: Mutex<usize>,
    freed: Condvar,
}

/// Held by a running guest; returns its slots on drop.
#[derive(Debug)]
pub(crate) struct SlotGuard {
    slots: &'static Slots,
    count: usize,
    /// The slot files this guard holds locked (one per slot).
    files: Vec<File>,
}

impl Slots {
    /// `dir` holds the slot files (created when missing).
    pub(crate) fn new(max: usize, dir: PathBuf) -> Slots {
        Slots {
            max,
            dir,
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Waits until `count` slots are free at once and takes them.
    pub(crate) fn acquire(&'static self, count: usize) -> Result<SlotGuard> {
        if count > self.max {
            return Err(Error::Unavailable(format!(
                "{count} guests requested at once, BALLAST_LAB_MAX_GUESTS is {}",
                self.max
            )));
        }
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used + count > self.max {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += count;
        drop(used);
        // From here the guard gives the in-process slots back, also on an error.
        let mut guard = SlotGuard {
            slots: self,
            count,
            files: Vec::with_capacity(count),
        };
        guard.files = self.lock_files(count)?;
        Ok(guard)
    }

    /// Locks `count` of the slot files, all at once, waiting for other processes.
    fn lock_files(&self, count: usize) -> Result<Vec<File>> {
        std::fs::create_dir_all(&self.dir).map_err(Error::io(&self.dir))?;
        let deadline = Instant::now() + CROSS_PROCESS_TIMEOUT;
        loop {
            let mut files = Vec::with_capacity(count);
            for index in 0..self.max {
                if files.len() == count {
                    break;
                }
                if let Some(file) = try_lock(&self.dir.join(format!("{index}.lock")))? {
                    files.push(file);
                }
            }
            if files.len() == count {
                return Ok(files);
            }
            drop(files);
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "waited {CROSS_PROCESS_TIMEOUT:?} for {count} of the lab's {} guest slots ({}): other test processes held them",
                    self.max,
                    self.dir.display()
                )));
            }
            std::thread::sleep(POLL);
        }
    }
}

/// The slot file at `path` locked, or None when another process holds it.
fn try_lock(path: &Path) -> Result<Option<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(Error::io(path))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(error)) => Err(Error::io(path)(error)),
    }
}

impl SlotGuard {
    /// Splits one slot off into its own guard (one per guest of a bulk boot).
    pub(crate) fn split_one(&mut self) -> Option<SlotGuard> {
        if self.count == 0 {
            return None;
        }
        self.count -= 1;
        Some(SlotGuard {
            slots: self.slots,
            count: 1,
            files: self.files.pop().into_iter().collect(),
        })
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        // Closing the files releases their locks.
        self.files.clear();
        if self.count == 0 {
            return;
        }
        let mut used = self.slots.used.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(self.count);
        self.slots.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(max: usize, dir: &Path) -> &'static Slots {
        Box::leak(Box::new(Slots::new(max, dir.to_path_buf())))
    }

    #[test]
    fn two_labs_on_one_directory_share_its_slots() {
        // Two `Slots` on one directory stand for two test processes (flock locks of
        // different open files conflict as between processes).
        let dir = tempfile::tempdir().expect("tempdir");
        let first = slots(2, dir.path());
        let second = slots(2, dir.path());
        let mut both = first.acquire(2).expect("first takes both");
        let one = both.split_one().expect("one");
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let guard = second.acquire(1).expect("second gets one");
            tx.send(()).expect("send");
            drop(guard);
        });
        assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());
        drop(one);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("a freed slot goes to the other process");
        waiter.join().expect("waiter");
        drop(both);
        let again = second.acquire(2).expect("both free again");
        assert_eq!(again.files.len(), 2);
    }
}
