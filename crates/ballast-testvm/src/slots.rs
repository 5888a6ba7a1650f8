//! A counting semaphore over guests: tests sharing 2 host cores queue for slots.

use std::sync::{Condvar, Mutex};

use crate::error::{Error, Result};

/// At most `max` guests of this process run at once.
#[derive(Debug)]
pub(crate) struct Slots {
    max: usize,
    used: Mutex<usize>,
    freed: Condvar,
}

/// Held by a running guest; returns its slots on drop.
#[derive(Debug)]
pub(crate) struct SlotGuard {
    slots: &'static Slots,
    count: usize,
}

impl Slots {
    pub(crate) fn new(max: usize) -> Slots {
        Slots {
            max,
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
        Ok(SlotGuard { slots: self, count })
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
        })
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if self.count == 0 {
            return;
        }
        let mut used = self.slots.used.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(self.count);
        self.slots.freed.notify_all();
    }
}
