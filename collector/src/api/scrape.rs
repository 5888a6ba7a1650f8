//! `GET /metrics`: the counters of [`crate::metrics`], the notification outbox's
//! row counts, the VMs under pressure (open episodes by level) and the VMs with a
//! virtio-mem resize stuck now, as Prometheus text.

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
    let under_pressure =
        match crate::storage::episodes::vms_under_pressure(state.store.as_ref(), 0).await {
            Ok(counts) => Some(counts),
            Err(error) => {
                tracing::warn!(%error, "Metrics: failed to count the VMs under pressure.");
                state.metrics.storage_error();
                None
            }
        };
    let stuck_resizes =
        match crate::storage::virtio_mem_reads::vms_with_stuck_resize(state.store.as_ref()).await {
            Ok(n) => Some(n),
            Err(error) => {
                tracing::warn!(%error, "Metrics: failed to count the VMs with a stuck resize.");
                state.metrics.storage_error();
                None
            }
        };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        state
            .metrics
            .render_scrape(outbox.as_deref(), under_pressure, stuck_resizes),
    )
}
