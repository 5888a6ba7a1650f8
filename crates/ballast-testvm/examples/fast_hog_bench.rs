//! Beyond the guard's reach (docs/guard.md "Reach"): the guard suite's fastest hog,
//! 64 MiB per guest second under a balloon inflated to 256 MiB of 512, against the same
//! Proxmox-style guest with and without `deflate-on-oom` on its balloon. No agent runs:
//! this measures what the guest's own kernel does when a hog outruns any poller.
//!
//! `cargo run -p ballast-testvm --example fast_hog_bench [RUNS]` (default 2 runs per
//! kernel and setting); prints one `RUN` line per run: held or killed, guest seconds,
//! the balloon's `actual` before and after.

use std::time::Duration;

use ballast_testvm::guard_scenario as gs;
use ballast_testvm::{GuestKernel, Lab, ProxmoxSpec};

type Error = Box<dyn std::error::Error + Send + Sync>;

const SQUEEZED_MIB: u64 = 256;
const RATE_MIB_PER_S: u64 = 64;
const HOLD_MIB: u64 = 320;

fn main() -> Result<(), Error> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|text| text.parse())
        .transpose()?
        .unwrap_or(2);
    let lab = Lab::get()?;
    for (name, kernel) in [
        ("6.1", GuestKernel::Debian61),
        ("6.12", GuestKernel::Backports612),
    ] {
        for deflate_on_oom in [false, true] {
            let guest = lab.boot_proxmox(ProxmoxSpec {
                vmid: if deflate_on_oom { 171 } else { 170 },
                kernel,
                deflate_on_oom,
                ..ProxmoxSpec::default()
            })?;
            guest.wait_ready(Duration::from_secs(240))?;
            for run in 1..=runs {
                gs::reset(&guest)?;
                gs::inflate(&guest, SQUEEZED_MIB, Duration::from_secs(120))?;
                std::thread::sleep(Duration::from_secs(5));
                let before = guest.qmp()?.query_balloon_bytes()? >> 20;
                let hog = gs::gradual_hog(
                    &guest,
                    RATE_MIB_PER_S,
                    Some(HOLD_MIB),
                    Duration::from_secs(120),
                )?;
                let after = guest.qmp()?.query_balloon_bytes()? >> 20;
                println!(
                    "RUN {name} deflate-on-oom {} run {run}: {} after {:.1} guest s; balloon {before} -> {after} MiB",
                    if deflate_on_oom { "on" } else { "off" },
                    if hog.held { "held" } else if hog.killed_at_ms.is_some() { "killed" } else { "neither" },
                    hog.guest_secs,
                );
            }
        }
    }
    Ok(())
}
