//! ballast-collector: receives agents' batches, stores them (SQLite or
//! PostgreSQL), relates every guest OOM to the VM's balloon, and answers queries.
//!
//! 1. [`api`]: the HTTP API (`fn app(state) -> Router`): `POST /api/v1/ingest`
//!    for agents, `GET /api/v1/*` for people and dashboards.
//! 2. [`storage`]: trait `Store` with the SQLite and PostgreSQL engines and
//!    their migrations; [`storage::queries`] holds every read, written once.
//! 3. [`correlation`]: pure; OOM + balloon history -> verdict, reasons,
//!    counterfactual.
//! 4. [`retention`]: deletes expired rows in bounded batches.
//! 5. [`server`]: binds, serves (plain or TLS), shuts down gracefully.
//! 6. [`notify`]: webhook notifications of new OOMs through a durable outbox.
//! 7. [`metrics`]: Prometheus counters of ingest, retention and webhooks (`GET /metrics`).
//!
//! What it is not: a parser of raw kernel logs (agents send parsed reports;
//! `ballast-oom` is the parser) nor a dashboard renderer (that reads through the
//! same queries). Everything guest-controlled it stores is untrusted text.

pub mod api;
pub mod app;
pub mod auth;
pub mod auth_limit;
pub mod clusters;
pub mod config;
pub mod correlation;
pub mod dashboard;
mod error_text;
pub mod html;
pub mod ingest;
pub mod listener;
pub mod live_router;
pub mod loopback_host;
pub mod metrics;
pub mod notify;
pub mod paths;
pub mod records;
pub mod reload;
pub mod reports;
pub mod retention;
pub mod server;
pub mod state;
pub mod storage;
pub mod token_table;
pub mod watchdog;

#[cfg(test)]
mod test_fixtures;

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
