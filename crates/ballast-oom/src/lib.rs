//! Reads Linux kernel OOM-killer reports out of any text and says what happened.
//!
//! This crate is pure: it takes bytes, returns data, does no I/O and never
//! panics on input. It is what `ballast-agent explain` and the agent's capture
//! paths run on guest output, which is hostile by assumption.
//!
//! 1. [`parse`] finds every OOM report in its input (raw dmesg, `dmesg -T`,
//!    syslog, journalctl, `/dev/kmsg` records, pasted or mail-wrapped text) and
//!    returns them as [`Report`]s plus [`Diagnostic`]s for what it skipped.
//! 2. [`analyze`] computes, for one report, the figures a kernel memory expert
//!    would (managed, reserved, accounted and unaccounted memory, watermarks)
//!    and a [`Verdict`] with a plain-language explanation.
//!
//! [`StreamParser`] does the same for an input of any size read in pieces, in
//! bounded memory (`ballast-agent explain FILE`). [`LiveParser`] follows a live log
//! (lines in, reports out as they end, at the caller's stream positions): the
//! agent's serial, guest-agent and host-kernel capture.
//!
//! What it is not: it does not read files or talk to hypervisors; host-side
//! balloon figures come in through [`HostBalloon`] when the caller has them.

mod analysis;
mod builder;
mod decode;
mod envelope;
mod fields;
mod lines;
mod live;
mod prefix;
mod report;
mod scan;
mod stream;
mod unwrap;

pub mod limits;

pub use analysis::{analyze, sample_before_kill_stands, Analysis, HostBalloon, Verdict, ZoneState};
pub use envelope::Envelope;
pub use report::{
    Killed, LogStamp, MemInfo, Memcg, NodeInfo, OomKind, Report, SourceSpan, Task, Trigger, Zone,
};

pub use live::{
    kernel_reports, may_belong_to_report, LiveConfig, LiveLine, LiveParser, LiveReport, Pending,
};
pub use stream::StreamParser;

use serde::Serialize;

/// Everything [`parse`] found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Parsed {
    pub reports: Vec<Report>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Something in the input the parser noticed but could not use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// 1-based physical line number.
    pub line: usize,
    pub message: String,
}

/// One report with its analysis: the shape `ballast-agent explain --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplainedReport {
    #[serde(flatten)]
    pub report: Report,
    pub analysis: Analysis,
}

/// Every report in an input, analyzed offline (no host figures).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Explanation {
    pub reports: Vec<ExplainedReport>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses `input` and analyzes every report in it without host-side figures.
pub fn explain(input: &[u8]) -> Explanation {
    let parsed = parse(input);
    let reports = parsed
        .reports
        .into_iter()
        .map(|report| {
            let analysis = analyze(&report, None);
            ExplainedReport { report, analysis }
        })
        .collect();
    Explanation {
        reports,
        diagnostics: parsed.diagnostics,
    }
}

/// Finds and parses every kernel OOM report in `input`.
///
/// Never fails and never panics: odd input yields fewer reports and more diagnostics.
/// Memory use is bounded per report (see [`limits`]), whatever the input size.
pub fn parse(input: &[u8]) -> Parsed {
    scan::scan(input)
}
