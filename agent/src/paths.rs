//! Every default path, URI and port of the agent, in one place.

/// Where the agent keeps its spool, capture positions and status file.
pub const STATE_DIR: &str = "/var/lib/ballast";
/// The agent's configuration file.
pub const CONFIG_FILE: &str = "/etc/ballast/agent.yaml";
/// The libvirt connection the agent watches.
pub const LIBVIRT_URI: &str = "qemu:///system";
/// libvirtd's socket: its presence selects the libvirt backend in `backend: auto`.
pub const LIBVIRT_SOCKET: &str = "/run/libvirt/libvirt-sock";
/// Proxmox VE's per-VM sockets and pid files (`<vmid>.qmp`, `.qga`, `.serialN`, `.pid`).
pub const PROXMOX_RUN_DIR: &str = "/var/run/qemu-server";
/// Proxmox VE's VM configurations (`<vmid>.conf`): its presence selects the QMP backend.
pub const PROXMOX_CONFIG_DIR: &str = "/etc/pve/qemu-server";
/// The file the running agent writes its per-VM status to, read by `ballast-agent status`.
pub const STATUS_FILE_NAME: &str = "status.json";
/// Where the host's memory figures are read (overridable for tests).
pub const PROCFS_ROOT: &str = "/proc";
/// The sender's state (delivery held or not, and why), read by `ballast-agent status`.
pub const DELIVERY_FILE_NAME: &str = "delivery.json";
