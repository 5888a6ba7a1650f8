//! The fleet store: one schema, two engines (SQLite by default, PostgreSQL for
//! several stateless collectors sharing one database).
//!
//! Engines implement the small [`Store`] trait: run a read query, run one write
//! statement, store an ingest batch in one durable transaction. Everything above
//! that (the query API's reads, tokens, retention) is written once in
//! [`queries`] against the trait, so both engines give the same answers.
//!
//! 1. [`open`] connects and applies the migrations next to the engines
//!    (`migrations/<engine>/NNNN_*.sql`, recorded in `schema_migrations`).
//! 2. `crate::ingest` turns a validated `ballast_model::Batch` into [`PreparedBatch`]
//!    rows (correlation included) outside any lock; [`rows`] maps them to SQL.
//! 3. [`Store::ingest`] inserts them with `ON CONFLICT (host_id, key) DO NOTHING`:
//!    a re-sent key counts as a duplicate, never as a second row (an OOM stored
//!    partial is the one row a later, complete copy of the same key replaces). It
//!    returns only after the transaction committed (SQLite: WAL + `synchronous=FULL`).

pub mod aggregates;
pub mod episodes;
pub mod guard;
pub mod guard_reads;
pub mod host_took_sql;
pub mod outbox;
pub mod pg_tls;
pub mod postgres;
pub mod pressure;
pub mod queries;
pub mod report_sql;
pub mod rows;
pub mod sql;
pub mod sqlite;
mod store;
pub mod tiers;
pub mod virtio_mem;
pub mod virtio_mem_reads;

use std::path::PathBuf;
use std::sync::Arc;

pub use rows::{EventRow, OomRow, PreparedBatch, RollupRow, VmUpsert};
pub use sql::{Cell, Param, Query, Row};
pub use store::{Engine, Store, StoreError};

/// `storage:` as checked at start-up: which engine, where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageSettings {
    Sqlite { path: PathBuf },
    Postgres { url: String, pool_size: usize },
}

/// Opens the configured store and brings its schema up to date.
pub async fn open(settings: &StorageSettings) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match settings {
        StorageSettings::Sqlite { path } => Arc::new(sqlite::SqliteStore::open(path).await?),
        StorageSettings::Postgres { url, pool_size } => {
            Arc::new(postgres::PostgresStore::open(url, *pool_size).await?)
        }
    })
}
