//! The HTTP API: `fn app(state) -> Router`.
//!
//! Write side (agents, per-host bearer token):
//! - `POST /api/v1/ingest`: a `ballast_model::Batch` (JSON, optionally gzip).
//!
//! Read side (the read token when configured; none on a loopback listener):
//! - `GET /api/v1/ooms`, `GET /api/v1/ooms/{id}`
//! - `GET /api/v1/vms`, `GET /api/v1/vms/{host}/{uuid}/memory` (`/vms/{uuid}/memory`
//!   while one host reported the uuid), `GET /api/v1/vms/{host}/{uuid}/memory-devices`
//!   (the VM's virtio-mem resizes)
//! - `GET /api/v1/stats/ooms`, `GET /api/v1/stats/repeated-balloon-ooms`
//!
//! And `GET /metrics` (Prometheus text, read token like the query API; see
//! `crate::metrics`), `GET /healthz` (no auth). docs/collector.md documents every
//! parameter and answer. Each request gets one tracing span with its method and
//! `matched_path`.

mod error;
mod health;
mod ingest;
mod memory_devices;
mod query;
mod routes;
mod scrape;

pub use error::AppError;
pub use routes::routes;

#[cfg(test)]
#[path = "host_took/tests.rs"]
mod host_took_tests;
#[cfg(test)]
mod tests;
