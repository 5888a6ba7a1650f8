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
//! 2. [`prepare::prepare_batch`] turns a validated `ballast_model::Batch` into
//!    [`PreparedBatch`] rows (correlation included) outside any lock.
//! 3. [`Store::ingest`] inserts them with `ON CONFLICT (host_id, key) DO NOTHING`:
//!    a re-sent key counts as a duplicate, never as a second row (an OOM stored
//!    partial is the one row a later, complete copy of the same key replaces). It
//!    returns only after the transaction committed (SQLite: WAL + `synchronous=FULL`).

pub mod pg_tls;
pub mod postgres;
pub mod prepare;
pub mod queries;
pub mod sql;
pub mod sqlite;
pub mod tiers;

use std::sync::Arc;

use async_trait::async_trait;

use ballast_model::IngestResponse;

use crate::config::StorageSettings;
pub use prepare::{EventRow, OomRow, PreparedBatch, RollupRow, VmUpsert};
pub use sql::{Cell, Param, Query, Row};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("SQLite failed")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL failed")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("Failed to connect to PostgreSQL (sslmode={mode})")]
    PostgresConnect {
        mode: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(transparent)]
    PostgresTls(#[from] pg_tls::PgTlsError),
    #[error("Failed to create the state directory {path}")]
    StateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Migration {version} failed")]
    Migration {
        version: i64,
        #[source]
        source: Box<StoreError>,
    },
    #[error("The database schema ({found}) is newer than this collector ({known})")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("Commit failed: {0}")]
    Commit(String),
    #[error("The storage worker stopped")]
    WorkerGone,
    #[error("A host named {0:?} already has a token (revoke it first, or --rotate)")]
    TokenExists(String),
}

/// The operations every engine provides.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Runs a read-only query.
    async fn query(&self, query: Query) -> Result<Vec<Row>, StoreError>;
    /// Runs one write statement in its own transaction; returns the rows affected.
    async fn execute(&self, query: Query) -> Result<u64, StoreError>;
    /// Runs write statements in ONE transaction that sees one snapshot (SQLite: the
    /// single writer; PostgreSQL: `REPEATABLE READ`), so statements selecting the same
    /// rows select the same rows; all or nothing. Returns the rows affected by each.
    async fn execute_all(&self, queries: Vec<Query>) -> Result<Vec<u64>, StoreError>;
    /// Stores a batch in one transaction; answers after the commit.
    async fn ingest(&self, batch: PreparedBatch) -> Result<IngestResponse, StoreError>;
    /// The engine's name (`sqlite`, `postgres`).
    fn engine(&self) -> &'static str;
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

/// The migrations of `migrations` (an engine's, oldest first) a database at schema
/// version `current` still needs, or [`StoreError::SchemaTooNew`] when a newer
/// collector already migrated it past the newest known here.
fn pending_migrations(
    migrations: &'static [(i64, &'static str)],
    current: i64,
) -> Result<impl Iterator<Item = &'static (i64, &'static str)>, StoreError> {
    let known = migrations.last().map_or(0, |(version, _)| *version);
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    Ok(migrations.iter().filter(move |(v, _)| *v > current))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_newer_migrations_are_pending_and_a_newer_schema_is_refused() {
        static MIGRATIONS: &[(i64, &str)] = &[(1, "a"), (2, "b"), (3, "c")];
        let versions = |current| -> Vec<i64> {
            pending_migrations(MIGRATIONS, current)
                .expect("known schema")
                .map(|(version, _)| *version)
                .collect()
        };
        assert_eq!(versions(0), vec![1, 2, 3]);
        assert_eq!(versions(2), vec![3]);
        assert!(versions(3).is_empty());
        assert!(matches!(
            pending_migrations(MIGRATIONS, 4).map(|pending| pending.count()),
            Err(StoreError::SchemaTooNew { found: 4, known: 3 })
        ));
    }
}
