//! What every engine provides ([`Store`]), how it fails ([`StoreError`]), which engine
//! it is ([`Engine`]), and the migration bookkeeping both engines share.

use async_trait::async_trait;

use ballast_model::IngestResponse;

use crate::storage::rows::PreparedBatch;
use crate::storage::sql::{Query, Row};

/// The two engines. Statements that differ between them choose by this, inside
/// `storage` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    /// The engine's name (`sqlite`, `postgres`), as logged.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    PostgresTls(#[from] crate::storage::pg_tls::PgTlsError),
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
    #[error("Stored {what} of row {id} does not decode")]
    Decode {
        what: &'static str,
        id: i64,
        #[source]
        source: serde_json::Error,
    },
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
    /// Which engine this is.
    fn engine(&self) -> Engine;
}

/// The migrations of `migrations` (an engine's, oldest first) a database at schema
/// version `current` still needs, or [`StoreError::SchemaTooNew`] when a newer
/// collector already migrated it past the newest known here.
pub(crate) fn pending_migrations(
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
