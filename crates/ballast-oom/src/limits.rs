//! Bounds that keep hostile input from costing unbounded memory or time.

/// Longest logical kernel line the parser looks at; the rest of a longer line is skipped.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// A report stops after this many logical lines even if it never ended (a task table
/// has one line per process; 250k covers the largest hosts).
pub const MAX_REPORT_LINES: usize = 250_000;
/// Task-table rows kept per report (the largest by rss); every row is still counted.
pub const MAX_STORED_TASKS: usize = 32;
/// Zone lines kept per report.
pub const MAX_ZONES: usize = 64;
/// Memcg `memory.stat` entries kept per report.
pub const MAX_MEMCG_STATS: usize = 128;
/// Diagnostics kept per parse.
pub const MAX_DIAGNOSTICS: usize = 1_000;
/// Reports returned per parse; the rest are counted in a diagnostic.
pub const MAX_REPORTS: usize = 100_000;
/// Longest process or cgroup name kept (the kernel's comm is 15 bytes; cgroup paths are longer).
pub const MAX_NAME_BYTES: usize = 512;
/// Bytes a [`crate::StreamParser`] scans at a time (a real report is far smaller).
pub const WINDOW_BYTES: usize = 8 * 1024 * 1024;
/// Largest window a [`crate::StreamParser`] grows to for a report that does not end; a
/// report longer than that is returned cut. Bounds a stream's memory, whatever its size.
pub const MAX_WINDOW_BYTES: usize = 32 * 1024 * 1024;
/// Distinct kills read out of Kubernetes events and other envelopes that one parse keeps
/// (each a small kill-line report); further ones are not parsed.
pub const MAX_RELOGGED_REPORTS: usize = 4_096;
/// Reports a [`crate::StreamParser`] builds per window: what one window holds in memory
/// stays small even when a line of forged headers makes a report every few dozen bytes.
pub const WINDOW_REPORTS: usize = 4_096;
