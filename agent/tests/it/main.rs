//! The agent's integration tests, one test binary (`cargo test -p ballast-agent --test it`;
//! one module per area: `--test it reload::` runs one). One binary links once and lets
//! libtest run every test in parallel threads; each module keeps to its own temporary
//! directories, loopback ports and lab guests, so they share the process safely.
//!
//! Two tests stay binaries of their own, because they change or measure the whole process:
//! - `tests/allocator.rs` sets glibc's process-wide allocator options and measures the
//!   process's own resident memory, which other tests' allocations would disturb;
//! - `tests/log_spans.rs` installs the global log subscriber and reads everything logged,
//!   which other tests' log lines would join (and a second global subscriber cannot be
//!   installed in the same process).

mod agent_real_vm;
mod capture_real_vm;
mod config_example;
mod delivery;
mod explain_cli;
mod guard_real_vm;
mod guard_scenarios;
mod libvirt_backend;
mod libvirt_startup;
mod pressure_real_vm;
mod proxmox_backend;
mod reload;
mod stats_path_real_vm;
mod status_agent;
mod virtio_mem_online_real_vm;
