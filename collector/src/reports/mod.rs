//! Reports over the fleet's stored history. Builders are pure functions over
//! query results ([`balloon_policy::build`], [`autoballoon::replay`]); [`load`]
//! gathers their input through `Store` queries; [`render`] turns a report into
//! Markdown or CSV (JSON is its serde form), [`html`] into HTML (the dashboard's page
//! and the standalone file).
//!
//! Used by `ballast-collector report balloon-policy` and the dashboard page
//! `/reports/balloon-policy`, so both say the same thing. Its virtio-mem part is
//! [`elastic_policy`] (Markdown, HTML and JSON; the CSV stays one row per VM).

pub mod autoballoon;
pub mod balloon_policy;
pub mod elastic_policy;
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
    let elastic = elastic_policy::build(&load::elastic_ooms(store, since_ms, until_ms).await?);
    Ok(match format {
        ReportFormat::Markdown => render::markdown(&report) + &elastic_policy::markdown(&elastic),
        ReportFormat::Csv => render::csv(&report),
        ReportFormat::Json => serde_json::to_string_pretty(&WithElastic {
            report: &report,
            elastic: &elastic,
        })?,
        ReportFormat::Html => html::standalone_with(&report, &elastic),
    })
}

/// The report's JSON: the balloon policy's fields, and `elastic` (the virtio-mem part)
/// when the period had an OOM of a VM with virtio-mem.
#[derive(serde::Serialize)]
pub struct WithElastic<'a> {
    #[serde(flatten)]
    pub report: &'a BalloonPolicyReport,
    #[serde(skip_serializing_if = "elastic_is_empty")]
    pub elastic: &'a elastic_policy::ElasticPolicy,
}

fn elastic_is_empty(elastic: &&elastic_policy::ElasticPolicy) -> bool {
    elastic.is_empty()
}
