//! The guard (issue 19 item 3): gives balloon memory back to a guest whose risk is
//! `critical`, within what the host can give, rate-limited and with hysteresis
//! (docs/guard.md).
//! - `decide`: the pure decision, figures and per-VM/per-host state in, a
//!   [`decide::Decision`] out; the run loop carries it out and reports it.

pub mod decide;

pub use decide::{decide, Decision, GuardInput, GuardSettings, HostGuard, VmGuard};
