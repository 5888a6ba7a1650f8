//! systemd notifications: readiness, reload and stop states, and the watchdog.
//!
//! Everything is a no-op when systemd did not start the agent (`$NOTIFY_SOCKET`
//! unset). The watchdog is on when the unit sets `WatchdogSec=` (systemd passes it as
//! `$WATCHDOG_USEC`): the monitor loop then sends `WATCHDOG=1` at half that interval,
//! from the loop itself, so a monitor thread that hangs stops the pings and systemd
//! restarts the agent.

use std::time::{Duration, Instant};

pub use ballast_daemon::systemd::{notify, NotifyState};

/// Sends `WATCHDOG=1` at most every `every` (half of `$WATCHDOG_USEC`).
#[derive(Debug)]
pub struct Watchdog {
    every: Duration,
    next: Instant,
}

impl Watchdog {
    /// The watchdog systemd asked for in `$WATCHDOG_USEC` (for this process, when
    /// `$WATCHDOG_PID` is set); None when it is off.
    pub fn from_env() -> Option<Self> {
        let timeout = sd_notify::watchdog_enabled()?;
        let every = timeout / 2;
        tracing::info!(
            every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            "systemd watchdog on."
        );
        Some(Self {
            every,
            next: Instant::now(),
        })
    }

    /// Called by the loop the watchdog guards, on every turn: pings when due.
    pub fn tick(&mut self, now: Instant) {
        if now >= self.next {
            notify(&[NotifyState::Watchdog]);
            self.next = now + self.every;
        }
    }
}
