//! The ingest service, between the API (`crate::api`'s ingest handler) and the store:
//! for a validated batch of an authenticated host it loads each OOM's VM context
//! (inventory configuration, balloon history of the host or its cluster), runs the
//! correlation and builds the rows ([`prepare`]), picks the webhooks to notify
//! (`crate::notify::targets`), and stores the batch in one transaction.

pub mod prepare;

use std::collections::HashMap;

use ballast_model::{Batch, Event, IngestResponse};

pub use prepare::prepare_batch;

use crate::clusters::Clusters;
use crate::correlation::CorrelationSettings;
use crate::metrics::BatchShape;
use crate::notify::Route;
use crate::storage::queries;
use crate::storage::rows::VmContext;
use crate::storage::{Store, StoreError};

/// What the service runs on (the live settings of the API).
#[derive(Debug, Clone, Copy)]
pub struct IngestSettings<'a> {
    pub correlation: &'a CorrelationSettings,
    pub clusters: &'a Clusters,
    pub notify: &'a [Route],
}

/// A stored batch: the answer to the agent and its shape for the counters.
#[derive(Debug)]
pub struct Stored {
    pub response: IngestResponse,
    pub shape: BatchShape,
}

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("Storage failed")]
    Store(#[from] StoreError),
    #[error("The batch preparation task failed")]
    Worker,
}

/// Correlates, routes and stores `batch`, whose rows all belong to `host` (the
/// token's host: every row is stored under it, so no batch writes another host's rows).
pub async fn store_batch(
    store: &dyn Store,
    batch: Batch,
    host: &str,
    received_at_ms: i64,
    settings: &IngestSettings<'_>,
) -> Result<Stored, IngestError> {
    // A VM is (host, uuid): every OOM of the batch is judged with what its own host
    // reported, never another host's VM of the same uuid; in a configured cluster,
    // with what any of the cluster's hosts did.
    let history_hosts = settings.clusters.history_hosts(host);
    let window_secs = settings.correlation.window_secs;
    let mut contexts: HashMap<String, VmContext> = HashMap::new();
    for envelope in &batch.events {
        if let Event::Oom(oom) = &envelope.event {
            if !contexts.contains_key(&oom.vm.uuid) {
                let context = queries::vm_context_in(
                    store,
                    host,
                    &history_hosts,
                    &oom.vm.uuid,
                    envelope.captured_at_ms,
                    window_secs,
                )
                .await?;
                contexts.insert(oom.vm.uuid.clone(), context);
            }
        }
    }
    let correlation = settings.correlation.clone();
    let authenticated = host.to_string();
    let mut prepared = tokio::task::spawn_blocking(move || {
        let mut prepared = prepare_batch(batch, received_at_ms, &contexts, &correlation);
        prepared.host_id = authenticated;
        prepared
    })
    .await
    .map_err(|_| IngestError::Worker)?;
    prepared.notify = crate::notify::targets(&prepared.ooms, settings.notify);
    let shape = BatchShape::of(&prepared);
    let response = store.ingest(prepared).await?;
    Ok(Stored { response, shape })
}
