//! Wire types between ballast-agent and ballast-collector. No I/O.
//!
//! 1. The agent captures something (a balloon rollup, an OOM, a near miss) and wraps
//!    it in an [`Envelope`] with an idempotency `key` fixed at capture time.
//! 2. Envelopes travel in a [`Batch`] (JSON, gzip on the wire) to
//!    `POST /api/v1/ingest`; the collector stores each key at most once.
//! 3. The collector validates every field ([`validate()`], [`check_sent_names`]) and
//!    answers with an [`IngestResponse`]; the agent drops what was acknowledged from
//!    its spool.
//!
//! Compatibility rule: [`SCHEMA_VERSION`] grows when fields are added. A collector
//! accepts every schema version up to its own; fields added after version 1 are
//! optional (`#[serde(default)]`), and unknown fields are ignored, so older agents keep
//! working against a newer collector. Removing or renaming a field needs a new
//! endpoint version.
//!
//! Units are in field names (`_kib`, `_kb` as the kernel prints them, `_ms`, `_secs`).
//! Fields marked "guest-reported" come from inside a VM and are untrusted.
//!
//! Example envelope:
//! ```json
//! {"key":"pve1/oom/3f2a.../7.409881/113","captured_at_ms":1795658493123,
//!  "type":"oom","vm":{"uuid":"3f2a...","name":"web1"},"kind":"guest","source":"serial", ...}
//! ```

mod elastic;
mod events;
mod kinds;
mod pressure;
mod report;
mod sent;
mod validate;

pub use elastic::*;
pub use events::*;
pub use kinds::{
    AuditFinding, CorrelationVerdict, ElasticMechanism, EpisodePhase, GuardMode, GuardOutcome,
    HostTookVerdict, NearMissKind, PressureSignal, ReportKind, ReportVerdict, ResizePhase,
    RiskLevel, SignalSource, VmState,
};
pub use pressure::*;
pub use report::*;
pub use sent::check_sent_names;
pub use validate::MAX_NOVA_TEXT_BYTES;
pub use validate::{
    plausible_kib, validate, FieldError, Limits, MAX_EVENTS_PER_S, MAX_EXHAUSTION_SECS,
    MAX_GUARD_DETAIL_BYTES, MAX_KIB_PER_S, MAX_MEMORY_KIB, MAX_PSI_TOTAL_US,
};

/// The version of this schema; see the module docs for the compatibility rule.
pub const SCHEMA_VERSION: u32 = 3;
