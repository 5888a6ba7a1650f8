//! The agent's main loop: poll, capture, enrich, emit.
//!
//! One monitor thread does the blocking work in ticks of at most a second:
//! 1. every poll interval: one bulk balloon poll of all VMs
//!    ([`crate::fleet::Fleet::apply_poll`]), the configuration of VMs that appeared,
//!    QEMU's counters when enabled, minute rollups, the status file;
//! 2. commands from outside ([`MonitorCommand`]: reload, stop), also while it sleeps;
//! 3. hypervisor events (balloon changes, lifecycle) as they arrive;
//! 4. every tick: the serial console logs of all VMs, guest-agent reads of the guest
//!    kernel log (`capture.guest_agent`: never when `off`; after a suspicion — usable
//!    memory collapsed, the oom-kill counter, a partial serial report — when
//!    `on_suspicion`; also every `guest_agent_interval_secs` when `periodic`; handed
//!    to the guest agent threads of [`crate::capture::ga_worker::GuestAgentWorker`],
//!    their results taken back the next ticks: a guest agent that does not answer
//!    never holds this thread), held partial reports, the host kernel log;
//! 5. every captured OOM is analyzed with the host's balloon figures
//!    ([`crate::enrich`]) and handed to the [`EventOutlet`] with its idempotency key.
//!
//! One VM's failure never stops the others: per-VM errors are logged (rate-limited),
//! counted and skipped.
//!
//! Files, one step each: `monitor` (state, loop, poll), `command` (what the loop is
//! told), `changes` (hypervisor events, fleet changes), `capture_tick` (serial and
//! guest agent scheduling), `host_kernel`, `emit` (wire events and keys), `outlet`
//! (where events go), `handles` (state shared with `/metrics`), `log_limit`.

mod capture_tick;
mod changes;
mod command;
#[cfg(test)]
mod elastic_tests;
mod emit;
mod floor_job;
mod guard_tick;
mod handles;
mod host_kernel;
mod log_limit;
mod monitor;
mod outlet;
mod pressure_tick;
#[cfg(test)]
mod tests;

pub use self::command::{MonitorCommand, MonitorCommands};
pub use self::handles::Handles;
pub use self::monitor::{Monitor, STALL_ENV};
pub use self::outlet::{EventOutlet, JsonLinesOutlet, SpoolOutlet};
