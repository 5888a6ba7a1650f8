//! ballast-testvm: real guests for ballast's tests (test support, not product code).
//!
//! Provides, against real components only:
//! * libvirt guests ([`Lab::boot`] -> [`Guest`]): libvirt 9.0 + QEMU 10, a Debian
//!   kernel (6.1 or 6.12, [`GuestKernel`]) with a busybox initramfs, a virtio balloon
//!   with stats, a serial console logged through virtlogd, a guest agent and a memory
//!   hog; OOM scenarios in [`scenario`];
//! * virtio-mem devices on both kinds of guest ([`VirtioMemSpec`]), read back and
//!   resized through [`virtio_mem`], with the unplug/hog/stuck scenarios in
//!   [`virtio_mem_scenario`];
//! * the guard's scenario suite on Proxmox-style guests in [`guard_scenario`]
//!   (gradual hogs, controls, overcommit, a pvestatd-like re-inflation loop), and a
//!   real `ballast-agent run` over them with its events read back in [`agent_run`];
//! * Proxmox-style guests without libvirt ([`Lab::boot_proxmox`] -> [`ProxmoxGuest`]),
//!   with a minimal blocking QMP client ([`Qmp`]) and guest agent client ([`Qga`]);
//! * the guest image alone, without libvirt ([`build_image`]): what the quickstart
//!   boots with Proxmox's `qm` on a Proxmox VE host.
//!
//! It is not a hypervisor abstraction: it shells out to `virsh` and
//! `qemu-system-x86_64` and only exists to prove agent features on real guests.
//!
//! Lifecycle:
//! 1. `scripts/install-deps.sh` installs the packages (CI runs it from `.ci/run`);
//! 2. [`Lab::get`] (once per process) starts virtlogd/libvirtd if needed and sweeps
//!    leftovers of dead test processes; images build on first boot (~1 s, cached);
//! 3. every resource is named `ballast-test-<pid>-<n>`; dropping a guest destroys,
//!    undefines and deletes its files, panics included.
//!
//! See docs/harness.md for the environment variables and measured timings.

mod accel;
mod agent;
pub mod agent_run;
mod cmd;
mod daemons;
mod domain_xml;
mod error;
pub mod guard_scenario;
mod guest;
mod image;
mod kernel;
mod lab;
mod lease;
mod names;
mod proxmox;
mod pve_conf;
mod qmp;
pub mod scenario;
mod serial;
mod settings;
mod skip;
mod slots;
mod spec;
mod sweep;
mod virsh;
pub mod virtio_mem;
pub mod virtio_mem_scenario;

pub use accel::Accel;
pub use agent::ExecOutput;
pub use error::{Error, Result};
pub use guest::{Guest, GuestStats, INVOKED_LINE, KILL_LINE, READY_LINE};
pub use image::{build_image, GuestImage};
pub use kernel::GuestKernel;
pub use lab::{Lab, LabStartup};
pub use lease::ExclusiveLease;
pub use names::PREFIX as NAME_PREFIX;
pub use proxmox::{ProxmoxGuest, ProxmoxSpec};
pub use qmp::{Qga, Qmp};
pub use settings::{in_ci, AccelChoice, Settings};
pub use skip::lab_or_skip;
pub use spec::{Console, GuestSpec, HostileAgent, VirtioMemOnline, VirtioMemSpec, VIRTIO_MEM_ID};
pub use sweep::SweepReport;
pub use virtio_mem::{VirtioMemGuest, VirtioMemState};
