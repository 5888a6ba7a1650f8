//! The dashboard's one error type: HTML error pages. 4xx are not logged; 5xx get a
//! generic page and are logged with their cause.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::dashboard::layout;
use crate::storage::StoreError;
pub(crate) use ballast_daemon::error_chain as chain;

/// Why a page could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("Not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("The upload is larger than {0} bytes")]
    TooLarge(usize),
    #[error("Failed to read from the store")]
    Store(#[from] StoreError),
    #[error("The analysis worker failed")]
    Worker,
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            DashboardError::NotFound => (StatusCode::NOT_FOUND, self.to_string()),
            DashboardError::BadRequest(_) => (StatusCode::BAD_REQUEST, self.to_string()),
            DashboardError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, self.to_string()),
            DashboardError::Store(_) | DashboardError::Worker => {
                tracing::error!(error = %crate::dashboard::error::chain(&self), "Dashboard page failed.");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error; the collector's log has the details".to_string(),
                )
            }
        };
        let body = layout::page(
            status.canonical_reason().unwrap_or("Error"),
            maud::html! { p.error { (message) } },
        );
        (status, body).into_response()
    }
}
