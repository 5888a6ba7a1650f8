//! The quickstart's demo VM: boots one tiny guest (512 MiB, balloon stats every 2 s),
//! waits for the agent to have seen it, inflates its balloon to 200 MiB and runs a
//! memory hog in it, so the guest kernel OOM-kills the hog: the balloon-induced OOM
//! ballast exists to explain. The guest stays up until this program's standard input
//! closes (or Ctrl-C), then it is destroyed.
//!
//! `cargo run -p ballast-testvm --example demo_guest -- [SECONDS_BEFORE_INFLATING [NAME_FILE]]`
//! (NAME_FILE receives the guest's libvirt name once it is up).

use std::io::Read;
use std::time::Duration;

use ballast_testvm::{scenario, GuestSpec, Lab};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let wait_secs: u64 = std::env::args()
        .nth(1)
        .map(|arg| arg.parse())
        .transpose()?
        .unwrap_or(10);
    let lab = Lab::get()?;
    let guest = lab.boot(GuestSpec {
        memory_mib: 512,
        current_mib: 512,
        stats_period_secs: 2,
        ..GuestSpec::default()
    })?;
    guest.wait_ready(Duration::from_secs(180))?;
    if let Some(name_file) = std::env::args().nth(2) {
        std::fs::write(name_file, guest.name())?;
    }
    println!(
        "demo: guest {} is up (512 MiB); the agent samples its balloon",
        guest.name()
    );
    std::thread::sleep(Duration::from_secs(wait_secs));
    println!("demo: inflating the balloon to 200 MiB, then starting a memory hog");
    let outcome = scenario::inflate_then_grow(&guest, 200, Duration::from_secs(120))?;
    println!(
        "demo: the guest kernel killed the hog: {}",
        outcome.kill_line.trim()
    );
    println!("demo: DEMO-OOM-DONE");
    // Keep the guest until our caller lets go.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    println!("demo: destroying guest {}", guest.name());
    Ok(())
}
