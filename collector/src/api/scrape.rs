//! `GET /metrics`: the counters of [`crate::metrics`] and the notification outbox's
//! row counts, as Prometheus text.

use crate::state::AppState;

/// `GET /metrics`.
pub(crate) async fn scrape(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> impl axum::response::IntoResponse {
    let outbox = match crate::storage::outbox::counts(state.store.as_ref()).await {
        Ok(rows) => Some(
            rows.into_iter()
                .map(|(_, state, n)| (state, n))
                .collect::<Vec<_>>(),
        ),
        Err(error) => {
            tracing::warn!(%error, "Metrics: failed to count the notification outbox.");
            state.metrics.storage_error();
            None
        }
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        state.metrics.render(outbox.as_deref()),
    )
}
