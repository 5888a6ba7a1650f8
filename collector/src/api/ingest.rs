//! `POST /api/v1/ingest`.
//!
//! 1. Authenticate: `Authorization: Bearer <token>`; its SHA-256 must be stored
//!    (401 otherwise, before the body is read; 429 when the source address failed
//!    too often). Tokens are checked against the table in memory
//!    (`crate::token_table`), so bad tokens do not reach the store each time.
//! 2. Admit: the host's token bucket and in-flight cap (429 + `Retry-After`).
//! 3. Read the body within `body_timeout` (408) and `max_body_bytes` (413);
//!    `Content-Encoding: gzip` is inflated up to `max_decompressed_bytes` (413).
//! 4. Parse (400 for malformed JSON, 422 when it does not fit the schema),
//!    check `host_id` against the token's host (403), validate every field (422
//!    with the field's JSON path; a vocabulary name this version does not know is
//!    refused so too, though it decodes as `Unknown`). Rows are stored under the token's host: a VM is
//!    (host, uuid), so a host's token writes only its own host's VMs.
//! 5. Hand the batch to the ingest service (`crate::ingest`: correlate OOMs, pick
//!    webhooks, store in one transaction), answer `IngestResponse{accepted,
//!    duplicates}` after the commit.
//!
//! Nothing is stored unless every step passed. Every request, whatever its outcome,
//! is counted in [`crate::metrics`].

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap};
use axum::Extension;
use axum::Json;

use ballast_model::{Batch, IngestResponse};

use crate::api::AppError;
use crate::auth::Refused;
use crate::metrics::{BatchShape, IngestOutcome};
use crate::state::AppState;

pub(super) async fn ingest(
    State(state): State<AppState>,
    connect_info: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, AppError> {
    let started = Instant::now();
    let metrics = std::sync::Arc::clone(&state.metrics);
    let peer = super::health::peer_ip(connect_info.as_ref());
    let result = handle(state, headers, peer, body).await;
    match &result {
        Ok((response, shape)) => {
            let outcome = if response.accepted == 0 && response.duplicates > 0 {
                IngestOutcome::Duplicate
            } else {
                IngestOutcome::Accepted
            };
            metrics.ingest(
                outcome,
                started.elapsed(),
                Some((shape, response.accepted, response.duplicates)),
            );
        }
        Err(error) => {
            if matches!(error, AppError::Storage(_)) {
                metrics.storage_error();
            }
            metrics.ingest(IngestOutcome::of_error(error), started.elapsed(), None);
        }
    }
    result.map(|(response, _)| Json(response))
}

/// The steps of the module doc; the batch's shape goes to the metrics.
async fn handle(
    state: AppState,
    headers: HeaderMap,
    peer: Option<IpAddr>,
    body: Body,
) -> Result<(IngestResponse, BatchShape), AppError> {
    let host = super::health::authenticate_host(&state, &headers, peer).await?;
    let _permit =
        state
            .admission
            .admit(&host, Instant::now())
            .map_err(|refused| match refused {
                Refused::Rate { retry_after_secs } => {
                    AppError::TooManyRequests { retry_after_secs }
                }
                Refused::Busy => AppError::TooManyRequests {
                    retry_after_secs: 1,
                },
            })?;
    let limits = &state.config.ingest;
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
    {
        None => false,
        Some(encoding) if encoding == "identity" || encoding.is_empty() => false,
        Some(encoding) if encoding == "gzip" || encoding == "x-gzip" => true,
        Some(encoding) => {
            return Err(AppError::UnsupportedEncoding(format!(
                "Content-Encoding {encoding:?} is not supported (use gzip or none)"
            )))
        }
    };
    let bytes = tokio::time::timeout(
        limits.body_timeout,
        axum::body::to_bytes(body, limits.max_body_bytes),
    )
    .await
    .map_err(|_| AppError::Timeout)?
    .map_err(|error| {
        if crate::listener::is_body_timeout(&error) {
            AppError::Timeout
        } else if is_length_limit(&error) {
            AppError::PayloadTooLarge(format!(
                "request body larger than {} bytes",
                limits.max_body_bytes
            ))
        } else {
            AppError::BadRequest(format!("failed to read the request body: {error}"))
        }
    })?;

    let max_decompressed = limits.max_decompressed_bytes;
    let model_limits = state.config.limits;
    let expected_host = host.clone();
    let batch = tokio::task::spawn_blocking(move || -> Result<Batch, AppError> {
        let json = if gzip {
            gunzip(&bytes, max_decompressed)?
        } else {
            bytes.to_vec()
        };
        let batch: Batch = serde_json::from_slice(&json).map_err(|error| {
            if error.is_data() {
                AppError::Unprocessable {
                    message: format!("the batch does not fit the schema: {error}"),
                    field: None,
                }
            } else {
                AppError::BadRequest(format!("malformed JSON: {error}"))
            }
        })?;
        if batch.host_id != expected_host {
            return Err(AppError::Forbidden(format!(
                "this token belongs to host {expected_host:?}, not to {:?}",
                batch.host_id
            )));
        }
        // A name a newer agent sent decodes as its vocabulary's `Unknown`: `validate`
        // refuses it where `unknown` is no value, `check_sent_names` where it is.
        ballast_model::validate(&batch, &model_limits, crate::now_ms())
            .and_then(|()| ballast_model::check_sent_names(&json))
            .map_err(|error| AppError::Unprocessable {
                message: error.to_string(),
                field: Some(error.path),
            })?;
        Ok(batch)
    })
    .await
    .map_err(|_| AppError::Internal)??;

    let stored = crate::ingest::store_batch(
        state.store.as_ref(),
        batch,
        &host,
        crate::now_ms(),
        &crate::ingest::IngestSettings {
            correlation: &state.config.correlation,
            clusters: &state.config.clusters,
            notify: &state.config.notify,
        },
    )
    .await
    .map_err(|error| match error {
        crate::ingest::IngestError::Store(error) => AppError::Storage(error),
        crate::ingest::IngestError::Worker => AppError::Internal,
    })?;
    tracing::debug!(
        host = %host,
        accepted = stored.response.accepted,
        duplicates = stored.response.duplicates,
        "Batch stored."
    );
    Ok((stored.response, stored.shape))
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if cause.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Inflates a gzip body, refusing to produce more than `max` bytes (gzip bombs).
fn gunzip(compressed: &[u8], max: usize) -> Result<Vec<u8>, AppError> {
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let mut decoder = flate2::read::MultiGzDecoder::new(compressed).take(limit);
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(max));
    decoder
        .read_to_end(&mut out)
        .map_err(|error| AppError::BadRequest(format!("invalid gzip body: {error}")))?;
    if out.len() > max {
        return Err(AppError::PayloadTooLarge(format!(
            "decompressed body larger than {max} bytes"
        )));
    }
    Ok(out)
}
