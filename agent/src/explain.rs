//! `ballast-agent explain`: read a kernel log, print every OOM report's analysis.
//!
//! The text form leads with the verdict and uses MiB; the JSON form is the
//! contract shape (`{"reports": [...]}`, one object per report with the parsed
//! fields and an `analysis` object; see `ballast_oom::ExplainedReport`).

use std::fmt::Write;
use std::io::Read;

use anyhow::Context;
use ballast_oom::{ExplainedReport, Explanation};

use crate::terminal::{shown, shown_lines};

/// Largest input `explain` reads (a whole kernel log fits; a runaway pipe does not).
pub const MAX_INPUT_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Reads the file, or standard input for `None` and `-`.
pub fn read_input(file: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let mut input = Vec::new();
    match file {
        None | Some("-") => {
            std::io::stdin()
                .lock()
                .take(MAX_INPUT_BYTES)
                .read_to_end(&mut input)
                .context("Failed to read standard input")?;
        }
        Some(path) => {
            let handle =
                std::fs::File::open(path).with_context(|| format!("Failed to open {path}"))?;
            handle
                .take(MAX_INPUT_BYTES)
                .read_to_end(&mut input)
                .with_context(|| format!("Failed to read {path}"))?;
        }
    }
    Ok(input)
}

/// The JSON contract: `{"reports": [...], "diagnostics": [...]}` with a trailing newline.
pub fn render_json(explanation: &Explanation) -> anyhow::Result<String> {
    let mut text = serde_json::to_string_pretty(explanation).context("Failed to encode JSON")?;
    text.push('\n');
    Ok(text)
}

/// Human output: per report the verdict first, then the key figures. Every text the
/// input carried (process names, kernel strings, notes) is shown with terminal
/// controls escaped (`crate::terminal`), and the whole output once more.
pub fn render_text(explanation: &Explanation, source: &str) -> String {
    let out = render_text_unchecked(explanation, &shown(source));
    shown_lines(&out).into_owned()
}

fn render_text_unchecked(explanation: &Explanation, source: &str) -> String {
    let mut out = String::new();
    let count = explanation.reports.len();
    if count == 0 {
        let _ = writeln!(out, "No kernel OOM report found in {source}.");
        if !explanation.diagnostics.is_empty() {
            let _ = writeln!(out, "Notes: {}", notes(explanation));
        }
        return out;
    }
    let _ = writeln!(
        out,
        "{count} OOM report{} in {source}.",
        if count == 1 { "" } else { "s" }
    );
    for (index, explained) in explanation.reports.iter().enumerate() {
        out.push('\n');
        report_text(&mut out, index + 1, explained);
    }
    out
}

fn notes(explanation: &Explanation) -> String {
    explanation
        .diagnostics
        .iter()
        .map(|d| format!("line {}: {}", d.line, shown(&d.message)))
        .collect::<Vec<_>>()
        .join("; ")
}

fn report_text(out: &mut String, number: usize, explained: &ExplainedReport) {
    let report = &explained.report;
    let analysis = &explained.analysis;
    let mib = |kb: Option<u64>| {
        kb.map_or_else(
            || "?".to_string(),
            |kb| format!("{:.0} MiB", kb as f64 / 1024.0),
        )
    };
    let _ = writeln!(
        out,
        "Report {number} (line {}): verdict {}",
        report.span.first_line,
        analysis.verdict.as_str()
    );
    let kind = serde_json::to_value(report.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  kernel {}, {} OOM{}",
        shown(report.kernel.as_deref().unwrap_or("unknown")),
        kind,
        if report.partial {
            ", partial report"
        } else {
            ""
        }
    );
    if let Some(trigger) = &report.trigger {
        let _ = writeln!(
            out,
            "  trigger: {} (pid {}), order {}, gfp_mask {}",
            shown(&trigger.comm),
            trigger
                .pid
                .map_or_else(|| "?".to_string(), |p| p.to_string()),
            trigger
                .order
                .map_or_else(|| "?".to_string(), |o| o.to_string()),
            shown(trigger.gfp_mask.as_deref().unwrap_or("?")),
        );
    }
    if let Some(killed) = &report.killed {
        let _ = writeln!(
            out,
            "  killed:  {} (pid {}), anon-rss {}",
            shown(&killed.comm),
            killed.pid,
            mib(killed.anon_rss_kb)
        );
    }
    if analysis.managed_kb.is_some() || analysis.accounted_kb.is_some() {
        let _ = writeln!(
            out,
            "  memory:  managed {}, reserved {}, accounted {}, unaccounted {}{}",
            mib(analysis.managed_kb),
            mib(analysis.reserved_kb),
            mib(analysis.accounted_kb),
            mib(analysis.unaccounted_kb),
            analysis
                .unaccounted_pct
                .map_or_else(String::new, |pct| format!(" ({pct:.1} %)"))
        );
    }
    if !report.missing.is_empty() {
        let _ = writeln!(out, "  missing: {}", shown(&report.missing.join(", ")));
    }
    let _ = writeln!(out);
    for line in wrap(&shown(&analysis.explanation), 78) {
        let _ = writeln!(out, "  {line}");
    }
}

/// Greedy word wrap for the explanation paragraph.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        if !current.is_empty() && current.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}
