//! ballast-agent as a library: the pieces the binary wires together.
//!
//! - [`explain`]: offline analysis of pasted OOM reports (`ballast-agent explain`).
//! - [`hypervisor`]: the boundary to libvirt / QEMU; only it links libvirt.
//! - [`config`]: YAML configuration, checked as a whole at start-up; [`paths`]: defaults.
//! - [`daemon`]: `ballast-agent run` (start-up, signals, reload); [`run`]: its monitor
//!   loop; [`cli`]: the other subcommands.

pub mod allocator;
pub mod audit;
pub mod capture;
pub mod cli;
pub mod collector_tls;
pub mod config;
pub mod daemon;
pub mod elastic;
pub mod enrich;
pub mod explain;
pub mod fleet;
pub mod guard;
pub mod history;
pub mod hostmem;
pub mod hypervisor;
pub mod metrics;
pub mod paths;
pub mod pressure;
pub mod reload;
pub mod run;
pub mod shared;
pub mod sink;
pub mod spool;
pub mod status;
pub mod systemd;
pub mod terminal;
pub mod wire;
