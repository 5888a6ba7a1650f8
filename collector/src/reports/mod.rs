//! Reports over the fleet's stored history. Builders are pure functions over
//! query results ([`balloon_policy::build`], [`autoballoon::replay`]); [`load`]
//! gathers their input through `Store` queries; [`render`] turns a report into
//! Markdown or CSV (JSON is its serde form), [`html`] into HTML (the dashboard's page
//! and the standalone file).
//!
//! Used by `ballast-collector report balloon-policy` and the dashboard page
//! `/reports/balloon-policy`, so both say the same thing.

pub mod autoballoon;
pub mod balloon_policy;
pub mod format;
pub mod html;
pub mod load;
pub mod render;
pub mod starvation;

pub use balloon_policy::{build, BalloonPolicyReport, PolicyInput, PolicySettings};

/// Why a report could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("Failed to read the report's data")]
    Load(#[from] crate::storage::StoreError),
    #[error("Unknown report format {0:?} (md, html, json, csv)")]
    Format(String),
    #[error("Failed to serialize the report")]
    Json(#[from] serde_json::Error),
}

/// Output formats of the report command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Markdown,
    Html,
    Json,
    Csv,
}

impl ReportFormat {
    pub fn parse(text: &str) -> Result<Self, ReportError> {
        Ok(match text {
            "md" | "markdown" => ReportFormat::Markdown,
            "html" => ReportFormat::Html,
            "json" => ReportFormat::Json,
            "csv" => ReportFormat::Csv,
            other => return Err(ReportError::Format(other.to_string())),
        })
    }
}

/// Loads, builds and renders the balloon-policy report for `[since, until)`.
pub async fn balloon_policy(
    store: &dyn crate::storage::Store,
    since_ms: i64,
    until_ms: i64,
    settings: &PolicySettings,
    format: ReportFormat,
) -> Result<String, ReportError> {
    let input = load::load(store, since_ms, until_ms, settings).await?;
    let report = build(&input, settings);
    Ok(match format {
        ReportFormat::Markdown => render::markdown(&report),
        ReportFormat::Csv => render::csv(&report),
        ReportFormat::Json => serde_json::to_string_pretty(&report)?,
        ReportFormat::Html => html::standalone(&report),
    })
}
