//! `/explain`: paste an OOM report or upload a kernel log and get the same
//! analysis as `ballast-agent explain` (`ballast_oom::explain`, no host figures).
//! Nothing is stored. The upload is size-limited (`dashboard.explain_max_bytes`)
//! and parsed on a blocking thread.

use axum::extract::{Multipart, State};
use maud::{html, Markup};

use ballast_model::{OomAnalysis, ParsedReport};

use crate::api::AppState;
use crate::dashboard::layout::{self, badge};
use crate::dashboard::oom_page::parsed_report;
use crate::dashboard::DashboardError;

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

/// `POST /explain` (multipart: `report` text and/or `log` file).
pub async fn submit(
    State(state): State<AppState>,
    mut multipart: Multipart,
) -> Result<Markup, DashboardError> {
    let max = state.config.dashboard.explain_max_bytes;
    let mut input: Vec<u8> = Vec::new();
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|error| DashboardError::BadRequest(error.body_text()))?
    {
        if !matches!(field.name(), Some("report" | "log")) {
            continue;
        }
        if !input.is_empty() && !input.ends_with(b"\n") {
            input.push(b'\n');
        }
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|error| DashboardError::BadRequest(error.body_text()))?
        {
            if input.len() + chunk.len() > max {
                return Err(DashboardError::TooLarge(max));
            }
            input.extend_from_slice(&chunk);
        }
    }
    if input.iter().all(u8::is_ascii_whitespace) {
        return Err(DashboardError::BadRequest(
            "Paste a report or choose a file".into(),
        ));
    }
    let n_bytes = input.len();
    let explanation = tokio::task::spawn_blocking(move || ballast_oom::explain(&input))
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
                    p.lead { "Verdict: " (badge(&analysis.verdict)) }
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
