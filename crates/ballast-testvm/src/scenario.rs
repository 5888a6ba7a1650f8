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
//! * [`grow`]: a hog grows (to a size it then holds, or until killed) with the balloon
//!   where it is, then `/bin/true` runs through the agent for a while: inflate first
//!   ([`inflate`]) for the inflate-then-grow verdicts, leave it at maximum for their
//!   counterfactual runs.
//! * [`memcg_grow`]: the same hog inside a cgroup v2 group with `memory.max`.
//! * [`fragment`]: fraghog pins every other page of a run of pipe pages, then asks
//!   for order-2 pipe rings: a fragmentation OOM, where the kernel gives one.
//! * [`reset`]: between scenarios on one guest: hogs killed, balloon back at maximum.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::guest::{Guest, KILL_LINE};

/// Part of every OOM kill line, global (`Out of memory: Killed process`) and memcg
/// (`Memory cgroup out of memory: Killed process`).
pub const ANY_KILL_LINE: &str = "memory: Killed process";

/// The progress line memhog prints once it holds its size.
const HOLDING_LINE: &str = "memhog: holding";

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
    /// The OOM kill came while the balloon inflated, before any trigger: an allocation
    /// elsewhere in the guest found no free page the balloon had not taken (the kernel
    /// may do this instead of stalling the balloon; which one happens is a race).
    pub killed_while_inflating: bool,
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
    let killed_while_inflating = guest.serial_count(KILL_LINE) > kills_before;
    let kill_line = trigger_until_kill(guest, kills_before, oom_timeout);
    let balloon_current_after_kib = guest.domstats_balloon()?.get("balloon.current").copied();
    Ok(HoldOutcome {
        stalled_at_kib,
        out_of_puff,
        killed_while_inflating,
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

/// Kills every memhog and fraghog, sets the balloon back to `maximum_mib` and waits until the
/// guest has it all (generous timeouts: guests share two cores with builds).
pub fn reset(guest: &Guest, maximum_mib: u64) -> Result<()> {
    // No memhog left is fine: killall fails then, the `true` keeps the exit 0.
    // The vm settings [`fragment`] changes go back to their defaults.
    guest.exec(
        "/bin/sh",
        &[
            "-c",
            "killall -9 memhog fraghog 2>/dev/null; \
             echo 1 > /proc/sys/vm/compact_unevictable_allowed; \
             echo 0 > /proc/sys/vm/percpu_pagelist_high_fraction; true",
        ],
    )?;
    guest.setmem_mib(maximum_mib)?;
    guest.wait_balloon_current(maximum_mib * 1024, 1024, Duration::from_secs(120))?;
    Ok(())
}

/// Sets the balloon to `target_mib` and waits until it is there (nothing held, so it
/// does not stall); returns how long it took.
pub fn inflate(guest: &Guest, target_mib: u64) -> Result<Duration> {
    guest.setmem_mib(target_mib)?;
    guest.wait_balloon_current(target_mib * 1024, 1024, Duration::from_secs(120))
}

/// Starts memhog (16 MiB every 100 ms) that holds `hold_mib` (None: grows until
/// killed). Returns the kill line (global or memcg) if a kill follows; once the hog
/// holds its size, `/bin/true` runs through the agent every 2 s for `observe`, as a
/// bystander's allocation, before None.
pub fn grow(guest: &Guest, hold_mib: Option<u64>, observe: Duration) -> Result<Option<String>> {
    let hog = match hold_mib {
        Some(mib) => format!("/bin/memhog 16 100 {mib}"),
        None => "/bin/memhog 16 100".to_owned(),
    };
    run_hog(guest, &format!("{hog} >/dev/console 2>&1 &"), observe)
}

/// The cgroup v2 group [`memcg_grow`] runs its hog in.
pub const MEMCG_GROUP: &str = "/sys/fs/cgroup/ballast-hog";

/// Mounts cgroup2 (once), makes [`MEMCG_GROUP`] with `memory.max` = `limit_mib` MiB
/// and starts memhog in it, holding `hold_mib`; then as [`grow`]. A kill of the group
/// prints `Memory cgroup out of memory: Killed process`.
pub fn memcg_grow(
    guest: &Guest,
    limit_mib: u64,
    hold_mib: u64,
    observe: Duration,
) -> Result<Option<String>> {
    let setup = format!(
        "grep -q ' /sys/fs/cgroup cgroup2 ' /proc/mounts || mount -t cgroup2 none /sys/fs/cgroup; \
         echo +memory > /sys/fs/cgroup/cgroup.subtree_control; \
         mkdir -p {MEMCG_GROUP} && echo {limit_mib}M > {MEMCG_GROUP}/memory.max"
    );
    let output = guest.exec("/bin/sh", &["-c", &setup])?;
    if !output.success() {
        return Err(Error::Agent {
            command: format!("guest-exec /bin/sh -c {setup:?}"),
            message: format!("{output:?}"),
        });
    }
    // The inner shell moves itself into the group, then becomes memhog.
    let line = format!(
        "/bin/sh -c 'echo $$ > {MEMCG_GROUP}/cgroup.procs && exec /bin/memhog 16 100 {hold_mib}' \
         >/dev/console 2>&1 &"
    );
    run_hog(guest, &line, observe)
}

/// Runs `line` (which starts a hog in the background) through the agent's shell and
/// waits for a new kill line (Some) or, once the hog holds, triggers for `observe`.
fn run_hog(guest: &Guest, line: &str, observe: Duration) -> Result<Option<String>> {
    let kills_before = guest.serial_count(ANY_KILL_LINE);
    let holds_before = guest.serial_count(HOLDING_LINE);
    let output = guest.exec("/bin/sh", &["-c", line])?;
    if !output.success() {
        return Err(Error::Agent {
            command: format!("guest-exec /bin/sh -c {line:?}"),
            message: format!("{output:?}"),
        });
    }
    // memhog takes 16 MiB per 100 ms of guest time; TCG under load runs slower.
    let grow_deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if guest.serial_count(ANY_KILL_LINE) > kills_before {
            return guest
                .wait_serial_count(ANY_KILL_LINE, kills_before + 1, Duration::ZERO)
                .map(Some);
        }
        if guest.serial_count(HOLDING_LINE) > holds_before {
            break;
        }
        if Instant::now() > grow_deadline {
            return Err(Error::Timeout {
                what: format!("memhog of {} to hold or be killed", guest.name()),
                timeout: Duration::from_secs(180),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(trigger_until_any_kill(guest, kills_before, observe))
}

/// Like [`trigger_until_kill`], for global and memcg kills alike.
fn trigger_until_any_kill(guest: &Guest, kills_before: usize, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let _ = guest.exec("/bin/true", &[]);
        if let Ok(line) =
            guest.wait_serial_count(ANY_KILL_LINE, kills_before + 1, Duration::from_secs(2))
        {
            return Some(line);
        }
    }
    None
}

/// What fraghog prints when its order-2 requests failed without a kill.
const FRAGHOG_GAVE_UP: &str = "failed without a kill";

/// Runs `/bin/fraghog leave_mib pipe_mib` (guest/fraghog.c) with
/// `vm.compact_unevictable_allowed=0`, so compaction cannot move its locked memory,
/// and `vm.percpu_pagelist_high_fraction` at its most, so freed pages reach the zone's
/// free lists; waits up to `timeout` for a kill line (Some) or fraghog giving up (None).
pub fn fragment(
    guest: &Guest,
    leave_mib: u64,
    pipe_mib: u64,
    timeout: Duration,
) -> Result<Option<String>> {
    let kills_before = guest.serial_count(ANY_KILL_LINE);
    let gave_up_before = guest.serial_count(FRAGHOG_GAVE_UP);
    // Per-CPU free lists as short as the kernel allows: 6.12 otherwise keeps ~30 MiB
    // of the freed pages there, outside the zone's free count.
    let line = format!(
        "echo 0 > /proc/sys/vm/compact_unevictable_allowed; \
         echo 100000 > /proc/sys/vm/percpu_pagelist_high_fraction; \
         /bin/fraghog {leave_mib} {pipe_mib} >/dev/console 2>&1 &"
    );
    let output = guest.exec("/bin/sh", &["-c", &line])?;
    if !output.success() {
        return Err(Error::Agent {
            command: format!("guest-exec /bin/sh -c {line:?}"),
            message: format!("{output:?}"),
        });
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if guest.serial_count(ANY_KILL_LINE) > kills_before {
            return guest
                .wait_serial_count(ANY_KILL_LINE, kills_before + 1, Duration::ZERO)
                .map(Some);
        }
        if guest.serial_count(FRAGHOG_GAVE_UP) > gave_up_before {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(None)
}
