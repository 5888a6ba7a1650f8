//! `ballast-agent explain`: read a kernel log, print every OOM report's analysis.
//!
//! The text form leads with the verdict and uses MiB; the JSON form is the
//! contract shape (`{"reports": [...]}`, one object per report with the parsed
//! fields and an `analysis` object; see `ballast_oom::ExplainedReport`).

use std::fmt::Write as _;
use std::io::{Read, Write};

use anyhow::Context;
use ballast_oom::{Diagnostic, ExplainedReport, Explanation, StreamParser};

use crate::terminal::{shown, shown_lines};

/// Largest input `explain` reads (a whole kernel log fits; a runaway pipe does not).
pub const MAX_INPUT_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Opens the file, or standard input for `None` and `-`, limited to [`MAX_INPUT_BYTES`].
pub fn open_input(file: Option<&str>) -> anyhow::Result<Box<dyn Read>> {
    match file {
        None | Some("-") => Ok(Box::new(std::io::stdin().take(MAX_INPUT_BYTES))),
        Some(path) => {
            let handle =
                std::fs::File::open(path).with_context(|| format!("Failed to open {path}"))?;
            Ok(Box::new(handle.take(MAX_INPUT_BYTES)))
        }
    }
}

/// Why [`explain_to`] stopped: the input could not be read, or the output not written.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("Failed to read {source_name}: {error}")]
    Read {
        source_name: String,
        error: std::io::Error,
    },
    #[error("Failed to write the output: {0}")]
    Write(#[source] anyhow::Error),
}

/// Streams `input` through [`StreamParser`] and analyzes each report as it completes:
/// memory stays bounded whatever the input's size (the parser's window plus the
/// reports found). `each` gets every report in input order; the diagnostics come back.
pub fn explain_stream(
    input: &mut dyn Read,
    source_name: &str,
    mut each: impl FnMut(ExplainedReport) -> anyhow::Result<()>,
) -> Result<Vec<Diagnostic>, ExplainError> {
    let mut parser = StreamParser::new();
    let mut analyze = |reports: Vec<ballast_oom::Report>| -> Result<(), ExplainError> {
        for report in reports {
            let analysis = ballast_oom::analyze(&report, None);
            each(ExplainedReport { report, analysis }).map_err(ExplainError::Write)?;
        }
        Ok(())
    };
    loop {
        let read = match input.read(parser.spare()) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                return Err(ExplainError::Read {
                    source_name: match source_name {
                        "-" => "standard input".to_string(),
                        name => name.to_string(),
                    },
                    error,
                })
            }
        };
        analyze(parser.filled(read))?;
    }
    while let Some(reports) = parser.end_batch() {
        analyze(reports)?;
    }
    Ok(parser.diagnostics())
}

/// Writes `explain`'s output for `input` to `out`: JSON is written report by report as
/// the input is read (the same bytes as [`render_json`]); text needs the count first,
/// so it keeps each report's rendered text (bounded by `ballast_oom::limits::MAX_REPORTS`;
/// the same bytes as [`render_text`]).
pub fn explain_to(
    input: &mut dyn Read,
    source_name: &str,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), ExplainError> {
    if json {
        let mut count = 0usize;
        out.write_all(b"{\n  \"reports\": [")
            .map_err(|error| ExplainError::Write(error.into()))?;
        let diagnostics = explain_stream(input, source_name, |explained| {
            let text = serde_json::to_string_pretty(&explained).context("Failed to encode JSON")?;
            out.write_all(if count == 0 { b"\n" } else { b",\n" })?;
            write_indented(out, &text, "    ", true)?;
            count += 1;
            Ok(())
        })?;
        let write_end = |out: &mut dyn Write| -> anyhow::Result<()> {
            out.write_all(if count == 0 { b"]" } else { b"\n  ]" })?;
            out.write_all(b",\n  \"diagnostics\": ")?;
            let text =
                serde_json::to_string_pretty(&diagnostics).context("Failed to encode JSON")?;
            write_indented(out, &text, "  ", false)?;
            out.write_all(b"\n}\n")?;
            out.flush()?;
            Ok(())
        };
        write_end(out).map_err(ExplainError::Write)
    } else {
        // Each report is rendered as it comes: what is kept is its text, not the report.
        let mut texts = Vec::new();
        let diagnostics = explain_stream(input, source_name, |explained| {
            let mut text = String::from("\n");
            report_text(&mut text, texts.len() + 1, &explained);
            texts.push(shown_lines(&text).into_owned());
            Ok(())
        })?;
        let head = if texts.is_empty() {
            let explanation = Explanation {
                reports: Vec::new(),
                diagnostics,
            };
            render_text(&explanation, source_name)
        } else {
            let count = texts.len();
            let line = format!(
                "{count} OOM report{} in {}.\n",
                if count == 1 { "" } else { "s" },
                shown(source_name)
            );
            shown_lines(&line).into_owned()
        };
        let write_all = |out: &mut dyn Write| -> std::io::Result<()> {
            out.write_all(head.as_bytes())?;
            for text in &texts {
                out.write_all(text.as_bytes())?;
            }
            out.flush()
        };
        write_all(out).map_err(|error| ExplainError::Write(error.into()))
    }
}

/// Writes `text` line by line, each line after the first (and the first too with
/// `first_too`) after `indent`: a pretty-printed value nested in the document. JSON
/// strings never hold a raw line break, so every line break is the printer's.
fn write_indented(
    out: &mut dyn Write,
    text: &str,
    indent: &str,
    first_too: bool,
) -> std::io::Result<()> {
    for (index, line) in text.split('\n').enumerate() {
        if index > 0 {
            out.write_all(b"\n")?;
        }
        if index > 0 || first_too {
            out.write_all(indent.as_bytes())?;
        }
        out.write_all(line.as_bytes())?;
    }
    Ok(())
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
        // The killed task's cgroup names the service or container that died.
        let cgroup = report
            .memcg
            .as_ref()
            .and_then(|m| m.task.as_deref())
            .filter(|cgroup| *cgroup != "/")
            .map_or_else(String::new, |cgroup| format!(", cgroup {}", shown(cgroup)));
        let _ = writeln!(
            out,
            "  killed:  {} (pid {}), anon-rss {}{cgroup}",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn streamed(input: &[u8], json: bool) -> String {
        let mut out = Vec::new();
        explain_to(&mut &input[..], "kern.log", json, &mut out).expect("explained");
        String::from_utf8(out).expect("UTF-8 output")
    }

    #[test]
    fn streamed_output_is_the_whole_input_rendering_for_every_fixture() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crates/ballast-oom/tests/fixtures/oom");
        let mut checked = 0;
        let mut inputs: Vec<Vec<u8>> = vec![b"".to_vec(), b"no report here\n".to_vec()];
        for entry in std::fs::read_dir(dir).expect("fixture dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|ext| ext == "log") {
                inputs.push(std::fs::read(&path).expect("fixture"));
            }
        }
        for input in &inputs {
            let whole = ballast_oom::explain(input);
            let json = render_json(&whole).expect("JSON");
            assert_eq!(streamed(input, true), json);
            assert_eq!(streamed(input, false), render_text(&whole, "kern.log"));
            checked += usize::from(!whole.diagnostics.is_empty());
        }
        assert!(checked > 0, "some fixture has diagnostics");
    }

    #[test]
    fn a_global_oom_names_the_cgroup_of_the_task_it_killed() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crates/ballast-oom/tests/fixtures/oom");
        let service =
            std::fs::read(fixtures.join("constructed-6.1-global-kill-systemd-service.log"))
                .expect("fixture");
        let text = streamed(&service, false);
        assert!(
            text.contains("killed:  memhog (pid 113), anon-rss 105 MiB, cgroup /system.slice/memhog.service\n"),
            "{text}"
        );
        // The root cgroup names nothing.
        let root = std::fs::read(fixtures.join("lab-debian12-6.1-balloon-200m-of-512m.serial.log"))
            .expect("fixture");
        let text = streamed(&root, false);
        assert!(
            text.contains("killed:  memhog (pid 113), anon-rss 105 MiB\n"),
            "{text}"
        );
    }
}
