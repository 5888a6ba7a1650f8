//! The two balloon/OOM scenarios, as measured in the lab notes.
//!
//! * [`inflate_then_grow`]: inflate the balloon, then start a hog that grows until
//!   the guest OOM-kills it. With autodeflate the balloon first empties silently.
//! * [`hold_then_inflate`]: a hog holds memory, then the balloon inflates. It stalls
//!   ("Out of puff!") and never OOM-kills by itself; the next ordinary allocation
//!   (a guest-exec) sets the OOM off, usually in an innocent process. With
//!   autodeflate the guest may give the balloon back instead of killing.
//! * [`hold_then_trigger`]: the same hog and trigger with the balloon left where it is
//!   (at maximum): the counterfactual run of [`hold_then_inflate`].

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::guest::{Guest, KILL_LINE};

/// What [`inflate_then_grow`] observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrowOutcome {
    /// `setmem` until `balloon.current` reached the target.
    pub inflate_time: Duration,
    /// Hog start until the `Out of memory: Killed process` line.
    pub hog_to_kill: Duration,
    /// The kill line from the serial log.
    pub kill_line: String,
    /// `balloon.current` (KiB) right after the kill; above the target when autodeflate gave memory back.
    pub balloon_current_after_kib: Option<u64>,
}

/// Inflates to `target_mib`, starts memhog (16 MiB / 100 ms) and waits for its OOM kill.
pub fn inflate_then_grow(
    guest: &Guest,
    target_mib: u64,
    oom_timeout: Duration,
) -> Result<GrowOutcome> {
    let kills_before = guest.serial_count(KILL_LINE);
    let start = Instant::now();
    guest.setmem_mib(target_mib)?;
    guest.wait_balloon_current(target_mib * 1024, 1024, Duration::from_secs(60))?;
    let inflate_time = start.elapsed();
    let hog_start = Instant::now();
    guest.start_hog(16, 100)?;
    let kill_line = guest.wait_serial_count(KILL_LINE, kills_before + 1, oom_timeout)?;
    let hog_to_kill = hog_start.elapsed();
    let balloon_current_after_kib = guest.domstats_balloon()?.get("balloon.current").copied();
    Ok(GrowOutcome {
        inflate_time,
        hog_to_kill,
        kill_line,
        balloon_current_after_kib,
    })
}

/// What [`hold_then_inflate`] observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldOutcome {
    /// `balloon.current` (KiB) where the balloon stopped moving before the trigger.
    pub stalled_at_kib: u64,
    /// The guest logged `Out of puff!` while the balloon was stuck.
    pub out_of_puff: bool,
    /// The kill line, when the trigger led to an OOM kill within the timeout.
    pub kill_line: Option<String>,
    /// `balloon.current` (KiB) at the end.
    pub balloon_current_after_kib: Option<u64>,
}

/// Lets memhog take and hold `hold_mib`, inflates to `target_mib`, waits for the balloon
/// to stall, then runs `/bin/true` through the agent every 2 s until an OOM kill
/// shows up or `oom_timeout` passes.
pub fn hold_then_inflate(
    guest: &Guest,
    hold_mib: u64,
    target_mib: u64,
    oom_timeout: Duration,
) -> Result<HoldOutcome> {
    let kills_before = guest.serial_count(KILL_LINE);
    let holds_before = guest.serial_count("memhog: holding");
    guest.start_hog_holding(16, 50, hold_mib)?;
    guest.wait_serial_count("memhog: holding", holds_before + 1, Duration::from_secs(60))?;
    guest.setmem_mib(target_mib)?;
    let stalled_at_kib = wait_balloon_still(guest, target_mib * 1024, Duration::from_secs(30))?;
    let out_of_puff = guest.serial_text().contains("Out of puff");
    let kill_line = trigger_until_kill(guest, kills_before, oom_timeout);
    let balloon_current_after_kib = guest.domstats_balloon()?.get("balloon.current").copied();
    Ok(HoldOutcome {
        stalled_at_kib,
        out_of_puff,
        kill_line,
        balloon_current_after_kib,
    })
}

/// The counterfactual of [`hold_then_inflate`]: memhog takes and holds `hold_mib`, the
/// balloon is not touched, and `/bin/true` runs through the agent every 2 s for
/// `trigger_for`. Returns the kill line if an OOM kill happened anyway.
pub fn hold_then_trigger(
    guest: &Guest,
    hold_mib: u64,
    trigger_for: Duration,
) -> Result<Option<String>> {
    let kills_before = guest.serial_count(KILL_LINE);
    let holds_before = guest.serial_count("memhog: holding");
    guest.start_hog_holding(16, 50, hold_mib)?;
    guest.wait_serial_count("memhog: holding", holds_before + 1, Duration::from_secs(60))?;
    Ok(trigger_until_kill(guest, kills_before, trigger_for))
}

/// Runs `/bin/true` through the agent every 2 s until a new kill line shows up (its
/// text) or `timeout` passes (None).
fn trigger_until_kill(guest: &Guest, kills_before: usize, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        // The agent may itself be the OOM victim or fail to allocate; that is the point.
        let _ = guest.exec("/bin/true", &[]);
        if let Ok(line) =
            guest.wait_serial_count(KILL_LINE, kills_before + 1, Duration::from_secs(2))
        {
            return Some(line);
        }
    }
    None
}

/// Polls `balloon.current` until it reaches `target_kib` or stays put for 2 s; returns it.
fn wait_balloon_still(guest: &Guest, target_kib: u64, timeout: Duration) -> Result<u64> {
    let start = Instant::now();
    let mut last = None;
    let mut still_since = Instant::now();
    loop {
        let current = guest
            .domstats_balloon()?
            .get("balloon.current")
            .copied()
            .unwrap_or(0);
        if current.abs_diff(target_kib) <= 1024 {
            return Ok(current);
        }
        if last != Some(current) {
            last = Some(current);
            still_since = Instant::now();
        } else if still_since.elapsed() >= Duration::from_secs(2) || start.elapsed() > timeout {
            return Ok(current);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
