//! ballast-collector: receives agents' batches, stores them (SQLite or
//! PostgreSQL), relates every guest OOM to the VM's balloon, and answers queries.
//!
//! Layers, top down (no import cycle among the files; `crates/ballast-archlint`
//! tests it, ARCHITECTURE.md states the rules):
//! 1. [`server`], [`reload`], [`app`] (`fn app(state) -> Router`: mounts the API and
//!    the dashboard): the process and the whole configuration ([`config`]).
//! 2. [`api`] (`POST /api/v1/ingest` for agents, `GET /api/v1/*` for people and
//!    dashboards, `GET /metrics`) and [`dashboard`]: HTTP handlers.
//! 3. [`state`], [`ingest`] (contexts, correlation, webhooks, rows), [`notify`]
//!    (webhooks through a durable outbox), [`retention`] (bounded deletes),
//!    [`reports`]: services.
//! 4. [`correlation`] (pure: OOM + balloon history -> verdict, reasons,
//!    counterfactual), [`metrics`] (Prometheus counters), [`auth`], [`listener`].
//! 5. [`storage`]: trait `Store` with the SQLite and PostgreSQL engines and their
//!    migrations; every SQL statement, written once for both engines.
//!
//! What it is not: a parser of raw kernel logs (agents send parsed reports;
//! `ballast-oom` is the parser) nor a dashboard renderer (that reads through the
//! same queries). Everything guest-controlled it stores is untrusted text.

pub mod api;
pub mod app;
pub mod auth;
pub mod auth_limit;
pub mod cli;
pub mod clusters;
pub mod config;
pub mod correlation;
pub mod dashboard;
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
mod elastic_fixtures;
#[cfg(test)]
mod test_fixtures;

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
