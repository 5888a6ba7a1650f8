//! virtio-mem scenarios (issue 20 item 5) on libvirt and Proxmox-style guests alike
//! ([`VirtioMemGuest`]); pure harness, no agent. A caller runs `ballast-agent` (and
//! the collector) beside them and lines their events up with the host wall-clock
//! milliseconds every run reports.
//!
//! * [`unplug_then_hog`]: with the guest idle, lower `requested-size`, wait until the
//!   guest has unplugged it all (plugged = requested), then start a memhog that holds
//!   `hog_mib`: sized to fit only with the blocks back, the guest OOM-kills it;
//! * [`blocks_back_then_hog`]: its counterfactual re-run: the request back at the
//!   device's maximum, converged, the same hog holds and nothing is killed;
//! * [`stuck_unplug`]: a memhog holds most of the guest's memory, then the request
//!   goes down: the guest unplugs what it can and plugged stops above requested (the
//!   guest's `alloc_contig_range` finds nowhere to move the hog's pages; no OOM kill);
//! * [`resize`]: set the request and wait until it converged or stalled;
//! * [`reset`]: between scenarios on one guest: the request back at the maximum,
//!   converged, then every memhog killed;
//! * the parts, for callers that interleave their own steps: [`hog`], [`kill_hogs`],
//!   [`kill_count`].
//!
//! memhog grows by 16 MiB every 50 ms of guest time and prints `memhog: holding N MiB`
//! when it holds its size; the kill line is the kernel's `Out of memory: Killed process`.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::guard_scenario::now_ms;
use crate::scenario::ANY_KILL_LINE;
use crate::serial;
use crate::virtio_mem::{device, wait_settled, Settled, VirtioMemGuest};

/// The progress line memhog prints once it holds its size.
const HOLDING_LINE: &str = "memhog: holding";
/// How long plugged may stand still (short of requested) before a resize counts as
/// stalled. A resize that works moves plugged at least once a second (QEMU's size-change
/// events are rate-limited to one a second, which libvirt's `<current>` follows), and
/// the guest's driver retries a failed unplug only 50 s later (backing off to 300 s):
/// plugged unchanged for 6 s is stuck, not slow.
pub const STALL_AFTER: Duration = Duration::from_secs(6);
/// How long a resize may keep moving (TCG: ~0.7 s per 256 MiB unplugged, idle guest).
const RESIZE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long memhog may take to hold its size or be killed (TCG under load).
const HOG_TIMEOUT: Duration = Duration::from_secs(90);

/// What [`resize`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResizeRun {
    pub id: String,
    /// `requested-size` (KiB) before the change.
    pub requested_before_kib: u64,
    /// Plugged (KiB) before the change.
    pub plugged_before_kib: u64,
    /// The new `requested-size` (KiB).
    pub requested_kib: u64,
    /// Host wall clock (epoch ms) just before the request was sent.
    pub requested_at_ms: u64,
    /// How it ended: converged (when) or stalled (since when, at what plugged size).
    pub settled: Settled,
    /// From the request to the harness seeing it settle.
    pub took: Duration,
}

/// What a hog of [`unplug_then_hog`] or [`blocks_back_then_hog`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HogRun {
    /// The size memhog was told to hold (MiB).
    pub hog_mib: u64,
    /// Host wall clock (epoch ms) when memhog was started.
    pub started_at_ms: u64,
    /// Host wall clock (epoch ms) when the harness saw the kill line (polled every 100 ms).
    pub killed_at_ms: Option<u64>,
    /// The kernel's kill line (`Out of memory: Killed process N (memhog) ...`).
    pub kill_line: Option<String>,
    /// Host wall clock (epoch ms) when memhog printed that it holds its size.
    pub held_at_ms: Option<u64>,
}

impl HogRun {
    /// memhog held its size and nobody was killed while the run watched.
    pub fn survived(&self) -> bool {
        self.held_at_ms.is_some() && self.kill_line.is_none()
    }
}

/// [`unplug_then_hog`] and [`blocks_back_then_hog`]: the resize, then the hog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResizeHogRun {
    pub resize: ResizeRun,
    pub hog: HogRun,
}

/// What [`stuck_unplug`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StuckRun {
    /// Host wall clock (epoch ms) when memhog held `hold_mib`.
    pub held_at_ms: u64,
    pub hold_mib: u64,
    /// The request going down and where plugged stopped (`settled` is
    /// [`Settled::Stalled`] when the unplug got stuck).
    pub resize: ResizeRun,
    /// OOM kill lines that appeared meanwhile (0 expected: a failed unplug kills nothing).
    pub kills: usize,
}

/// Sets device `id`'s `requested-size` to `requested_kib` and waits until plugged
/// equals it or stands still for `stall_after` ([`wait_settled`]).
pub fn resize<G: VirtioMemGuest + ?Sized>(
    guest: &G,
    id: &str,
    requested_kib: u64,
    stall_after: Duration,
) -> Result<ResizeRun> {
    let before = device(guest, id)?;
    let requested_at_ms = now_ms();
    let start = Instant::now();
    guest.set_virtio_mem_requested_kib(id, requested_kib)?;
    let settled = wait_settled(guest, id, stall_after, RESIZE_TIMEOUT)?;
    Ok(ResizeRun {
        id: id.to_owned(),
        requested_before_kib: before.requested_kib,
        plugged_before_kib: before.plugged_kib,
        requested_kib,
        requested_at_ms,
        settled,
        took: start.elapsed(),
    })
}

/// Like [`resize`], but a stall is an error ([`Error::ResizeStalled`]).
fn resize_converged<G: VirtioMemGuest + ?Sized>(
    guest: &G,
    id: &str,
    requested_kib: u64,
) -> Result<ResizeRun> {
    let run = resize(guest, id, requested_kib, STALL_AFTER)?;
    if let Settled::Stalled { device, .. } = &run.settled {
        return Err(Error::ResizeStalled {
            guest: guest.guest_name().to_owned(),
            id: id.to_owned(),
            plugged_kib: device.plugged_kib,
            requested_kib: device.requested_kib,
        });
    }
    Ok(run)
}

/// Scenario (a): with the guest idle, lowers `id`'s request to `requested_kib`, waits
/// until it converged (a stall is an error), then starts memhog holding `hog_mib`.
/// Returns once the hog is killed, or once it has held for `observe` (running
/// `/bin/true` through the agent every 2 s meanwhile, as a bystander's allocation).
pub fn unplug_then_hog<G: VirtioMemGuest + ?Sized>(
    guest: &G,
    id: &str,
    requested_kib: u64,
    hog_mib: u64,
    observe: Duration,
) -> Result<ResizeHogRun> {
    let resize = resize_converged(guest, id, requested_kib)?;
    let hog = hog(guest, hog_mib, observe)?;
    Ok(ResizeHogRun { resize, hog })
}

/// Scenario (b), the counterfactual of (a): every memhog killed, `id`'s request back
/// at the device's maximum (the unplugged blocks back), converged, then the same hog
/// as [`unplug_then_hog`].
pub fn blocks_back_then_hog<G: VirtioMemGuest + ?Sized>(
    guest: &G,
    id: &str,
    hog_mib: u64,
    observe: Duration,
) -> Result<ResizeHogRun> {
    kill_hogs(guest)?;
    let max_kib = device(guest, id)?.max_size_kib;
    let resize = resize_converged(guest, id, max_kib)?;
    let hog = hog(guest, hog_mib, observe)?;
    Ok(ResizeHogRun { resize, hog })
}

/// Scenario (c): memhog takes and holds `hold_mib`, then `id`'s request goes down to
/// `requested_kib`; waits until plugged converged or stood still for `stall_after`
/// (use [`STALL_AFTER`]). With the hog holding more than fits without the blocks,
/// the guest cannot empty them and the result is [`Settled::Stalled`]. The hog keeps
/// running: call [`reset`] next.
pub fn stuck_unplug<G: VirtioMemGuest + ?Sized>(
    guest: &G,
    id: &str,
    hold_mib: u64,
    requested_kib: u64,
    stall_after: Duration,
) -> Result<StuckRun> {
    let kills_before = kill_count(guest);
    let hog = hog(guest, hold_mib, Duration::ZERO)?;
    let Some(held_at_ms) = hog.held_at_ms.filter(|_| hog.kill_line.is_none()) else {
        return Err(Error::Parse {
            what: format!("memhog holding {hold_mib} MiB in {}", guest.guest_name()),
            detail: format!("killed before the unplug: {:?}", hog.kill_line),
        });
    };
    let resize = resize(guest, id, requested_kib, stall_after)?;
    Ok(StuckRun {
        held_at_ms,
        hold_mib,
        resize,
        kills: kill_count(guest).saturating_sub(kills_before),
    })
}

/// Between scenarios: `id`'s request back at the maximum and converged, then every
/// memhog killed.
///
/// The blocks go back first: after a stalled unplug the guest's kernel zones are full
/// of the hog's pages (the driver migrated them there before it gave up), and the
/// guest agent's own allocation for `killall` would OOM-kill the hog (seen on a 6.12
/// libvirt guest). Plugging needs no allocation in the guest.
pub fn reset<G: VirtioMemGuest + ?Sized>(guest: &G, id: &str) -> Result<ResizeRun> {
    let max_kib = device(guest, id)?.max_size_kib;
    let run = resize_converged(guest, id, max_kib)?;
    kill_hogs(guest)?;
    Ok(run)
}

/// OOM kill lines (global or memcg) in the guest's console so far.
pub fn kill_count<G: VirtioMemGuest + ?Sized>(guest: &G) -> usize {
    serial::count_lines(&guest.console_text(), ANY_KILL_LINE)
}

/// Kills every memhog in the guest.
pub fn kill_hogs<G: VirtioMemGuest + ?Sized>(guest: &G) -> Result<()> {
    // No memhog left is fine: the `true` keeps the exit 0.
    shell(guest, "killall -9 memhog 2>/dev/null; true").map(drop)
}

/// Starts memhog holding `hog_mib` and waits for its kill line or its hold; once it
/// holds, runs `/bin/true` every 2 s for `observe` and watches for a kill. The hog of
/// [`unplug_then_hog`], for a caller that lets time pass between the resize and the hog
/// (say, an agent's polls of the smaller guest).
pub fn hog<G: VirtioMemGuest + ?Sized>(
    guest: &G,
    hog_mib: u64,
    observe: Duration,
) -> Result<HogRun> {
    let kills_before = kill_count(guest);
    let holds_before = serial::count_lines(&guest.console_text(), HOLDING_LINE);
    let started_at_ms = now_ms();
    shell(
        guest,
        &format!("/bin/memhog 16 50 {hog_mib} >/dev/console 2>&1 &"),
    )?;
    let mut run = HogRun {
        hog_mib,
        started_at_ms,
        killed_at_ms: None,
        kill_line: None,
        held_at_ms: None,
    };
    let deadline = Instant::now() + HOG_TIMEOUT;
    let mut observe_until = None;
    let mut next_trigger = Instant::now();
    loop {
        let text = guest.console_text();
        if let Some(line) = text
            .lines()
            .filter(|line| line.contains(ANY_KILL_LINE))
            .nth(kills_before)
        {
            run.killed_at_ms = Some(now_ms());
            run.kill_line = Some(line.trim_end_matches('\r').to_owned());
            return Ok(run);
        }
        if run.held_at_ms.is_none() && serial::count_lines(&text, HOLDING_LINE) > holds_before {
            run.held_at_ms = Some(now_ms());
            observe_until = Some(Instant::now() + observe);
        }
        match observe_until {
            Some(until) if Instant::now() >= until => return Ok(run),
            Some(_) if Instant::now() >= next_trigger => {
                // The agent may fail to allocate, or be the victim: that is the point.
                let _ = guest.guest_exec("/bin/true", &[]);
                next_trigger = Instant::now() + Duration::from_secs(2);
            }
            None if Instant::now() > deadline => {
                return Err(Error::Timeout {
                    what: format!(
                        "memhog of {} to hold {hog_mib} MiB or be killed",
                        guest.guest_name()
                    ),
                    timeout: HOG_TIMEOUT,
                });
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `line` with the guest's `/bin/sh -c`; its stdout, or an error naming it.
fn shell<G: VirtioMemGuest + ?Sized>(guest: &G, line: &str) -> Result<String> {
    let output = guest.guest_exec("/bin/sh", &["-c", line])?;
    if output.success() {
        Ok(output.stdout)
    } else {
        Err(Error::Agent {
            command: format!("guest-exec /bin/sh -c {line:?}"),
            message: format!("{output:?}"),
        })
    }
}
