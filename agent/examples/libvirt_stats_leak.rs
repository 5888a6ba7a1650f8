//! Leak check of the libvirt backend's bulk stats call: calls `balloon_samples`
//! (one `virConnectGetAllDomainStats`) N times and prints the process RSS along the way.
//! With `--virt-wrapper` it calls the `virt` crate's `all_domain_stats` instead, which
//! leaks every record (the reason the backend uses raw FFI).
//!
//! ```sh
//! cargo run --release -p ballast-agent --example libvirt_stats_leak -- test:///default 20000
//! cargo run --release -p ballast-agent --example libvirt_stats_leak -- qemu:///system 20000
//! valgrind --leak-check=full target/release/examples/libvirt_stats_leak test:///default 200
//! ```

#[cfg(feature = "libvirt")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use ballast_agent::hypervisor::libvirt::{LibvirtHypervisor, LibvirtSettings};
    use ballast_agent::hypervisor::Hypervisor;

    let mut args = std::env::args().skip(1);
    let uri = args.next().unwrap_or_else(|| "test:///default".to_owned());
    let n_calls: u64 = args.next().map_or(Ok(20_000), |n| n.parse())?;
    let virt_wrapper = args.next().as_deref() == Some("--virt-wrapper");

    let hypervisor = LibvirtHypervisor::new(LibvirtSettings {
        uri: uri.clone(),
        ..LibvirtSettings::default()
    });
    let wrapper_connection = if virt_wrapper {
        Some(virt::connect::Connect::open(Some(&uri))?)
    } else {
        None
    };
    let mut n_records = 0;
    let start = std::time::Instant::now();
    let report_every = (n_calls / 10).max(1);
    for call_idx in 0..=n_calls {
        if call_idx % report_every == 0 {
            println!(
                "calls={call_idx:>7} records/call={n_records} rss_kib={} elapsed={:?}",
                rss_kib().unwrap_or(0),
                start.elapsed()
            );
        }
        if call_idx == n_calls {
            break;
        }
        n_records = match &wrapper_connection {
            Some(connection) => connection
                .all_domain_stats(
                    virt::sys::VIR_DOMAIN_STATS_BALLOON | virt::sys::VIR_DOMAIN_STATS_STATE,
                    0,
                )?
                .len(),
            None => hypervisor.balloon_samples()?.len(),
        };
    }
    println!(
        "{n_calls} calls, {:?} per call",
        start.elapsed() / u32::try_from(n_calls.max(1)).unwrap_or(u32::MAX)
    );
    Ok(())
}

#[cfg(feature = "libvirt")]
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(not(feature = "libvirt"))]
fn main() {
    eprintln!("built without the `libvirt` feature");
}
