//! `/explain`: paste an OOM report or upload a kernel log and get the same
//! analysis as `ballast-agent explain` (`ballast_oom::explain`, no host figures).
//! Nothing is stored. The upload is size-limited (`dashboard.explain_max_bytes`,
//! 413 above it) and streamed through `ballast_oom::StreamParser` on blocking threads
//! as it arrives, so an upload costs the parser's window, not its size.

use axum::extract::{Multipart, State};
use maud::{html, Markup};

use ballast_model::{OomAnalysis, ParsedReport};
use ballast_oom::{ExplainedReport, Explanation, StreamParser};

use crate::dashboard::layout::{self, badge};
use crate::dashboard::oom_page::parsed_report;
use crate::dashboard::DashboardError;
use crate::state::AppState;

fn form(max_bytes: usize) -> Markup {
    html! {
        form.card.explain method="post" action="/explain" enctype="multipart/form-data" {
            label for="report" { "Paste an OOM report or a whole kernel log" }
            textarea #report name="report" rows="14" spellcheck="false" {}
            label for="log" { "… or upload a kernel log (at most " (crate::reports::format::kib(u64::try_from(max_bytes / 1024).unwrap_or(0))) ")" }
            input #log type="file" name="log";
            button type="submit" { "Explain" }
        }
    }
}

/// `GET /explain`.
pub async fn form_page(State(state): State<AppState>) -> Markup {
    layout::page(
        "Explain an OOM report",
        form(state.config.dashboard.explain_max_bytes),
    )
}

/// A multipart error: past the body limit it is the 413 of an upload too large.
fn multipart_error(error: &axum::extract::multipart::MultipartError, max: usize) -> DashboardError {
    if error.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        DashboardError::TooLarge(max)
    } else {
        DashboardError::BadRequest(error.body_text())
    }
}

/// Bytes gathered before they go to the parser.
const FEED_BYTES: usize = 256 * 1024;

/// Feeds `bytes` to the parser on a blocking thread (a full window is scanned there).
async fn feed(
    mut parser: StreamParser,
    bytes: Vec<u8>,
) -> Result<(StreamParser, Vec<ballast_oom::Report>), DashboardError> {
    tokio::task::spawn_blocking(move || {
        let reports = parser.push(&bytes);
        (parser, reports)
    })
    .await
    .map_err(|_| DashboardError::Worker)
}

/// `POST /explain` (multipart: `report` text and/or `log` file).
///
/// The upload goes through `ballast_oom::StreamParser` as it arrives, the path of
/// `ballast-agent explain FILE`: memory per upload is the parser's window, not the
/// upload. Past `dashboard.explain_max_bytes` it stops with a 413.
pub async fn submit(
    State(state): State<AppState>,
    mut multipart: Multipart,
) -> Result<Markup, DashboardError> {
    let max = state.config.dashboard.explain_max_bytes;
    let mut last_byte = None;
    let mut parser = StreamParser::new();
    let mut reports = Vec::new();
    // Small chunks are gathered so each trip to a blocking thread carries some work.
    let mut pending: Vec<u8> = Vec::new();
    let mut n_bytes = 0usize;
    let mut blank = true;
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|error| multipart_error(&error, max))?
    {
        if !matches!(field.name(), Some("report" | "log")) {
            continue;
        }
        if n_bytes > 0 && last_byte != Some(b'\n') {
            pending.push(b'\n');
            n_bytes += 1;
            last_byte = Some(b'\n');
        }
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|error| multipart_error(&error, max))?
        {
            if n_bytes + chunk.len() > max {
                return Err(DashboardError::TooLarge(max));
            }
            let Some(&last) = chunk.last() else {
                continue;
            };
            n_bytes += chunk.len();
            last_byte = Some(last);
            blank &= chunk.iter().all(u8::is_ascii_whitespace);
            pending.extend_from_slice(&chunk);
            if pending.len() >= FEED_BYTES {
                let (back, found) = feed(parser, std::mem::take(&mut pending)).await?;
                parser = back;
                reports.extend(found);
            }
        }
    }
    let (parser, found) = feed(parser, pending).await?;
    reports.extend(found);
    if blank {
        return Err(DashboardError::BadRequest(
            "Paste a report or choose a file".into(),
        ));
    }
    let explanation = tokio::task::spawn_blocking(move || {
        let (rest, diagnostics) = parser.finish();
        reports.extend(rest);
        let reports = reports
            .into_iter()
            .map(|report| {
                let analysis = ballast_oom::analyze(&report, None);
                ExplainedReport { report, analysis }
            })
            .collect();
        Explanation {
            reports,
            diagnostics,
        }
    })
    .await
    .map_err(|_| DashboardError::Worker)?;
    tracing::debug!(
        n_bytes,
        n_reports = explanation.reports.len(),
        "Explained an uploaded log."
    );
    let body = html! {
        p { (explanation.reports.len()) " OOM reports found in " (n_bytes) " bytes"
            @if !explanation.diagnostics.is_empty() { "; " (explanation.diagnostics.len()) " lines skipped" }
            ". Nothing was stored." }
        @for (index, explained) in explanation.reports.iter().enumerate() {
            @let report = ParsedReport::from(&explained.report);
            @let analysis = OomAnalysis::from(&explained.analysis);
            section.explained {
                h2 { "Report " (index + 1) }
                div.verdict-box {
                    p.lead { "Verdict: " (badge(analysis.verdict)) }
                    p.explanation { (analysis.explanation) }
                }
                (parsed_report(&report, &analysis))
            }
        }
        @if !explanation.diagnostics.is_empty() {
            details {
                summary { "Parser diagnostics" }
                ul { @for d in explanation.diagnostics.iter().take(200) { li { "line " (d.line) ": " (d.message) } } }
            }
        }
        h2 { "Explain another" }
        (form(max))
    };
    Ok(layout::page("Explanation", body))
}
