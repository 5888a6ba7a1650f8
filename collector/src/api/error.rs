//! The one error type of the HTTP API and its responses.
//!
//! 4xx answers carry an `ErrorBody` naming the problem (and the field, when one is
//! to blame) and are not logged. 5xx answers carry a generic body; the cause is
//! logged here, inside the request's span, and the TraceLayer logs the failure.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use ballast_model::ErrorBody;

use crate::metrics::IngestOutcome;
use crate::storage::StoreError;
use ballast_daemon::error_chain as chain;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{message}")]
    Unprocessable {
        message: String,
        field: Option<String>,
    },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedEncoding(String),
    #[error("the request body did not arrive in time")]
    Timeout,
    #[error("rate limit exceeded; retry later")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("not found")]
    NotFound,
    /// The request names something ambiguous (a VM uuid several hosts reported).
    #[error("{0}")]
    Conflict(String),
    #[error("Storage failed")]
    Storage(#[from] StoreError),
    #[error("Internal task failed")]
    Internal,
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Timeout => StatusCode::REQUEST_TIMEOUT,
            AppError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::Storage(_) | AppError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = if status.is_server_error() {
            tracing::error!(error = %chain(&self), "Request failed.");
            ErrorBody {
                error: "internal error".into(),
                field: None,
            }
        } else {
            ErrorBody {
                error: self.to_string(),
                field: match &self {
                    AppError::Unprocessable { field, .. } => field.clone(),
                    _ => None,
                },
            }
        };
        let mut response = (status, Json(body)).into_response();
        match self {
            AppError::TooManyRequests { retry_after_secs } => {
                if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
            }
            AppError::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

/// How a failed request counts in `ballast_collector_ingest_requests_total`.
impl IngestOutcome {
    /// The outcome of a failed request.
    pub fn of_error(error: &AppError) -> Self {
        match error {
            AppError::Unauthorized => Self::Rejected("unauthorized"),
            AppError::Forbidden(_) => Self::Rejected("forbidden"),
            AppError::BadRequest(_) | AppError::NotFound | AppError::Conflict(_) => {
                Self::Rejected("bad_request")
            }
            AppError::Unprocessable { .. } => Self::Rejected("invalid"),
            AppError::PayloadTooLarge(_) => Self::Rejected("too_large"),
            AppError::UnsupportedEncoding(_) => Self::Rejected("unsupported_encoding"),
            AppError::Timeout => Self::Rejected("timeout"),
            AppError::TooManyRequests { .. } => Self::Rejected("rate_limited"),
            AppError::Storage(_) | AppError::Internal => Self::Error,
        }
    }
}
