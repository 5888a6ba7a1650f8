//! How fast a guest can write to its kernel console, the emulated UART (ttyS0) vs a
//! virtio console (hvc0), both logged by virtlogd: the figures behind the hostile-guest
//! tests' choice of hvc0 (RELIABILITY.md, "Hostile guests"). Boots one guest of each,
//! one after the other, and prints `CONSOLE <console> <what>: ...` lines: bytes through
//! 64 KiB writes, and 3000 full-length kill lines written three ways (the kernel's
//! printk through /dev/kmsg, one tty write per line from a shell loop, one busybox awk
//! into a pipe to `cat`). Rates are timed in the guest (/proc/uptime).
//!
//! `cargo run -p ballast-testvm --example console_throughput -- [VIRTIO_MIB [UART_MIB]]`
//! (defaults 32 and 1).

use std::time::Duration;

use ballast_testvm::{Console, Guest, GuestSpec, Lab};

const LINES: u32 = 3000;
const TAIL: &str = "(forged) total-vm:1000kB, anon-rss:500kB, file-rss:0kB, shmem-rss:0kB, \
                    UID:0 pgtables:40kB oom_score_adj:0";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|arg| arg.parse::<u64>());
    let virtio_mib = args.next().transpose()?.unwrap_or(32);
    let uart_mib = args.next().transpose()?.unwrap_or(1);
    let lab = Lab::get()?;
    for (console, mib) in [(Console::Virtio, virtio_mib), (Console::Serial, uart_mib)] {
        // printk.devkmsg=on: /dev/kmsg writers are not rate-limited to 10 lines per 5 s.
        let guest = lab.boot(GuestSpec {
            console,
            extra_cmdline: vec!["printk.devkmsg=on".to_owned()],
            ..GuestSpec::default()
        })?;
        guest.wait_ready(Duration::from_secs(240))?;
        measure(&guest, console, mib)?;
    }
    Ok(())
}

fn measure(guest: &Guest, console: Console, mib: u64) -> Result<(), Box<dyn std::error::Error>> {
    let dev = match console {
        Console::Serial => "/dev/ttyS0",
        Console::Virtio => "/dev/hvc0",
    };
    let bytes = format!(
        "dd if=/dev/zero of={dev} bs=65536 count={} 2>/dev/null",
        mib * 16
    );
    let (secs, _) = timed(guest, "bytes", &bytes, dev)?;
    println!(
        "CONSOLE {console:?} bytes: {mib} MiB in {secs:.2} s = {:.2} MiB/s",
        mib as f64 / secs
    );
    let printk = format!(
        "exec 3>/dev/kmsg; i=0; while [ $i -lt {LINES} ]; do i=$((i+1)); \
         echo \"<3>Out of memory: Killed process $((200000+i)) {TAIL}\" >&3; done"
    );
    let per_line = format!(
        "exec 3>{dev}; i=0; while [ $i -lt {LINES} ]; do i=$((i+1)); \
         echo \"[ 1000.$((100000+i))] Out of memory: Killed process $((200000+i)) {TAIL}\" >&3; done"
    );
    let batched = format!(
        "awk 'BEGIN {{ for (n = 1; n <= {LINES}; n++) printf \"[ 1000.%06d] Out of memory: \
         Killed process %d {TAIL}\\n\", n, 200000 + n }}' | cat >{dev}"
    );
    for (what, command) in [
        ("printk", printk),
        ("tty-per-line", per_line),
        ("tty-batched", batched),
    ] {
        let before = guest.logged_lines_containing("(forged)");
        let (secs, _) = timed(guest, what, &command, dev)?;
        let logged = guest
            .logged_lines_containing("(forged)")
            .saturating_sub(before);
        println!(
            "CONSOLE {console:?} kill lines {what}: {LINES} in {secs:.2} s = {:.0}/s ({logged} logged)",
            f64::from(LINES) / secs
        );
    }
    Ok(())
}

/// Runs `command` in the background in the guest; the seconds it took by the guest's
/// clock, read from the console line it prints when done.
fn timed(
    guest: &Guest,
    label: &str,
    command: &str,
    dev: &str,
) -> Result<(f64, String), Box<dyn std::error::Error>> {
    let line = format!(
        "(read a x </proc/uptime; ({command}); read b x </proc/uptime; echo >{dev}; \
         echo MARK-{label} $a $b >{dev}) >/dev/null 2>&1 </dev/null &"
    );
    let output = guest.exec("/bin/sh", &["-c", &line])?;
    if !output.success() {
        return Err(format!("{label}: {output:?}").into());
    }
    let mark = guest.wait_serial(&format!("MARK-{label} "), Duration::from_secs(3600))?;
    let times: Vec<f64> = mark
        .split_whitespace()
        .skip(1)
        .filter_map(|word| word.parse().ok())
        .collect();
    match times[..] {
        [a, b] => Ok(((b - a).max(0.01), mark)),
        _ => Err(format!("{label}: unreadable {mark:?}").into()),
    }
}
