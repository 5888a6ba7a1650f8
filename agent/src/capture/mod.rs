//! Guest OOM capture: finds the guest kernel's OOM reports and balloon near
//! misses, from the outside, and turns each into one event.
//!
//! Sources (one file per job):
//! - [`serial`]: tails the serial console log file virtlogd writes for each
//!   domain (`DomainConfig::serial_log_path`), across rotation (`file.0`, ...)
//!   and truncation, with the read position persisted per domain. Consoles
//!   opened with `virDomainOpenConsole` are exclusive and would steal the
//!   admin's `virsh console`, so this reads files only.
//! - [`guest_agent`]: reads the guest's `/dev/kmsg` through the guest agent's
//!   file API ([`kmsg`]; `dmesg` through `guest-exec` only where the operator
//!   allows it and the guest refuses the file API) when asked, and keeps what is
//!   new by kernel monotonic time stamp.
//!
//! Pure logic, unit-tested without I/O: [`lines`] (bounded line splitting),
//! [`detect`] (window + settled reports), [`dedupe`], [`flood`] (rate limits).
//! [`hub::Capture`] wires them per domain:
//! 1. a report found by either source gets a dedupe identity (domain, killed
//!    pid, kernel time stamp of its first line and of its kill line);
//! 2. one already seen is dropped, unless the new copy is complete and the old
//!    one was partial (a `quiet` console prints only the kill line): then the
//!    complete copy wins, still under the first key;
//! 3. a partial serial report is held for a short while so the guest agent
//!    can complete it ([`hub::SerialPoll::wants_guest_agent`]);
//! 4. a per-domain token bucket bounds what a hostile guest can make us emit;
//!    what it drops is counted on the next event and agent-wide, and the newest
//!    dropped report goes out (with that count) as soon as the bucket refills, so a
//!    flood that stops is still flagged; under a flood a partial report is held
//!    only while the bucket has a token for it.
//!
//! Guest-reported data is untrusted: every line, window, report text and
//! command output is size-bounded, and guest time stamps are never compared
//! with host time (`captured_at` is the host clock at capture).
//!
//! Its vocabulary has files of its own, beneath everything above: `event` (what
//! capture hands out), `settings` ([`CaptureSettings`]), `error` ([`CaptureError`]).
//!
//! What it is not: it does not decide what an OOM means (that is
//! `ballast_oom::analyze`), and it does not send anything anywhere.

pub mod dedupe;
pub mod detect;
mod error;
mod event;
pub mod flood;
pub mod ga_worker;
pub mod guest_agent;
pub mod host_kernel;
pub mod hub;
pub mod kmsg;
pub mod lines;
pub mod serial;
mod settings;
pub mod state;

pub use error::CaptureError;
pub use event::{CaptureEvent, CaptureSource, CapturedOom, NearMiss, NearMissKind};
pub use guest_agent::FetchReason;
pub use hub::{Capture, SerialPoll};
pub use settings::CaptureSettings;
