//! The virtio-mem figures of docs/harness.md: boot time with and without a virtio-mem
//! device, and how long plugging and unplugging takes under TCG, on libvirt and on
//! Proxmox-style QEMU, for both guest kernels. One guest at a time (384 MiB boot
//! memory; the device 512 MiB, plugged at boot, onlined movable), idle.
//!
//! `cargo run -p ballast-testvm --example virtio_mem_figures [ROUNDS]` (default 1)
//! prints one line per guest:
//! `backend kernel device ready_s plug_at_boot_s unplug512_s plug512_s unplug256_s plug256_s`
//! (the resize times from the request to the host seeing plugged = requested: QMP
//! `query-memory-devices` on Proxmox-style guests, `<current>` of `virsh dumpxml` on
//! libvirt, which follows QEMU's rate-limited size-change events).

use std::time::{Duration, Instant};

use ballast_testvm::virtio_mem::wait_settled;
use ballast_testvm::virtio_mem_scenario::{resize, STALL_AFTER};
use ballast_testvm::{
    GuestKernel, GuestSpec, Lab, ProxmoxSpec, VirtioMemGuest, VirtioMemSpec, VIRTIO_MEM_ID,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

const BOOT_MIB: u64 = 384;
const DEVICE_MIB: u64 = 512;
const TIMEOUT: Duration = Duration::from_secs(180);

fn main() -> Result<(), Error> {
    let rounds: u32 = std::env::args()
        .nth(1)
        .map(|arg| arg.parse())
        .transpose()?
        .unwrap_or(1);
    let lab = Lab::get()?;
    let device = VirtioMemSpec {
        max_mib: DEVICE_MIB,
        requested_mib: DEVICE_MIB,
        ..VirtioMemSpec::default()
    };
    println!(
        "backend kernel device ready_s plug_at_boot_s unplug512_s plug512_s unplug256_s plug256_s"
    );
    for _ in 0..rounds {
        for kernel in [GuestKernel::Debian61, GuestKernel::Backports612] {
            for virtio_mem in [None, Some(device)] {
                let guest = lab.boot(GuestSpec {
                    memory_mib: BOOT_MIB,
                    current_mib: BOOT_MIB,
                    kernel,
                    virtio_mem,
                    ..GuestSpec::default()
                })?;
                let ready = guest.wait_ready(TIMEOUT)?;
                report("libvirt", kernel, &guest, ready, virtio_mem.is_some())?;
                drop(guest);
                let guest = lab.boot_proxmox(ProxmoxSpec {
                    vmid: 141,
                    memory_mib: BOOT_MIB,
                    balloon_min_mib: BOOT_MIB,
                    kernel,
                    virtio_mem,
                    ..ProxmoxSpec::default()
                })?;
                let ready = guest.wait_ready(TIMEOUT)?;
                report("proxmox", kernel, &guest, ready, virtio_mem.is_some())?;
            }
        }
    }
    Ok(())
}

/// Prints the guest's line; with a device, resizes it 512 -> 0 -> 512 -> 256 -> 512 MiB.
fn report<G: VirtioMemGuest>(
    backend: &str,
    kernel: GuestKernel,
    guest: &G,
    ready: Duration,
    device: bool,
) -> Result<(), Error> {
    let mut line = format!(
        "{backend} {kernel:?} {} {:.1}",
        if device { "virtio-mem" } else { "none" },
        ready.as_secs_f64()
    );
    if device {
        let start = Instant::now();
        let boot = wait_settled(guest, VIRTIO_MEM_ID, STALL_AFTER, TIMEOUT)?;
        if !boot.converged() {
            return Err(format!("boot plug stalled: {boot:?}").into());
        }
        line.push_str(&format!(" {:.2}", start.elapsed().as_secs_f64()));
        for mib in [0, DEVICE_MIB, DEVICE_MIB / 2, DEVICE_MIB] {
            let run = resize(guest, VIRTIO_MEM_ID, mib * 1024, STALL_AFTER)?;
            if !run.settled.converged() {
                return Err(format!("resize to {mib} MiB stalled: {run:?}").into());
            }
            line.push_str(&format!(" {:.2}", run.took.as_secs_f64()));
        }
    }
    println!("{line}");
    Ok(())
}
