//! What one VM's balloon poll costs the agent on a Proxmox-style host: a real
//! `ballast-agent run` (Proxmox backend: one QMP conversation per VM per poll) over N
//! Proxmox-style guests, polling every second with the guard off, for a fixed time; its
//! CPU time (`/proc/<pid>/stat` utime + stime) before and after, per VM per poll. The
//! guard's own poll (docs/guard.md "Reach") costs this per VM whose balloon holds memory,
//! every `guard.poll_interval_secs`.
//!
//! `cargo run -p ballast-testvm --example proxmox_poll_cost -- AGENT_BINARY [VMS] [SECS]`
//! (default 4 guests, 120 s).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ballast_testvm::agent_run::AgentRun;
use ballast_testvm::{GuestKernel, Lab, ProxmoxGuest, ProxmoxSpec};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// utime + stime of `pid` in clock ticks (fields 14 and 15 of `/proc/<pid>/stat`).
fn cpu_ticks(pid: u32) -> Result<u64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).ok_or("stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after ")": field 3 is index 0, so utime (14) is index 11 and stime (15) index 12.
    Ok(fields.get(11).ok_or("utime")?.parse::<u64>()?
        + fields.get(12).ok_or("stime")?.parse::<u64>()?)
}

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let binary = PathBuf::from(
        args.next()
            .ok_or("usage: proxmox_poll_cost AGENT_BINARY [VMS] [SECS]")?,
    );
    let vms: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(4);
    let secs: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(120);
    let lab = Lab::get()?;
    let mut guests = Vec::new();
    for n in 0..vms {
        let guest = lab.boot_proxmox(ProxmoxSpec {
            vmid: 180 + n,
            kernel: GuestKernel::Backports612,
            ..ProxmoxSpec::default()
        })?;
        guest.wait_ready(Duration::from_secs(240))?;
        guests.push(guest);
    }
    let refs: Vec<&ProxmoxGuest> = guests.iter().collect();
    // The same agent at two poll intervals: the difference is the polls' own cost
    // (guest PSI reads every 5 s, health and status are in both).
    let mut measured = Vec::new();
    for poll in [1u64, 5] {
        let dir = std::env::temp_dir().join(format!("bpc{}-{poll}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let agent = AgentRun::start(
            &binary,
            &dir,
            &refs,
            &format!("poll_interval_secs: {poll}\nguard:\n  mode: off\n"),
        )?;
        // Let the first polls (configs, memory devices) pass.
        std::thread::sleep(Duration::from_secs(15));
        let start = Instant::now();
        let before = cpu_ticks(agent.pid())?;
        std::thread::sleep(Duration::from_secs(secs));
        let after = cpu_ticks(agent.pid())?;
        let elapsed = start.elapsed().as_secs_f64();
        // USER_HZ is 100 on Linux.
        let cpu_ms = after.saturating_sub(before) as f64 * 10.0;
        println!("RUN poll {poll} s: agent CPU {cpu_ms:.0} ms in {elapsed:.0} s with {vms} VMs");
        measured.push((poll, cpu_ms / elapsed));
        drop(agent);
        let _ = std::fs::remove_dir_all(&dir);
    }
    if let [(_, fast), (_, slow)] = measured[..] {
        // Polls per second per VM: 1 and 1/5.
        let per_vm_poll = (fast - slow) / (f64::from(vms) * (1.0 - 0.2));
        println!(
            "RESULT vms={vms} cpu_ms_per_vm_poll={per_vm_poll:.3} cpu_pct_of_a_core_per_vm_at_2s={:.4}",
            per_vm_poll / 2000.0 * 100.0
        );
    }
    Ok(())
}
