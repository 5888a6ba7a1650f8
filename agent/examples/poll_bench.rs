//! Agent poll benchmark: what the monitor does every poll, timed.
//!
//! Each poll is [`LibvirtHypervisor::balloon_samples`] (ONE
//! `virConnectGetAllDomainStats(BALLOON, ACTIVE | NOWAIT)`, records copied out and
//! mapped to `BalloonSample`s) followed by [`Fleet::apply_poll`] (history ring,
//! staleness, pressure checks, minute rollups, which are taken and dropped as the
//! monitor hands them to the sink). One warm-up poll (connection, event loop,
//! every VM "appears" and has its configuration read) is not counted. A domain with a
//! virtio-mem device costs one more call per poll, its live XML
//! (`virtio_mem_domains=` in the result line says how many there were).
//!
//! Prints per-poll wall time, per-poll CPU time (`getrusage(RUSAGE_SELF)` user+sys
//! over the timed polls / POLLS, all threads of the process, libvirt's event-loop
//! thread included) and the process RSS (`VmRSS` of /proc/self/status) after the
//! last poll. The last line is machine-readable (`RESULT ...`), the same shape as
//! the python3-libvirt baseline `scripts/bench/libvirt_poll.py`; the two are run
//! side by side by `scripts/bench-agent.sh` (figures in BENCHMARKS.md, "Agent polling").
//!
//! ```sh
//! cargo run --release -p ballast-agent --example poll_bench -- qemu:///system 200
//! cargo run --release -p ballast-agent --example poll_bench -- test:///default 10000 360
//! valgrind --tool=callgrind target/release/examples/poll_bench qemu:///system 50
//! ```
//! Arguments: URI (default `qemu:///system`), POLLS (default 100), history ring
//! capacity in samples (default 360: 1 h at the default 10 s poll).

#[cfg(feature = "libvirt")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use std::time::{Instant, SystemTime};

    use ballast_agent::fleet::Fleet;
    use ballast_agent::hypervisor::libvirt::{LibvirtHypervisor, LibvirtSettings};
    use ballast_agent::hypervisor::Hypervisor;

    let mut args = std::env::args().skip(1);
    let uri = args.next().unwrap_or_else(|| "qemu:///system".to_owned());
    let polls: u32 = args.next().map_or(Ok(100), |n| n.parse())?;
    let history_capacity: usize = args.next().map_or(Ok(360), |n| n.parse())?;
    if polls == 0 {
        return Err("POLLS must be at least 1".into());
    }

    let hypervisor = LibvirtHypervisor::new(LibvirtSettings {
        uri,
        ..LibvirtSettings::default()
    });
    let mut fleet = Fleet::new(history_capacity);

    // Warm-up: connects, starts libvirt's event loop, every VM appears in the fleet
    // and its configuration is read, as the monitor does when a VM appears (a domain
    // with a virtio-mem device then has its live XML read at every poll).
    let samples = hypervisor.balloon_samples()?;
    let mut n_virtio_mem = 0;
    for (id, _) in &samples {
        if hypervisor
            .domain_config(id)
            .is_ok_and(|config| !config.virtio_mem.is_empty())
        {
            n_virtio_mem += 1;
        }
    }
    let mut min_domains = samples.len();
    let mut max_domains = samples.len();
    let n_fields: usize = samples
        .iter()
        .map(|(_, sample)| present_fields(sample))
        .sum();
    drop(fleet.apply_poll(SystemTime::now(), samples));
    drop(fleet.take_finished_rollups());

    let cpu_start = cpu_time()?;
    let wall_start = Instant::now();
    for _ in 0..polls {
        let at = SystemTime::now();
        let samples = hypervisor.balloon_samples()?;
        min_domains = min_domains.min(samples.len());
        max_domains = max_domains.max(samples.len());
        let changes = fleet.apply_poll(at, samples);
        drop(changes);
        drop(fleet.take_finished_rollups());
    }
    let wall = wall_start.elapsed();
    let cpu = cpu_time()?.saturating_sub(cpu_start);

    let per_poll_ms =
        |duration: std::time::Duration| duration.as_secs_f64() * 1000.0 / f64::from(polls);
    println!(
        "RESULT impl=agent polls={polls} domains={min_domains}..{max_domains} \
         fields_first_poll={n_fields} virtio_mem_domains={n_virtio_mem} cpu_ms_per_poll={:.3} wall_ms_per_poll={:.3} \
         rss_kib={} rss_anon_kib={} hwm_kib={} fleet_vms={} history_capacity={history_capacity}",
        per_poll_ms(cpu),
        per_poll_ms(wall),
        status_kib("VmRSS").unwrap_or(0),
        status_kib("RssAnon").unwrap_or(0),
        status_kib("VmHWM").unwrap_or(0),
        fleet.len(),
    );
    Ok(())
}

/// How many of a sample's figures libvirt reported (for comparing record sizes).
#[cfg(feature = "libvirt")]
fn present_fields(sample: &ballast_agent::hypervisor::BalloonSample) -> usize {
    [
        sample.actual_kib,
        sample.maximum_kib,
        sample.available_kib,
        sample.usable_kib,
        sample.unused_kib,
        sample.disk_caches_kib,
        sample.swap_in_kib,
        sample.swap_out_kib,
        sample.major_faults,
        sample.minor_faults,
        sample.hugetlb_allocations,
        sample.hugetlb_failures,
        sample.rss_kib,
        sample.last_update_epoch_secs,
    ]
    .iter()
    .filter(|value| value.is_some())
    .count()
}

/// A `kB` line of /proc/self/status (`VmRSS`, `VmHWM`).
#[cfg(feature = "libvirt")]
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| {
        line.strip_prefix(field)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU time of the whole process, `getrusage(RUSAGE_SELF)`.
///
/// The agent has no `libc` dependency (and this example may add none), so the one
/// call is declared here; `struct rusage` is two `timeval`s and 14 `long`s on
/// 64-bit Linux.
#[cfg(feature = "libvirt")]
#[allow(unsafe_code)]
fn cpu_time() -> Result<std::time::Duration, std::io::Error> {
    use std::ffi::{c_int, c_long};

    #[repr(C)]
    #[derive(Default)]
    struct Timeval {
        tv_sec: c_long,
        tv_usec: c_long,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Rusage {
        ru_utime: Timeval,
        ru_stime: Timeval,
        ru_rest: [c_long; 14],
    }
    extern "C" {
        fn getrusage(who: c_int, usage: *mut Rusage) -> c_int;
    }
    const RUSAGE_SELF: c_int = 0;

    let mut usage = Rusage::default();
    // SAFETY: `usage` is a valid, writable `struct rusage` (same layout as glibc's on
    // 64-bit Linux) that outlives the call; getrusage only writes into it.
    if unsafe { getrusage(RUSAGE_SELF, &mut usage) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let micros = |tv: &Timeval| {
        u64::try_from(tv.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(tv.tv_usec).unwrap_or(0)
    };
    Ok(std::time::Duration::from_micros(
        micros(&usage.ru_utime) + micros(&usage.ru_stime),
    ))
}

#[cfg(not(feature = "libvirt"))]
fn main() {
    eprintln!("built without the `libvirt` feature");
}
