//! The PostgreSQL engine: several stateless collectors share one database.
//!
//! A small fixed pool of `tokio-postgres` connections (reconnected when one
//! closes); each ingest batch is one transaction, so the answer comes after the
//! commit (`synchronous_commit` as the server is configured: `on` by default).
//! Migrations run under an advisory lock, so collectors starting together apply
//! each migration once. TLS (rustls) as `sslmode` and `sslrootcert` in the URL say
//! ([`pg_tls`](crate::storage::pg_tls)).

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, IsolationLevel};

use ballast_model::IngestResponse;

use crate::storage::pg_tls::PgConnect;
use crate::storage::rows::{self, IngestTally, PreparedBatch};
use crate::storage::sql::{postgres_placeholders, Cell, Param, Query, Row};
use crate::storage::store::{pending_migrations, Engine, Store, StoreError};
use crate::storage::{guard, pressure, virtio_mem};

/// Schema migrations, in order.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/postgres/0001_init.sql")),
    (2, include_str!("migrations/postgres/0002_rollup_tiers.sql")),
    (
        3,
        include_str!("migrations/postgres/0003_notify_outbox.sql"),
    ),
    (4, include_str!("migrations/postgres/0004_vms_by_host.sql")),
    (5, include_str!("migrations/postgres/0005_vms_keyset.sql")),
    (
        6,
        include_str!("migrations/postgres/0006_notify_messages.sql"),
    ),
    (
        7,
        include_str!("migrations/postgres/0007_vms_by_host_uuid.sql"),
    ),
    (
        8,
        include_str!("migrations/postgres/0008_oom_completion.sql"),
    ),
    (9, include_str!("migrations/postgres/0009_pressure.sql")),
    (
        10,
        include_str!("migrations/postgres/0010_guard_actions.sql"),
    ),
    (11, include_str!("migrations/postgres/0011_virtio_mem.sql")),
];
/// Advisory lock id held while migrating ("ball").
const MIGRATION_LOCK: i64 = 0x6261_6c6c;

/// The PostgreSQL store.
pub struct PostgresStore {
    connect: PgConnect,
    clients: Vec<Mutex<Option<Client>>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool_size", &self.clients.len())
            .finish_non_exhaustive()
    }
}

fn sql_param(param: &Param) -> &(dyn ToSql + Sync) {
    match param {
        Param::Int(value) => value,
        Param::Text(value) => value,
    }
}

fn sql_params(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(sql_param).collect()
}

async fn connect(connect: &PgConnect) -> Result<Client, StoreError> {
    let (client, connection) =
        connect
            .config
            .connect(connect.tls.clone())
            .await
            .map_err(|source| StoreError::PostgresConnect {
                mode: connect.mode.name(),
                source,
            })?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "PostgreSQL connection closed.");
        }
    });
    Ok(client)
}

impl PostgresStore {
    /// Connects (`pool_size` connections, opened lazily after the first) and migrates.
    pub async fn open(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let spec = PgConnect::from_url(url)?;
        let first = connect(&spec).await?;
        migrate(&first).await?;
        let mut clients = Vec::with_capacity(pool_size.max(1));
        clients.push(Mutex::new(Some(first)));
        for _ in 1..pool_size.max(1) {
            clients.push(Mutex::new(None));
        }
        Ok(Self {
            connect: spec,
            clients,
            next: AtomicUsize::new(0),
        })
    }

    async fn client(&self) -> Result<MutexGuard<'_, Option<Client>>, StoreError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        let mut guard = self.clients[index].lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(connect(&self.connect).await?);
        }
        Ok(guard)
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn query(&self, query: Query) -> Result<Vec<Row>, StoreError> {
        let guard = self.client().await?;
        let client = guard.as_ref().ok_or(StoreError::WorkerGone)?;
        let statement = client.prepare(&postgres_placeholders(&query.sql)).await?;
        let rows = client.query(&statement, &sql_params(&query.params)).await?;
        rows.iter().map(decode_row).collect()
    }

    async fn execute(&self, query: Query) -> Result<u64, StoreError> {
        let guard = self.client().await?;
        let client = guard.as_ref().ok_or(StoreError::WorkerGone)?;
        Ok(client
            .execute(
                postgres_placeholders(&query.sql).as_str(),
                &sql_params(&query.params),
            )
            .await?)
    }

    async fn execute_all(&self, queries: Vec<Query>) -> Result<Vec<u64>, StoreError> {
        let mut guard = self.client().await?;
        let client = guard.as_mut().ok_or(StoreError::WorkerGone)?;
        let transaction = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .start()
            .await?;
        let mut affected = Vec::with_capacity(queries.len());
        for query in &queries {
            affected.push(
                transaction
                    .execute(
                        postgres_placeholders(&query.sql).as_str(),
                        &sql_params(&query.params),
                    )
                    .await?,
            );
        }
        transaction.commit().await?;
        Ok(affected)
    }

    async fn ingest(&self, batch: PreparedBatch) -> Result<IngestResponse, StoreError> {
        let mut guard = self.client().await?;
        let client = guard.as_mut().ok_or(StoreError::WorkerGone)?;
        let transaction = client.transaction().await?;
        let response = insert_batch(&transaction, &batch).await?;
        transaction.commit().await?;
        Ok(response)
    }

    fn engine(&self) -> Engine {
        Engine::Postgres
    }
}

fn decode_row(row: &tokio_postgres::Row) -> Result<Row, StoreError> {
    let mut cells = Vec::with_capacity(row.len());
    for (index, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let cell = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(index)?.map(Cell::Int)
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(index)?
                .map(|v| Cell::Int(i64::from(v)))
        } else if *ty == Type::INT2 {
            row.try_get::<_, Option<i16>>(index)?
                .map(|v| Cell::Int(i64::from(v)))
        } else if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(index)?
                .map(|v| Cell::Int(i64::from(v)))
        } else if *ty == Type::TEXT || *ty == Type::VARCHAR || *ty == Type::NAME {
            row.try_get::<_, Option<String>>(index)?.map(Cell::Text)
        } else {
            None
        };
        cells.push(cell.unwrap_or(Cell::Null));
    }
    Ok(Row(cells))
}

async fn migrate(client: &Client) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = migrate_locked(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result?;
    unlocked?;
    Ok(())
}

async fn migrate_locked(client: &Client) -> Result<(), StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at_ms BIGINT NOT NULL)",
        )
        .await?;
    let current: i64 = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .try_get(0)?;
    for (version, sql) in pending_migrations(MIGRATIONS, current)? {
        let apply = async {
            client.batch_execute("BEGIN").await?;
            client.batch_execute(sql).await?;
            client
                .execute(
                    "INSERT INTO schema_migrations (version, applied_at_ms) VALUES ($1, $2)",
                    &[version, &crate::now_ms()],
                )
                .await?;
            client.batch_execute("COMMIT").await
        };
        if let Err(source) = apply.await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(StoreError::Migration {
                version: *version,
                source: Box::new(StoreError::Postgres(source)),
            });
        }
    }
    Ok(())
}

/// Rollups per INSERT statement (`rows::ROLLUP_PARAMS` parameters each; PostgreSQL
/// allows 65535). Also the virtio-mem device rows per INSERT (17 parameters each).
const ROLLUPS_PER_INSERT: usize = 1000;
// PostgreSQL binds at most 65535 parameters per statement.
const _: () = assert!(ROLLUPS_PER_INSERT * rows::ROLLUP_PARAMS <= 65_535);
const _: () = assert!(ROLLUPS_PER_INSERT * virtio_mem::DEVICE_PARAMS <= 65_535);

/// `INSERT ... VALUES (?, ...) <tail>` with its one `VALUES` group repeated `rows` times.
fn multi_row(single: &str, rows: usize) -> String {
    let Some((head, rest)) = single.split_once(" VALUES ") else {
        return single.to_string();
    };
    let Some(end) = rest.find(')') else {
        return single.to_string();
    };
    let (group, tail) = rest.split_at(end + 1);
    let mut sql = String::with_capacity(single.len() + (group.len() + 2) * rows);
    sql.push_str(head);
    sql.push_str(" VALUES ");
    for index in 0..rows {
        if index > 0 {
            sql.push_str(", ");
        }
        sql.push_str(group);
    }
    sql.push_str(tail);
    sql
}

async fn insert_batch(
    transaction: &tokio_postgres::Transaction<'_>,
    batch: &PreparedBatch,
) -> Result<IngestResponse, StoreError> {
    let host = batch.host_id.as_str();
    let mut tally = IngestTally::default();
    // One multi-row INSERT per chunk of rollups, not one statement (one round trip)
    // per row: under 1000 agents per-row inserts held a pooled connection for ~50 round
    // trips per batch and queued rollup batches for seconds (BENCHMARKS.md, "Collector
    // under 1000 agents"). ON CONFLICT DO NOTHING: the rows inserted are the accepted.
    for chunk in batch.rollups.chunks(ROLLUPS_PER_INSERT) {
        let sql = postgres_placeholders(&multi_row(rows::INSERT_ROLLUP, chunk.len()));
        let params: Vec<Param> = chunk
            .iter()
            .flat_map(|row| rows::rollup_params(host, row))
            .collect();
        let inserted = transaction
            .execute(sql.as_str(), &sql_params(&params))
            .await?;
        let inserted = usize::try_from(inserted).unwrap_or(usize::MAX);
        for index in 0..chunk.len() {
            tally.count(index < inserted);
        }
    }
    // Each virtio-mem device of the rollups (a re-sent rollup's conflict: nothing),
    // many rows per INSERT like the rollups.
    let devices: Vec<Vec<Param>> = batch
        .rollups
        .iter()
        .flat_map(|row| {
            let of = virtio_mem::RollupOf {
                host_id: host,
                key: &row.key,
                captured_at_ms: row.captured_at_ms,
                vm_uuid: &row.vm_uuid,
                period_start_ms: row.point.period_start_ms,
                period_secs: row.point.period_secs,
            };
            row.devices
                .iter()
                .map(move |device| virtio_mem::device_params(of, device))
        })
        .collect();
    for chunk in devices.chunks(ROLLUPS_PER_INSERT) {
        let sql = postgres_placeholders(&multi_row(virtio_mem::INSERT_DEVICE, chunk.len()));
        let params: Vec<Param> = chunk.iter().flatten().cloned().collect();
        transaction
            .execute(sql.as_str(), &sql_params(&params))
            .await?;
    }
    if !batch.ooms.is_empty() {
        let insert = transaction
            .prepare(&postgres_placeholders(rows::INSERT_OOM))
            .await?;
        let vm = transaction
            .prepare(&postgres_placeholders(rows::INSERT_VM_IF_ABSENT))
            .await?;
        let mut new_ooms = vec![false; batch.ooms.len()];
        for (row, new) in batch.ooms.iter().zip(new_ooms.iter_mut()) {
            let params = rows::oom_params(host, batch.received_at_ms, row);
            let changed = transaction.execute(&insert, &sql_params(&params)).await?;
            tally.count(changed > 0);
            if changed > 0 {
                *new = true;
                let params = rows::vm_if_absent_params(host, row);
                transaction.execute(&vm, &sql_params(&params)).await?;
            }
        }
        if !batch.notify.is_empty() {
            let notify = transaction
                .prepare(&postgres_placeholders(rows::INSERT_NOTIFY))
                .await?;
            for target in &batch.notify {
                if let (Some(true), Some(row)) = (
                    new_ooms.get(target.oom_index).copied(),
                    batch.ooms.get(target.oom_index),
                ) {
                    let params =
                        rows::notify_params(host, batch.received_at_ms, row, &target.webhook);
                    transaction.execute(&notify, &sql_params(&params)).await?;
                }
            }
        }
    }
    if !batch.events.is_empty() {
        let insert = transaction
            .prepare(&postgres_placeholders(rows::INSERT_EVENT))
            .await?;
        let upsert = transaction
            .prepare(&postgres_placeholders(rows::UPSERT_VM))
            .await?;
        for row in &batch.events {
            let params = rows::event_params(host, row);
            let changed = transaction.execute(&insert, &sql_params(&params)).await?;
            tally.count(changed > 0);
            if changed > 0 {
                for vm in &row.vms {
                    let params = rows::vm_params(host, vm);
                    transaction.execute(&upsert, &sql_params(&params)).await?;
                }
                if let Some(episode) = &row.episode {
                    let params = pressure::episode_params(host, episode);
                    transaction
                        .execute(
                            &postgres_placeholders(pressure::UPSERT_EPISODE),
                            &sql_params(&params),
                        )
                        .await?;
                }
                if let Some(action) = &row.guard {
                    let params = guard::guard_params(host, &row.key, action);
                    transaction
                        .execute(
                            &postgres_placeholders(guard::INSERT_GUARD),
                            &sql_params(&params),
                        )
                        .await?;
                }
                if let Some(change) = &row.memory_device {
                    let params = virtio_mem::memory_device_params(host, &row.key, change);
                    transaction
                        .execute(
                            &postgres_placeholders(virtio_mem::INSERT_MEMORY_DEVICE),
                            &sql_params(&params),
                        )
                        .await?;
                }
            }
        }
    }
    Ok(tally.response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_repeats_the_values_group() {
        let sql = multi_row(rows::INSERT_ROLLUP, 3);
        assert_eq!(sql.matches('?').count(), 3 * rows::ROLLUP_PARAMS);
        assert_eq!(sql.matches("VALUES").count(), 1);
        assert!(sql.ends_with("ON CONFLICT (host_id, key) DO NOTHING"));
        assert_eq!(multi_row(rows::INSERT_ROLLUP, 1), rows::INSERT_ROLLUP);
    }
}
