//! Agent memory at fleet scale: 500 VMs x 1 h of history, then a long leak check.
//!
//! Drives the agent's per-poll state the way the monitor does, with synthetic
//! samples and an accelerated clock (one poll = 10 s of sample time, run back to back):
//! 1. [`Fleet::apply_poll`] with a fresh `Vec<(DomainId, BalloonSample)>` of all VMs
//!    (all 14 balloon figures present, values moving), minute rollups taken and
//!    dropped, [`Fleet::set_config`] for every VM that appeared;
//!    then the risk step and the guard step of every sampled VM
//!    ([`Fleet::observe_pressure`], [`Fleet::decide_guard`] in `observe`: their windows
//!    of 12 points, episodes and guard state), their events dropped;
//! 2. balloon-change events for 2 % of the VMs per poll ([`Fleet::apply_balloon_change`]);
//! 3. serial capture: [`Capture::poll_serial`] for every VM on its own console log
//!    file (a boot log of `--boot-log-bytes` written at setup, then one new line for
//!    `--run-lines-pct` % of the VMs per poll, default 1), state files under a temp dir;
//! 4. `status.json` ([`Status::from_fleet`] + write) after every poll;
//! 5. churn: `--churn` VMs per simulated hour are replaced by new ones (Gone ->
//!    `Capture::forget`, Appeared -> config).
//!
//! Prints VmRSS (/proc/self/status) before anything, after setup, after the first
//! simulated hour (the history rings are full then: `--polls`, default 360 = 1 h at
//! the default 10 s poll), and every `--every` polls of the leak phase that follows
//! (`--leak-polls`, default 10x the ring). The last line is machine-readable
//! (`RESULT ...`). Not included: the libvirt client (see `poll_bench`), the spool
//! and the collector client.
//!
//! ```sh
//! cargo run --release -p ballast-agent --example history_rss
//! cargo run --release -p ballast-agent --example history_rss -- --vms 500 --polls 360 \
//!     --leak-polls 36000 --every 1000 --boot-log-bytes 32768
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ballast_agent::capture::{Capture, CaptureSettings};
use ballast_agent::fleet::{Change, Fleet};
use ballast_agent::hypervisor::{BalloonSample, DomainConfig, DomainId};
use ballast_agent::status::Status;

/// One simulated poll interval.
const POLL_SECS: u64 = 10;

#[derive(Debug)]
struct Args {
    vms: usize,
    polls: u64,
    leak_polls: u64,
    every: u64,
    boot_log_bytes: usize,
    churn_per_hour: usize,
    run_lines_pct: u32,
    capture: bool,
    status: bool,
}

impl Args {
    fn parse() -> Result<Args, Box<dyn std::error::Error>> {
        let mut args = Args {
            vms: 500,
            polls: 360,
            leak_polls: 0,
            every: 1000,
            boot_log_bytes: 32 * 1024,
            churn_per_hour: 10,
            run_lines_pct: 1,
            capture: true,
            status: true,
        };
        let mut leak_polls = None;
        let mut raw = std::env::args().skip(1);
        while let Some(flag) = raw.next() {
            let mut value = || -> Result<u64, Box<dyn std::error::Error>> {
                let text = raw.next().ok_or(format!("{flag} needs a value"))?;
                Ok(text.parse()?)
            };
            match flag.as_str() {
                "--vms" => args.vms = usize::try_from(value()?)?,
                "--polls" => args.polls = value()?,
                "--leak-polls" => leak_polls = Some(value()?),
                "--every" => args.every = value()?.max(1),
                "--boot-log-bytes" => args.boot_log_bytes = usize::try_from(value()?)?,
                "--churn" => args.churn_per_hour = usize::try_from(value()?)?,
                "--run-lines-pct" => args.run_lines_pct = u32::try_from(value()?)?,
                "--no-capture" => args.capture = false,
                "--no-status" => args.status = false,
                other => return Err(format!("unknown argument {other}").into()),
            }
        }
        // Default: 10x the ring (the ring holds one simulated hour).
        args.leak_polls = leak_polls.unwrap_or(args.polls * 10);
        Ok(args)
    }
}

/// One simulated VM.
struct Vm {
    id: DomainId,
    serial_log: PathBuf,
    maximum_kib: u64,
    actual_kib: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse()?;
    let rss_start = rss_kib();
    println!("args: {args:?}");
    println!(
        "phase=start rss_kib={rss_start} rss_anon_kib={}",
        anon_kib()
    );

    let dir = tempfile::tempdir()?;
    let logs_dir = dir.path().join("serial");
    std::fs::create_dir_all(&logs_dir)?;
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(state_dir.join("capture"))?;
    let status_path = state_dir.join("status.json");

    let mut rng = fastrand::Rng::with_seed(4);
    let mut next_vm = 0_u64;
    let mut vms: Vec<Vm> = (0..args.vms)
        .map(|_| new_vm(&mut next_vm, &logs_dir, &mut rng, args.boot_log_bytes))
        .collect::<Result<_, _>>()?;
    let history_capacity = usize::try_from(args.polls)?.max(1);
    let mut fleet = Fleet::new(history_capacity);
    let mut capture = Capture::new(CaptureSettings::new(state_dir.join("capture")));
    println!(
        "phase=setup rss_kib={} vms={} history_capacity={history_capacity}",
        rss_kib(),
        vms.len()
    );

    let base = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let total_polls = args.polls + args.leak_polls;
    let churn_every = if args.churn_per_hour == 0 {
        u64::MAX
    } else {
        (3600 / POLL_SECS / u64::try_from(args.churn_per_hour)?).max(1)
    };
    let started = Instant::now();
    let mut rss_after_hour = 0;
    let mut leak_samples: Vec<(u64, u64)> = Vec::new();
    let guard_settings = ballast_agent::guard::GuardSettings::default();
    let mut guard_host = ballast_agent::guard::HostGuard::default();
    for poll in 1..=total_polls {
        let at = base + Duration::from_secs(poll * POLL_SECS);
        if poll % churn_every == 0 {
            let slot = rng.usize(..vms.len());
            let old = std::mem::replace(
                &mut vms[slot],
                new_vm(&mut next_vm, &logs_dir, &mut rng, args.boot_log_bytes)?,
            );
            std::fs::remove_file(&old.serial_log)?;
        }
        let samples = vms
            .iter_mut()
            .map(|vm| (vm.id.clone(), next_sample(vm, &mut rng, at)))
            .collect();
        for change in fleet.apply_poll(at, samples) {
            match change {
                Change::Appeared(id) => {
                    let serial_log_path = vms
                        .iter()
                        .find(|vm| vm.id.uuid == id.uuid)
                        .map(|vm| vm.serial_log.clone());
                    fleet.set_config(&id, config(serial_log_path));
                }
                Change::Gone(id) => capture.forget(&id.uuid),
                _ => {}
            }
        }
        drop(fleet.observe_pressure(at));
        drop(fleet.decide_guard(at, &guard_settings, &mut guard_host, Some(64 << 20)));
        drop(fleet.take_finished_rollups());
        for vm in &mut vms {
            if rng.u32(..100) < 2 {
                vm.actual_kib = (vm.actual_kib + 64 * 1024).min(vm.maximum_kib);
                let event_at = at + Duration::from_secs(3);
                drop(fleet.apply_balloon_change(&vm.id, event_at, vm.actual_kib));
            }
        }
        if args.capture {
            let now = Instant::now();
            for vm in &vms {
                if rng.u32(..100) < args.run_lines_pct {
                    append_line(&vm.serial_log, poll, &mut rng)?;
                }
                // Events (none expected: no OOM in these logs) are dropped.
                drop(capture.poll_serial(&vm.id, &vm.serial_log, now)?);
            }
            drop(capture.release_held(now));
        }
        if args.status {
            let status = Status::from_fleet(&fleet, "bench-host", "fake", at, 1);
            status.write(&status_path)?;
        }
        if poll == args.polls {
            rss_after_hour = rss_kib();
            let points: usize = fleet.vms().map(|vm| vm.history.len()).sum();
            println!(
                "phase=hour poll={poll} rss_kib={rss_after_hour} rss_anon_kib={} fleet_vms={} \
                 history_points={points} elapsed={:.1?}",
                anon_kib(),
                fleet.len(),
                started.elapsed()
            );
        }
        if poll > args.polls && ((poll - args.polls) % args.every == 0 || poll == total_polls) {
            let rss = rss_kib();
            leak_samples.push((poll, rss));
            println!(
                "phase=leak poll={poll} simulated_h={:.1} rss_kib={rss} rss_anon_kib={} fleet_vms={} \
                 elapsed={:.1?}",
                (poll * POLL_SECS) as f64 / 3600.0,
                anon_kib(),
                fleet.len(),
                started.elapsed()
            );
        }
    }
    let (_, capture_result) = capture.shutdown(Instant::now());
    capture_result?;
    let elapsed = started.elapsed();
    let first = leak_samples.first().map_or(rss_after_hour, |(_, rss)| *rss);
    let last = leak_samples.last().map_or(rss_after_hour, |(_, rss)| *rss);
    let max = leak_samples
        .iter()
        .map(|(_, rss)| *rss)
        .max()
        .unwrap_or(rss_after_hour);
    println!(
        "RESULT vms={} polls_per_hour={} leak_polls={} rss_start_kib={rss_start} \
         rss_after_hour_kib={rss_after_hour} rss_leak_first_kib={first} rss_leak_last_kib={last} \
         rss_leak_max_kib={max} growth_after_hour_kib={} hwm_kib={} ms_per_poll={:.3} \
         vms_replaced={}",
        args.vms,
        args.polls,
        args.leak_polls,
        i128::from(last) - i128::from(rss_after_hour),
        status_kib("VmHWM").unwrap_or(0),
        elapsed.as_secs_f64() * 1000.0 / total_polls.max(1) as f64,
        next_vm.saturating_sub(u64::try_from(args.vms)?),
    );
    Ok(())
}

fn new_vm(
    next_vm: &mut u64,
    logs_dir: &Path,
    rng: &mut fastrand::Rng,
    boot_log_bytes: usize,
) -> Result<Vm, std::io::Error> {
    *next_vm += 1;
    let n = *next_vm;
    let id = DomainId {
        uuid: format!("6b1c0f2e-5a4d-4c3b-8a29-{n:012x}"),
        name: format!("tenant-{:03}-vm-{n:05}", n % 97),
    };
    let serial_log = logs_dir.join(format!("{}.log", id.name));
    let mut boot_log = Vec::with_capacity(boot_log_bytes + 128);
    let mut line = 0_u64;
    while boot_log.len() < boot_log_bytes {
        line += 1;
        writeln!(
            boot_log,
            "[{:5}.{:06}] {}",
            line / 100,
            (line * 7919) % 1_000_000,
            BOOT_LINES[rng.usize(..BOOT_LINES.len())]
        )?;
    }
    std::fs::write(&serial_log, boot_log)?;
    let maximum_kib = 1024 * 1024 * rng.u64(1..=16);
    Ok(Vm {
        id,
        serial_log,
        maximum_kib,
        actual_kib: maximum_kib,
    })
}

/// The next poll's figures: the balloon walks, the guest's memory moves a little.
fn next_sample(vm: &mut Vm, rng: &mut fastrand::Rng, at: SystemTime) -> BalloonSample {
    if rng.u32(..100) < 10 {
        let step = 32 * 1024 * rng.u64(1..=4);
        vm.actual_kib = if rng.bool() {
            vm.actual_kib.saturating_sub(step).max(vm.maximum_kib / 4)
        } else {
            (vm.actual_kib + step).min(vm.maximum_kib)
        };
    }
    let available = vm.actual_kib * 93 / 100;
    let usable = available * rng.u64(20..90) / 100;
    let epoch = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    BalloonSample {
        actual_kib: Some(vm.actual_kib),
        maximum_kib: Some(vm.maximum_kib),
        available_kib: Some(available),
        usable_kib: Some(usable),
        unused_kib: Some(usable * 9 / 10),
        disk_caches_kib: Some(available / 10),
        swap_in_kib: Some(0),
        swap_out_kib: Some(0),
        major_faults: Some(rng.u64(..1000)),
        minor_faults: Some(rng.u64(..10_000_000)),
        hugetlb_allocations: Some(0),
        hugetlb_failures: Some(0),
        rss_kib: Some(vm.actual_kib * 3 / 4),
        last_update_epoch_secs: Some(epoch - rng.u64(..2)),
        virtio_mem: Vec::new(),
    }
}

fn config(serial_log_path: Option<PathBuf>) -> DomainConfig {
    DomainConfig {
        balloon_present: true,
        stats_period_secs: Some(10),
        deflate_on_oom: Some(false),
        free_page_reporting: Some(false),
        serial_log_path,
        guest_agent_channel: true,
        kernel_cmdline: None,
        memory_kib: Some(16 * 1024 * 1024),
        current_memory_kib: Some(16 * 1024 * 1024),
        ..DomainConfig::default()
    }
}

fn append_line(path: &Path, poll: u64, rng: &mut fastrand::Rng) -> Result<(), std::io::Error> {
    let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
    writeln!(
        file,
        "[{:5}.{:06}] {}",
        poll * POLL_SECS,
        rng.u32(..1_000_000),
        RUN_LINES[rng.usize(..RUN_LINES.len())]
    )
}

/// Kernel boot lines of the kind a guest console prints (no OOM report among them).
const BOOT_LINES: [&str; 8] = [
    "Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2",
    "BIOS-e820: [mem 0x0000000000100000-0x000000001ffdffff] usable",
    "ACPI: RSDP 0x00000000000F5270 000014 (v00 BOCHS )",
    "pci 0000:00:03.0: [1af4:1002] type 00 class 0x00ff00",
    "virtio_balloon virtio1: Free page hinting not supported",
    "Memory: 215604K/261624K available (14336K kernel code, 2331K rwdata, 9060K rodata, 2776K init, 18000K bss, 45764K reserved, 0K cma-reserved)",
    "Run /init as init process",
    "systemd[1]: Started systemd-journald.service - Journal Service.",
];

/// Lines a running guest prints now and then.
const RUN_LINES: [&str; 4] = [
    "EXT4-fs (vda1): re-mounted. Quota mode: none.",
    "e1000e: eth0 NIC Link is Up 1000 Mbps Full Duplex, Flow Control: Rx/Tx",
    "audit: type=1400 audit(1795658493.123:42): apparmor=\"STATUS\" operation=\"profile_load\"",
    "TCP: request_sock_TCP: Possible SYN flooding on port 80. Sending cookies.",
];

fn rss_kib() -> u64 {
    status_kib("VmRSS").unwrap_or(0)
}

fn anon_kib() -> u64 {
    status_kib("RssAnon").unwrap_or(0)
}

/// A `kB` line of /proc/self/status (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| {
        line.strip_prefix(field)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
    line.split_whitespace().nth(1)?.parse().ok()
}
