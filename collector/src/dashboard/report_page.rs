//! `/reports/balloon-policy`: the balloon-policy report as a page (its HTML is
//! `crate::reports::html`'s, as in `ballast-collector report --format html`).

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::dashboard::layout;
use crate::dashboard::DashboardError;
use crate::reports::format;
use crate::reports::{self, PolicySettings};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct ReportParams {
    since: Option<String>,
    format: Option<String>,
}

/// `GET /reports/balloon-policy[?since=30d][&format=md|json|csv]`.
pub async fn page(
    State(state): State<AppState>,
    Query(params): Query<ReportParams>,
) -> Result<Response, DashboardError> {
    let since_text = params.since.unwrap_or_else(|| "30d".to_string());
    let span = format::parse_duration_ms(&since_text)
        .filter(|ms| *ms <= 400 * 86_400_000)
        .ok_or_else(|| {
            DashboardError::BadRequest("since must be like 30d, 12h (at most 400d)".into())
        })?;
    let until = crate::now_ms();
    let settings = PolicySettings::default();
    let input = reports::load::load(state.store.as_ref(), until - span, until, &settings).await?;
    let report = reports::build(&input, &settings);
    let elastic = reports::elastic_policy::build(
        &reports::load::elastic_ooms(state.store.as_ref(), until - span, until).await?,
    );
    let text = |content_type: &'static str, body: String| {
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    };
    Ok(match params.format.as_deref() {
        None | Some("html") => {
            let body = maud::html! {
                (reports::html::body(&report, &since_text))
                (reports::elastic_policy::html(&elastic))
            };
            layout::page("Balloon policy", body).into_response()
        }
        Some("md") => text(
            "text/markdown; charset=utf-8",
            reports::render::markdown(&report) + &reports::elastic_policy::markdown(&elastic),
        ),
        Some("csv") => text("text/csv; charset=utf-8", reports::render::csv(&report)),
        Some("json") => text(
            "application/json",
            serde_json::to_string_pretty(&reports::WithElastic {
                report: &report,
                elastic: &elastic,
            })
            .unwrap_or_else(|_| "null".to_string()),
        ),
        Some(_) => {
            return Err(DashboardError::BadRequest(
                "format must be html, md, json or csv".into(),
            ))
        }
    })
}
