//! Kernel kill lines carried inside another program's message: Kubernetes events and
//! node-problem-detector.
//!
//! node-problem-detector's `kernel-monitor` re-logs the kernel's `Killed process` line as
//! an `OOMKilling` event, which reaches users as a `kubectl get events` or `kubectl
//! describe node` table row, as a JSON string (`kubectl get events -o json`, NPD's own
//! JSON, a container log line), as a YAML scalar (`-o yaml`, folded at 80 columns), or in
//! NPD's log (`... Reason:OOMKilling Message:Memory cgroup out of memory: Killed ...`).
//! [`find`] recognises the envelope around the kill line (the `OOMKilling` reason, or a
//! `message` key right before it), undoes its quoting (JSON escapes `\"`, `\n`,
//! `\u003e`; YAML `''` and folded lines) and hands back the kernel's line.
//!
//! Such a report holds only the kill line's figures. It is flagged with its
//! [`Envelope`], and one kill is one report: the scan drops an envelope's report when
//! the kernel's own report of the same kill, or an earlier envelope of it, is in the
//! input ([`kill_key`]).
//!
//! Cost: the text before a kill line is searched back at most [`MAX_LOOKBACK`] bytes and
//! never past the previous anchor, and a kill line that starts inside the value read
//! for the previous one is not read again, so each byte is searched back once and read
//! forward once; a kill line is read for at most [`MAX_KILL_BYTES`].
//!
//! `search` finds the envelope around a kill line, `unquote` undoes its quoting; this
//! module makes the kill-only reports and drops the ones the kernel's report makes moot.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::builder::ReportBuilder;
use crate::fields::{self, KernelLine};
use crate::limits::MAX_RELOGGED_REPORTS;
use crate::lines::LogicalLine;
use crate::report::{Killed, Report};
use crate::scan::Found;

mod search;
mod unquote;

pub(crate) use search::find;
use search::*;
use unquote::*;

/// How far before a kill line its envelope (reason, `message` key) is looked for.
pub(crate) const MAX_LOOKBACK: usize = 1024;
/// The longest kill line read out of an envelope (a real one is under 300 bytes).
pub(crate) const MAX_KILL_BYTES: usize = 1024;
/// Lines a YAML scalar folded over that are joined back.
const MAX_FOLDED_LINES: usize = 8;

/// The message a kill line was read out of, when it was not the kernel's own log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Envelope {
    /// A `kubectl get events` or `kubectl describe node` row with reason `OOMKilling`.
    EventTable,
    /// A JSON string: `kubectl get events -o json`, an Event object, a container log line,
    /// `journalctl -o json`.
    Json,
    /// A YAML scalar (`kubectl get events -o yaml`), its folded lines joined.
    Yaml,
    /// node-problem-detector's own log: `Reason:OOMKilling Message:...`.
    NpdLog,
}

/// A kill line found inside an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Embedded {
    /// The kernel's line, unquoted: `Memory cgroup out of memory: Killed process ...`.
    pub text: Vec<u8>,
    pub envelope: Envelope,
    /// Where the envelope's line starts (or the look-back began).
    pub start: usize,
    /// Where the kill line starts in the input.
    pub kill_start: usize,
    /// Just past the value that held the kill line: its closing quote, or the end of the
    /// last line it used (a folded scalar uses several); at least the stream's cut when
    /// `incomplete`.
    pub end: usize,
    /// Where the value ended in the input: the anchor search goes on from here.
    pub value_end: usize,
    /// The kill line goes on past `complete_until`: a stream must read on first.
    pub incomplete: bool,
}

/// The reports a scan read out of envelopes, kept apart from the kernel's: they go after
/// them, once the whole input showed whether the kernel's own report of the kill is there.
#[derive(Default)]
pub(crate) struct Relogged {
    /// The search back for the next envelope stops here (the last anchor tried).
    floor: usize,
    /// Text before this was read as an envelope's value already: a kill line starting
    /// inside it is not read again (each byte is read forward once).
    read_to: usize,
    pub reports: Vec<Report>,
    /// One per report: `open` when its kill line is still being read (a stream window).
    pub found: Vec<Found>,
    keys: BTreeSet<u64>,
    /// The first envelope whose value runs into the line still being read (a stream
    /// window's cut), reported or not: the next window reads its line again (or the line
    /// of the value before it that ran into its line, and so on).
    pub resume_at: Option<usize>,
    /// Start and end of the last envelope's value, the start that of the first value of
    /// a run in which each began on a line the one before ran into.
    last_value: Option<(usize, usize)>,
}

impl Relogged {
    /// When the kill line at `anchor` (on `line`) sits in an envelope: keeps its report
    /// (unless this scan has one of the same kill) and returns where the anchor search
    /// goes on, past the envelope's value.
    pub fn take(
        &mut self,
        text: &[u8],
        line: &LogicalLine<'_>,
        anchor: usize,
        complete_until: Option<usize>,
    ) -> Option<usize> {
        // A kill line at the anchor is this anchor's; any other anchor (`Out of memory:`
        // with no kill after it, `oom-kill:`) looks on through its line for one, as the
        // scan goes on past the line's end after it.
        let at_anchor = kill_opening(text, anchor);
        let limit = line.end.clamp(anchor, text.len());
        let mut killed_at = match at_anchor {
            Some(killed_at) => killed_at,
            None => anchor + memchr::memmem::find(&text[anchor..limit], KILLED)?,
        };
        let embedded = loop {
            let kill_start = kill_line_start(text, killed_at);
            let floor = self.floor;
            self.floor = self.floor.max(kill_start);
            if let Some(found) = find(text, killed_at, floor, self.read_to, complete_until) {
                // A value that begins on a line the previous value ran into is read only
                // after that one: a stream reads both again from the first one's line.
                let chain_start = match self.last_value {
                    Some((chain_start, end)) if found.start < end => chain_start,
                    _ => found.start,
                };
                self.last_value = Some((chain_start, found.end));
                self.read_to = found.end;
                if found.incomplete {
                    self.resume_at =
                        Some(self.resume_at.map_or(chain_start, |at| at.min(chain_start)));
                }
                if matches!(fields::classify(&found.text), KernelLine::Killed { .. }) {
                    break found;
                }
            }
            if at_anchor.is_some() {
                return None;
            }
            let from = (killed_at + KILLED.len()).min(limit);
            killed_at = from + memchr::memmem::find(&text[from..limit], KILLED)?;
        };
        let next = embedded.value_end.max(anchor + 1);
        let kill_line = LogicalLine::standalone(
            embedded.start,
            embedded.end,
            line.line_no,
            line.prefix,
            &embedded.text,
        );
        let mut builder = ReportBuilder::new(&kill_line);
        builder.feed(&kill_line);
        let mut report = builder.finish();
        report.envelope = Some(embedded.envelope);
        let key = report.killed.as_ref().map(kill_key)?;
        if self.reports.len() < MAX_RELOGGED_REPORTS && self.keys.insert(key) {
            self.reports.push(report);
            self.found.push(Found {
                open: embedded.incomplete,
                used: Vec::new(),
            });
        }
        Some(next)
    }
}

/// `reports` without those whose kill is in `kernel_keys` (the kernel's own report of it
/// is in the input).
pub(crate) fn without_kernel_kills(
    reports: Vec<Report>,
    kernel_keys: &BTreeSet<u64>,
) -> Vec<Report> {
    reports
        .into_iter()
        .filter(|report| {
            report
                .killed
                .as_ref()
                .is_none_or(|killed| !kernel_keys.contains(&kill_key(killed)))
        })
        .collect()
}

/// The kill keys of the kernel's reports.
pub(crate) fn kernel_kill_keys<'a>(reports: impl IntoIterator<Item = &'a Report>) -> BTreeSet<u64> {
    reports
        .into_iter()
        .filter_map(|report| report.killed.as_ref())
        .map(kill_key)
        .collect()
}

/// One kill, whoever logged it: the victim's pid, comm and the sizes the kill line
/// printed. The kernel's report and an event re-logging its line have the same key.
pub(crate) fn kill_key(killed: &Killed) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut add = |bytes: &[u8]| {
        for byte in bytes {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
        hash = (hash ^ 0xff).wrapping_mul(0x0100_0000_01b3);
    };
    add(&killed.pid.to_le_bytes());
    add(killed.comm.as_bytes());
    add(&killed.total_vm_kb.unwrap_or(u64::MAX).to_le_bytes());
    add(&killed.anon_rss_kb.unwrap_or(u64::MAX).to_le_bytes());
    hash
}

/// Bytes searched back and read forward, for tests that count work.
#[cfg(test)]
pub(crate) mod work {
    use std::cell::Cell;

    thread_local! {
        static BYTES: Cell<usize> = const { Cell::new(0) };
    }

    pub fn count(bytes: usize) {
        BYTES.with(|cell| cell.set(cell.get() + bytes));
    }

    /// Bytes looked at since the last call, on this thread.
    pub fn take() -> usize {
        BYTES.with(|cell| cell.replace(0))
    }
}

#[cfg(test)]
mod tests;
