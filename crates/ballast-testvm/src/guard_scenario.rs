//! The guard's scenario suite (issue 19 item 4) on Proxmox-style guests
//! ([`ProxmoxGuest`]): pure harness, no agent. A caller runs `ballast-agent` beside it
//! and compares the agent's events with what these functions saw.
//!
//! * [`gradual_hog`]: memhog grows at a steady rate **of guest time** (its `usleep`
//!   runs on the guest's clock, so a TCG guest grows at the same rate per guest
//!   second as a KVM one) until the kernel kills it or it holds its size. Run it
//!   under a balloon inflated with [`inflate`] while the host has memory to give: a
//!   balloon-caused OOM the guard should avert.
//! * [`overcommit`]: the same hog with the balloon at the VM's maximum: the working
//!   set is larger than the VM can ever have, no deflation helps.
//! * controls, which must not look like an emergency: [`steady_working_set`] (a hog
//!   that holds its size), [`page_cache_reads`] (a loop reading the guest's virtio
//!   disk, [`ProxmoxSpec::disk_mib`](crate::ProxmoxSpec::disk_mib), which fills
//!   reclaimable page cache), [`short_spike`] (a fast allocation freed at once, which
//!   fits without memory back);
//! * [`ReinflationLoop`]: a test-side thread that re-sets the QMP balloon target every
//!   period (10 s like Proxmox's pvestatd) until stopped: a host that takes back what
//!   a guard gave.
//!
//! Every run reports the guest seconds it took (`/proc/uptime` before and after), so
//! false alarms in control runs can be scaled per day of guest time, and host
//! wall-clock milliseconds, to line up with the agent's event times.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::proxmox::ProxmoxGuest;
use crate::qmp::Qmp;
use crate::scenario::ANY_KILL_LINE;
use crate::serial;

const MIB: u64 = 1024 * 1024;
/// The progress line memhog prints once it holds its size.
const HOLDING_LINE: &str = "memhog: holding";

/// Host wall-clock time in epoch milliseconds (the agent's event clock).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// memhog's `STEP_MIB DELAY_MS` for a growth of `rate_mib_per_s` MiB per guest second:
/// 4 MiB steps (1 MiB below 4 MiB/s), the delay making up the rate.
pub fn hog_pace(rate_mib_per_s: u64) -> (u64, u64) {
    let rate = rate_mib_per_s.max(1);
    let step = if rate < 4 { 1 } else { 4 };
    (step, step * 1000 / rate)
}

/// The guest's `/proc/uptime` (its own clock: under TCG it runs slower than the host's).
pub fn guest_uptime(guest: &ProxmoxGuest) -> Result<Duration> {
    let output = guest.exec("/bin/cat", &["/proc/uptime"])?;
    output
        .stdout
        .split_whitespace()
        .next()
        .and_then(|secs| secs.parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| Error::Parse {
            what: format!("/proc/uptime of {}", guest.name()),
            detail: output.stdout.clone(),
        })
}

/// The guest's `/proc/meminfo` in KiB by field (`MemAvailable`, `Active(file)`, ...).
pub fn meminfo(guest: &ProxmoxGuest) -> Result<BTreeMap<String, u64>> {
    let output = guest.exec("/bin/cat", &["/proc/meminfo"])?;
    Ok(parse_meminfo(&output.stdout))
}

/// `Field:   123 kB` lines; lines that do not parse are left out.
fn parse_meminfo(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (field, rest) = line.split_once(':')?;
            let kib = rest.split_whitespace().next()?.parse().ok()?;
            Some((field.trim().to_owned(), kib))
        })
        .collect()
}

/// File-backed LRU pages (KiB): `Active(file) + Inactive(file)`, the page cache the
/// kernel can reclaim.
pub fn file_lru_kib(meminfo: &BTreeMap<String, u64>) -> u64 {
    ["Active(file)", "Inactive(file)"]
        .iter()
        .filter_map(|field| meminfo.get(*field))
        .sum()
}

/// OOM kill lines (global or memcg) in the guest's serial log so far.
pub fn kill_count(guest: &ProxmoxGuest) -> usize {
    serial::count_lines(&guest.serial_text(), ANY_KILL_LINE)
}

/// Sets the balloon target to `target_mib` over QMP and waits until `actual` is within
/// 8 MiB of it; returns how long it took.
pub fn inflate(guest: &ProxmoxGuest, target_mib: u64, timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    let mut qmp = guest.qmp()?;
    qmp.balloon_bytes(target_mib * MIB)?;
    loop {
        let actual = qmp.query_balloon_bytes()?;
        if actual.abs_diff(target_mib * MIB) <= 8 * MIB {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            return Err(Error::Timeout {
                what: format!(
                    "balloon of {} to reach {target_mib} MiB (at {} MiB)",
                    guest.name(),
                    actual / MIB
                ),
                timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Between runs on one guest: every hog and reader killed, the balloon back at the
/// VM's maximum (`memory:`).
pub fn reset(guest: &ProxmoxGuest) -> Result<()> {
    // Nothing to kill is fine: the `true` keeps the exit 0.
    shell(
        guest,
        "for p in $(cat /run/scenario.pids 2>/dev/null); do kill -9 $p; done; \
         rm -f /run/scenario.pids; killall -9 memhog dd 2>/dev/null; true",
    )?;
    inflate(guest, guest.spec().memory_mib, Duration::from_secs(120)).map(drop)
}

/// Runs `line` with the guest's `/bin/sh -c`; its stdout, or an error naming it.
fn shell(guest: &ProxmoxGuest, line: &str) -> Result<String> {
    let output = guest.exec("/bin/sh", &["-c", line])?;
    if output.success() {
        Ok(output.stdout)
    } else {
        Err(Error::Agent {
            command: format!("guest-exec /bin/sh -c {line:?}"),
            message: format!("{output:?}"),
        })
    }
}

/// What a hog run ([`gradual_hog`], [`overcommit`]) saw.
#[derive(Debug, Clone, PartialEq)]
pub struct HogRun {
    /// Host wall clock (epoch ms) when memhog was started.
    pub started_at_ms: u64,
    /// Host wall clock (epoch ms) when the harness saw the kill line (polled every
    /// 100 ms): the OOM a guard should have averted.
    pub killed_at_ms: Option<u64>,
    /// The kernel's kill line.
    pub kill_line: Option<String>,
    /// memhog reached its hold size without a kill.
    pub held: bool,
    /// Guest seconds from start to kill, hold or timeout.
    pub guest_secs: f64,
}

/// Starts memhog growing at `rate_mib_per_s` per guest second ([`hog_pace`]), holding
/// at `hold_mib` when given, and waits (host time) up to `timeout` for its kill line,
/// its hold, or the end.
pub fn gradual_hog(
    guest: &ProxmoxGuest,
    rate_mib_per_s: u64,
    hold_mib: Option<u64>,
    timeout: Duration,
) -> Result<HogRun> {
    let kills_before = kill_count(guest);
    let holds_before = serial::count_lines(&guest.serial_text(), HOLDING_LINE);
    let uptime_before = guest_uptime(guest)?;
    let (step, delay) = hog_pace(rate_mib_per_s);
    let hold = hold_mib.map(|mib| format!(" {mib}")).unwrap_or_default();
    let started_at_ms = now_ms();
    shell(
        guest,
        &format!(
            "/bin/memhog {step} {delay}{hold} >/dev/console 2>&1 & echo $! >> /run/scenario.pids"
        ),
    )?;
    let deadline = Instant::now() + timeout;
    let mut run = HogRun {
        started_at_ms,
        killed_at_ms: None,
        kill_line: None,
        held: false,
        guest_secs: 0.0,
    };
    while Instant::now() < deadline {
        let text = guest.serial_text();
        if serial::count_lines(&text, ANY_KILL_LINE) > kills_before {
            run.killed_at_ms = Some(now_ms());
            run.kill_line = text
                .lines()
                .filter(|line| line.contains(ANY_KILL_LINE))
                .nth(kills_before)
                .map(str::to_owned);
            break;
        }
        if serial::count_lines(&text, HOLDING_LINE) > holds_before {
            run.held = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Right after an OOM kill the agent may need a moment to answer again.
    run.guest_secs = guest_uptime_retry(guest)?
        .saturating_sub(uptime_before)
        .as_secs_f64();
    Ok(run)
}

/// [`guest_uptime`] retried for up to 30 s (the guest agent may be busy or just killed).
fn guest_uptime_retry(guest: &ProxmoxGuest) -> Result<Duration> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match guest_uptime(guest) {
            Ok(uptime) => return Ok(uptime),
            Err(error) if Instant::now() > deadline => return Err(error),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// A genuine overcommit: [`gradual_hog`] without a hold, after checking the balloon is
/// at the VM's maximum, so the working set outgrows everything the VM may have.
pub fn overcommit(guest: &ProxmoxGuest, rate_mib_per_s: u64, timeout: Duration) -> Result<HogRun> {
    let actual = guest.qmp()?.query_balloon_bytes()?;
    let maximum = guest.spec().memory_mib * MIB;
    if actual.abs_diff(maximum) > 8 * MIB {
        return Err(Error::Parse {
            what: format!("balloon of {} before an overcommit run", guest.name()),
            detail: format!(
                "{} MiB, not the maximum {} MiB",
                actual / MIB,
                maximum / MIB
            ),
        });
    }
    gradual_hog(guest, rate_mib_per_s, None, timeout)
}

/// What a control run saw: it should end with no kill and no alarm.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlRun {
    pub started_at_ms: u64,
    pub ended_at_ms: u64,
    /// Guest seconds the run lasted.
    pub guest_secs: f64,
    /// OOM kills during the run.
    pub kills: usize,
    /// The largest file-backed LRU ([`file_lru_kib`]) sampled during the run.
    pub file_lru_peak_kib: u64,
    /// The smallest `MemAvailable` sampled during the run.
    pub mem_available_low_kib: Option<u64>,
}

/// Samples meminfo every 2 s (host) until `guest_secs` of guest time passed.
fn observe(
    guest: &ProxmoxGuest,
    guest_secs: Duration,
    kills_before: usize,
    started_at_ms: u64,
    uptime_before: Duration,
) -> Result<ControlRun> {
    let mut run = ControlRun {
        started_at_ms,
        ended_at_ms: started_at_ms,
        guest_secs: 0.0,
        kills: 0,
        file_lru_peak_kib: 0,
        mem_available_low_kib: None,
    };
    loop {
        let info = meminfo(guest)?;
        run.file_lru_peak_kib = run.file_lru_peak_kib.max(file_lru_kib(&info));
        if let Some(available) = info.get("MemAvailable").copied() {
            run.mem_available_low_kib = Some(
                run.mem_available_low_kib
                    .map_or(available, |low| low.min(available)),
            );
        }
        let elapsed = guest_uptime(guest)?.saturating_sub(uptime_before);
        if elapsed >= guest_secs {
            run.guest_secs = elapsed.as_secs_f64();
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    run.ended_at_ms = now_ms();
    run.kills = kill_count(guest).saturating_sub(kills_before);
    Ok(run)
}

/// A steady working set: memhog takes `mib` (16 MiB steps, 50 ms apart), holds it for
/// `guest_secs` of guest time, and is killed.
pub fn steady_working_set(
    guest: &ProxmoxGuest,
    mib: u64,
    guest_secs: Duration,
) -> Result<ControlRun> {
    let kills_before = kill_count(guest);
    let uptime_before = guest_uptime(guest)?;
    let started_at_ms = now_ms();
    shell(
        guest,
        &format!("/bin/memhog 16 50 {mib} >/dev/console 2>&1 & echo $! >> /run/scenario.pids"),
    )?;
    let run = observe(
        guest,
        guest_secs,
        kills_before,
        started_at_ms,
        uptime_before,
    );
    shell(guest, "killall -9 memhog 2>/dev/null; true")?;
    run
}

/// Page-cache-heavy reads: a loop reads the guest's whole virtio disk (`/dev/vda`,
/// which must be larger than the guest's memory for the cache to turn over) again and
/// again for `guest_secs` of guest time. The block device's pages are file-backed LRU
/// pages the kernel reclaims; [`ControlRun::file_lru_peak_kib`] shows how much cache
/// the run really filled.
pub fn page_cache_reads(guest: &ProxmoxGuest, guest_secs: Duration) -> Result<ControlRun> {
    if guest.spec().disk_mib == 0 {
        return Err(Error::Parse {
            what: format!("ProxmoxSpec of {}", guest.name()),
            detail: "page_cache_reads needs a disk (disk_mib > 0)".to_owned(),
        });
    }
    let kills_before = kill_count(guest);
    let uptime_before = guest_uptime(guest)?;
    let started_at_ms = now_ms();
    let pid = shell(
        guest,
        "(while :; do dd if=/dev/vda of=/dev/null bs=1M 2>/dev/null; done) >/dev/null 2>&1 & \
         echo $! >> /run/scenario.pids; echo $!",
    )?;
    let run = observe(
        guest,
        guest_secs,
        kills_before,
        started_at_ms,
        uptime_before,
    );
    shell(
        guest,
        &format!(
            "kill -9 {} 2>/dev/null; killall -9 dd 2>/dev/null; true",
            pid.trim()
        ),
    )?;
    run
}

/// A short spike that needs no memory back: memhog takes `mib` as fast as it can,
/// holds it for `hold_guest_secs` (guest time) and is killed; the run then watches
/// the guest for `after_guest_secs` more.
pub fn short_spike(
    guest: &ProxmoxGuest,
    mib: u64,
    hold_guest_secs: u64,
    after_guest_secs: Duration,
) -> Result<ControlRun> {
    let kills_before = kill_count(guest);
    let uptime_before = guest_uptime(guest)?;
    let started_at_ms = now_ms();
    // `sleep` in the guest counts guest time.
    shell(
        guest,
        &format!(
            "(/bin/memhog 16 0 {mib} >/dev/console 2>&1 & p=$!; sleep {hold_guest_secs}; \
             kill -9 $p) >/dev/null 2>&1 &"
        ),
    )?;
    observe(
        guest,
        Duration::from_secs(hold_guest_secs) + after_guest_secs,
        kills_before,
        started_at_ms,
        uptime_before,
    )
}

/// A pvestatd-like host loop: a thread that sets the QMP balloon target back to
/// `target_mib` every `period` (host time) until [`ReinflationLoop::stop`] or drop.
/// The `balloon:` value (MiB) of a Proxmox VM config file.
pub fn balloon_floor_mib(conf: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(conf)
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("balloon:"))
        .and_then(|value| value.trim().parse().ok())
}

#[derive(Debug)]
pub struct ReinflationLoop {
    stop: Arc<AtomicBool>,
    resets: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl ReinflationLoop {
    /// Starts the loop on the guest's QMP socket; the first re-set comes after one period.
    pub fn start(guest: &ProxmoxGuest, target_mib: u64, period: Duration) -> ReinflationLoop {
        Self::spawn(guest, target_mib, None, period)
    }

    /// Like [`ReinflationLoop::start`], but each round sets the target to the VM's
    /// `balloon:` floor as `floor_file` (its Proxmox config) says then, `target_mib`
    /// while it says none: pvestatd under host pressure shrinks a VM to its floor, so a
    /// floor the guard raised (`qm set --balloon`) holds.
    pub fn following_floor(
        guest: &ProxmoxGuest,
        target_mib: u64,
        floor_file: PathBuf,
        period: Duration,
    ) -> ReinflationLoop {
        Self::spawn(guest, target_mib, Some(floor_file), period)
    }

    fn spawn(
        guest: &ProxmoxGuest,
        target_mib: u64,
        floor_file: Option<PathBuf>,
        period: Duration,
    ) -> ReinflationLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let resets = Arc::new(AtomicU64::new(0));
        let socket: PathBuf = guest.qmp_socket();
        let thread = {
            let stop = Arc::clone(&stop);
            let resets = Arc::clone(&resets);
            std::thread::spawn(move || {
                let mut next = Instant::now() + period;
                while !stop.load(Ordering::Relaxed) {
                    if Instant::now() >= next {
                        next += period;
                        let target = floor_file
                            .as_deref()
                            .and_then(balloon_floor_mib)
                            .unwrap_or(target_mib);
                        // A busy or restarting QEMU misses one round, as pvestatd would.
                        let set = Qmp::connect(&socket)
                            .and_then(|mut qmp| qmp.balloon_bytes(target * MIB));
                        if set.is_ok() {
                            resets.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        ReinflationLoop {
            stop,
            resets,
            thread: Some(thread),
        }
    }

    /// How many times the target was re-set so far.
    pub fn resets(&self) -> u64 {
        self.resets.load(Ordering::Relaxed)
    }

    /// Stops the thread and returns how many times it re-set the target.
    pub fn stop(mut self) -> u64 {
        self.halt();
        self.resets()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ReinflationLoop {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hog_pace_makes_up_the_rate_in_guest_time() {
        assert_eq!(hog_pace(2), (1, 500));
        assert_eq!(hog_pace(4), (4, 1000));
        assert_eq!(hog_pace(16), (4, 250));
        assert_eq!(hog_pace(0), (1, 1000));
    }

    #[test]
    fn meminfo_fields_parse_and_file_pages_add_up() {
        let info = parse_meminfo(
            "MemTotal:         491576 kB\nMemAvailable:     300000 kB\n\
             Active(file):      12000 kB\nInactive(file):    30000 kB\nHugePages_Total:       0\n\
             garbage\n",
        );
        assert_eq!(info.get("MemAvailable"), Some(&300_000));
        assert_eq!(info.get("HugePages_Total"), Some(&0));
        assert_eq!(file_lru_kib(&info), 42_000);
        assert_eq!(info.len(), 5);
    }
}
