//! The agent's state shared between threads, and its one locking rule.
//!
//! Two pieces of state are shared ([`crate::run::Handles`]): the fleet (written by
//! the monitor thread, read by the `/metrics` handler) and the counters (written by
//! the monitor thread and its spool outlet, read by `/metrics`). What the SIGHUP
//! handler tells the monitor goes through its command channel
//! ([`crate::run::MonitorCommand`]), not a lock.
//!
//! **A thread holds at most one [`SharedLock`] at a time.** Code that needs figures
//! from two of them copies what it needs out under the first lock, releases it, and
//! only then takes the next (`/metrics` clones the counters, then renders under the
//! fleet lock; the monitor's health event reads the fleet's size, then the counters).
//! With no nesting there is no order to get wrong, so no deadlock between the
//! monitor and a scrape is possible. Debug builds (every test) check the rule: a
//! nested `lock()` panics naming both locks.
//!
//! Locks outside this type never wrap one of these: the spool's two locks
//! ([`crate::spool::SpoolHandle`]: held events, then the spool, in that order only)
//! are taken while no shared lock is held, as are the hypervisor backends' own.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A mutex shared between the agent's threads; see the module doc for the rule.
#[derive(Debug)]
pub struct SharedLock<T> {
    name: &'static str,
    inner: Arc<Mutex<T>>,
}

impl<T> Clone for SharedLock<T> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> SharedLock<T> {
    /// `name` appears in the message of a broken rule.
    pub fn new(name: &'static str, value: T) -> Self {
        Self {
            name,
            inner: Arc::new(Mutex::new(value)),
        }
    }

    /// Takes the lock. A panic while it was held leaves plain data behind (counters,
    /// per-VM state), so a poisoned lock is used as it is.
    ///
    /// Debug builds panic when this thread already holds another shared lock.
    pub fn lock(&self) -> SharedGuard<'_, T> {
        #[cfg(debug_assertions)]
        let mark = held::Mark::take(self.name);
        SharedGuard {
            guard: self.inner.lock().unwrap_or_else(PoisonError::into_inner),
            #[cfg(debug_assertions)]
            _mark: mark,
        }
    }
}

/// The guard of a [`SharedLock`]; the lock is released when it is dropped.
pub struct SharedGuard<'a, T> {
    guard: MutexGuard<'a, T>,
    #[cfg(debug_assertions)]
    _mark: held::Mark,
}

impl<T> Deref for SharedGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for SharedGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// Which shared lock this thread holds (debug builds).
#[cfg(debug_assertions)]
mod held {
    use std::cell::Cell;

    thread_local! {
        static HELD: Cell<Option<&'static str>> = const { Cell::new(None) };
    }

    /// Marks a shared lock as held by this thread until dropped.
    pub(super) struct Mark;

    impl Mark {
        pub(super) fn take(name: &'static str) -> Self {
            if let Some(other) = HELD.get() {
                panic!(
                    "shared lock `{name}` taken while `{other}` is held on this thread \
                     (agent/src/shared.rs: one shared lock at a time)"
                );
            }
            HELD.set(Some(name));
            Mark
        }
    }

    impl Drop for Mark {
        fn drop(&mut self) {
            HELD.set(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lock_after_another_is_fine() {
        let fleet = SharedLock::new("fleet", 1_u32);
        let counters = SharedLock::new("counters", 2_u32);
        let first = *fleet.lock();
        let second = *counters.lock();
        *counters.lock() += first;
        assert_eq!((first, second, *counters.lock()), (1, 2, 3));
    }

    #[cfg(debug_assertions)]
    #[test]
    fn a_nested_lock_is_refused_naming_both() {
        let fleet = SharedLock::new("fleet", 1_u32);
        let counters = SharedLock::new("counters", 2_u32);
        let nested = std::thread::spawn(move || {
            let _counters = counters.lock();
            let _fleet = fleet.lock();
        })
        .join();
        let message = nested
            .err()
            .and_then(|panic| panic.downcast::<String>().ok())
            .map(|text| *text)
            .unwrap_or_default();
        assert!(
            message.contains("`fleet` taken while `counters` is held"),
            "{message:?}"
        );
    }
}
