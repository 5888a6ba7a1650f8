//! The lab's libvirtd lease, across threads and test processes: every libvirt guest
//! holds a shared lease while it exists; a test that restarts libvirtd holds the
//! exclusive one, so no other test's guest (in this process or another test binary
//! running beside it) is booting or talking to its guest agent while the daemon is
//! down. A restart under a booting guest leaves its agent channel `disconnected`.
//!
//! Two lock files in the lab directory (`flock`, released by the kernel when a process
//! dies): `libvirtd.lease` (shared: guests; exclusive: a restart) and
//! `libvirtd.intent`, a turnstile that a waiting restart holds exclusively so that new
//! guests queue behind it instead of starving it. A thread holding the exclusive lease
//! boots its own guests without a shared one. Locks are polled with a deadline, so a
//! lab that never frees up is an error naming what it waited for, not a hang.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long a guest or a restart waits for the lease before it gives up.
const LEASE_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// Poll interval of a lock that is held elsewhere.
const POLL: Duration = Duration::from_millis(100);

/// The lease files of one lab and the thread that holds the exclusive lease.
#[derive(Debug)]
pub(crate) struct Lease {
    lease_file: PathBuf,
    intent_file: PathBuf,
    exclusive_holder: Mutex<Option<ThreadId>>,
    /// Shared leases held, by the thread that took them.
    shared_by_thread: Mutex<HashMap<ThreadId, usize>>,
}

/// A guest's shared lease; released on drop.
#[derive(Debug)]
pub(crate) struct SharedLease {
    /// None for a guest of the exclusive holder.
    held: Option<(&'static Lease, ThreadId, File)>,
}

/// Held by a test that restarts libvirtd ([`crate::Lab::exclusive_libvirtd`]); while
/// it lives, no other test's libvirt guest exists. Released on drop.
#[derive(Debug)]
pub struct ExclusiveLease {
    lease: &'static Lease,
    _intent: File,
    _file: File,
}

impl Lease {
    pub(crate) fn new(lab_dir: &Path) -> Lease {
        Lease {
            lease_file: lab_dir.join("libvirtd.lease"),
            intent_file: lab_dir.join("libvirtd.intent"),
            exclusive_holder: Mutex::new(None),
            shared_by_thread: Mutex::new(HashMap::new()),
        }
    }

    /// A shared lease for one libvirt guest: waits while a restart waits or runs
    /// (unless this thread holds the exclusive lease: then none is needed; or a
    /// shared one already: then a waiting restart waits for it anyway, and queueing
    /// behind that restart would deadlock).
    pub(crate) fn shared(&'static self) -> Result<SharedLease> {
        let thread = std::thread::current().id();
        let holder = *self
            .exclusive_holder
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if holder == Some(thread) {
            return Ok(SharedLease { held: None });
        }
        let deadline = Instant::now() + LEASE_TIMEOUT;
        let already = self
            .shared_by_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&thread)
            .is_some_and(|count| *count > 0);
        // Pass the turnstile: blocked while a restart waits for or holds the lease.
        let intent = if already {
            None
        } else {
            let intent = open(&self.intent_file)?;
            poll_lock(&intent, &self.intent_file, Mode::Shared, deadline)?;
            Some(intent)
        };
        let file = open(&self.lease_file)?;
        poll_lock(&file, &self.lease_file, Mode::Shared, deadline)?;
        drop(intent);
        *self
            .shared_by_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(thread)
            .or_default() += 1;
        Ok(SharedLease {
            held: Some((self, thread, file)),
        })
    }

    /// The exclusive lease: waits until no other libvirt guest of any test exists.
    pub(crate) fn exclusive(&'static self) -> Result<ExclusiveLease> {
        let deadline = Instant::now() + LEASE_TIMEOUT;
        let intent = open(&self.intent_file)?;
        poll_lock(&intent, &self.intent_file, Mode::Exclusive, deadline)?;
        let file = open(&self.lease_file)?;
        poll_lock(&file, &self.lease_file, Mode::Exclusive, deadline)?;
        *self
            .exclusive_holder
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(std::thread::current().id());
        Ok(ExclusiveLease {
            lease: self,
            _intent: intent,
            _file: file,
        })
    }
}

impl Drop for SharedLease {
    fn drop(&mut self) {
        let Some((lease, thread, _file)) = &self.held else {
            return;
        };
        let mut counts = lease
            .shared_by_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(thread) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(thread);
            }
        }
    }
}

impl Drop for ExclusiveLease {
    fn drop(&mut self) {
        *self
            .lease
            .exclusive_holder
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Shared,
    Exclusive,
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(Error::io(path))
}

/// Takes `file`'s lock in `mode`, polling until `deadline`.
fn poll_lock(file: &File, path: &Path, mode: Mode, deadline: Instant) -> Result<()> {
    loop {
        let attempt = match mode {
            Mode::Shared => file.try_lock_shared(),
            Mode::Exclusive => file.try_lock(),
        };
        match attempt {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(POLL)
            }
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Unavailable(format!(
                    "waited {LEASE_TIMEOUT:?} for the {mode:?} lock on {}: another test held the lab's libvirtd",
                    path.display()
                )))
            }
            Err(TryLockError::Error(error)) => return Err(Error::io(path)(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> (tempfile::TempDir, &'static Lease) {
        let dir = tempfile::tempdir().expect("tempdir");
        let lease = Box::leak(Box::new(Lease::new(dir.path())));
        (dir, lease)
    }

    #[test]
    fn an_exclusive_lease_waits_for_guests_and_new_guests_wait_for_it() {
        let (_dir, lease) = lease();
        let guest = lease.shared().expect("shared");
        let (tx, rx) = std::sync::mpsc::channel();
        let restart = std::thread::spawn(move || {
            let exclusive = lease.exclusive().expect("exclusive");
            tx.send(Instant::now()).expect("send");
            std::thread::sleep(Duration::from_millis(300));
            drop(exclusive);
        });
        // The restart waits while the guest exists.
        assert!(rx.recv_timeout(Duration::from_millis(400)).is_err());
        let released = Instant::now();
        drop(guest);
        let got = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("exclusive taken");
        assert!(got >= released);
        // A guest booted meanwhile waits until the restart is over.
        let asked = Instant::now();
        let _late = lease.shared().expect("shared after the restart");
        assert!(
            asked.elapsed() >= Duration::from_millis(150),
            "{:?}",
            asked.elapsed()
        );
        restart.join().expect("restart thread");
    }

    #[test]
    fn a_thread_with_a_guest_boots_another_while_a_restart_waits() {
        let (_dir, lease) = lease();
        let first = lease.shared().expect("first guest");
        let restart = std::thread::spawn(move || drop(lease.exclusive().expect("exclusive")));
        std::thread::sleep(Duration::from_millis(300));
        // The restart now holds the turnstile; this thread's second guest must not
        // queue behind it (the restart waits for the first guest).
        let second = lease.shared().expect("second guest");
        drop((first, second));
        restart.join().expect("restart");
    }

    #[test]
    fn the_exclusive_holder_boots_its_own_guests_without_waiting() {
        let (_dir, lease) = lease();
        let exclusive = lease.exclusive().expect("exclusive");
        let own = lease.shared().expect("own guest");
        assert!(own.held.is_none());
        drop(own);
        drop(exclusive);
        let after = lease.shared().expect("shared");
        assert!(after.held.is_some());
    }
}
