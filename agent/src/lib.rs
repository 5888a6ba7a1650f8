//! ballast-agent as a library: the pieces the binary wires together.
//!
//! - [`explain`]: offline analysis of pasted OOM reports (`ballast-agent explain`).
//! - [`hypervisor`]: the boundary to libvirt / QEMU; only it links libvirt.

pub mod explain;
pub mod hypervisor;
