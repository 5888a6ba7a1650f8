//! Scale check: boot N small guests at once and measure what the harness and
//! libvirt do with them. Run through `scripts/lab/scale.sh [N]` (sets
//! BALLAST_LAB_MAX_GUESTS=N); not part of the normal test run.
//!
//! Reports: how many guests reached LAB-READY, boot wall time, QEMU RSS total,
//! one bulk `virsh domstats --balloon` over all guests, `dommemstat` per guest,
//! inflating all to 128 MiB, and hogs -> N OOM kills.

use std::time::{Duration, Instant};

use ballast_testvm::{Guest, GuestSpec, Lab, KILL_LINE};

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> AnyResult<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let lab = Lab::get()?;
    println!(
        "scale: N={n} guests of 256 MiB, 1 vCPU, host MemAvailable {} MiB",
        mem_available_mib()
    );
    let spec = GuestSpec {
        memory_mib: 256,
        current_mib: 256,
        ..GuestSpec::default()
    };
    let _ = lab.image(spec.kernel)?;
    let _ = lab.accel(spec.kernel)?;

    let start = Instant::now();
    let guests = lab.boot_many(vec![spec; n])?;
    let started = start.elapsed();
    let ready: Vec<&Guest> = guests
        .iter()
        .filter(|guest| {
            let left = Duration::from_secs(600).saturating_sub(start.elapsed());
            guest.wait_ready(left).is_ok()
        })
        .collect();
    let all_ready = start.elapsed();
    println!(
        "virsh define+start x{n}: {started:.1?}; ready {}/{n} after {all_ready:.1?}",
        ready.len()
    );

    let names: Vec<&str> = ready.iter().map(|guest| guest.name()).collect();
    std::thread::sleep(Duration::from_secs(3));
    let mut bulk_times = Vec::new();
    let mut rss_total_kib = 0;
    for _ in 0..5 {
        let mut args = vec!["domstats", "--balloon"];
        args.extend(&names);
        let t = Instant::now();
        let out = lab.virsh_run(&args)?;
        bulk_times.push(t.elapsed());
        rss_total_kib = out
            .lines()
            .filter_map(|line| line.trim().strip_prefix("balloon.rss="))
            .filter_map(|value| value.parse::<u64>().ok())
            .sum::<u64>();
    }
    bulk_times.sort();
    println!(
        "bulk `virsh domstats --balloon` over {} guests: min {:.1?} median {:.1?} max {:.1?}",
        names.len(),
        bulk_times[0],
        bulk_times[bulk_times.len() / 2],
        bulk_times[bulk_times.len() - 1]
    );
    let t = Instant::now();
    for name in &names {
        lab.virsh_run(&["dommemstat", name])?;
    }
    println!(
        "`virsh dommemstat` one by one: {:.1?} per guest",
        t.elapsed() / names.len().max(1) as u32
    );
    println!(
        "QEMU RSS total {} MiB ({} MiB per guest); host MemAvailable now {} MiB",
        rss_total_kib / 1024,
        rss_total_kib / 1024 / names.len().max(1) as u64,
        mem_available_mib()
    );

    let t = Instant::now();
    for guest in &ready {
        guest.setmem_mib(128)?;
    }
    for guest in &ready {
        guest.wait_balloon_current(128 * 1024, 1024, Duration::from_secs(120))?;
    }
    println!("inflate all to 128 MiB: {:.1?}", t.elapsed());

    let t = Instant::now();
    for guest in &ready {
        guest.start_hog(16, 100)?;
    }
    let kills = ready
        .iter()
        .filter(|guest| {
            guest
                .wait_serial(KILL_LINE, Duration::from_secs(120))
                .is_ok()
        })
        .count();
    println!(
        "hogs -> {kills}/{} OOM kills: {:.1?}",
        ready.len(),
        t.elapsed()
    );
    println!(
        "load average: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let t = Instant::now();
    drop(guests);
    println!("destroy+undefine all: {:.1?}", t.elapsed());
    Ok(())
}

fn mem_available_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}
