//! Memory pressure per VM (issue 19 items 1 and 2): what the guest's distress looks
//! like from the host before any kill, and the risk read from it.
//!
//! Pure: figures in, [`ballast_model::PressureSnapshot`]s out; the run loop reads the
//! sources (balloon stats every poll, QEMU's `guest-stats` counters where allowed, the
//! guest's `/proc/pressure/memory` through the guest agent's file API) and the fleet
//! keeps one [`signals::SignalTracker`] per VM.
//! - `signals`: rates between two distinct guest reports, the MemAvailable slope.
//! - `psi`: the guest's PSI file, parsed with every byte treated as hostile, and
//!   its read through the guest agent's file API.
//! - `schedule`: when each guest's PSI is read next, with the backoff.
//! - `window`: a compact, bounded ring of a VM's recent snapshots.
//! - `rollup`: a minute's snapshots folded into the rollup's `pressure`.
//! - `risk`: the risk model (`ok | elevated | critical`, drivers, exhaustion, deficit;
//!   docs/risk.md); `episode`: episodes (start, peak, end) with hysteresis and a budget;
//!   `vm_risk`: one VM's risk state, fed with each poll's snapshot.

pub mod episode;
pub mod psi;
pub mod risk;
pub mod rollup;
pub mod schedule;
pub mod signals;
pub mod vm_risk;
pub mod window;

pub use psi::GuestPsi;
pub use schedule::PsiSchedule;
pub use signals::SignalTracker;
pub use window::PressureWindow;
