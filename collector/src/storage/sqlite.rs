//! The embedded SQLite engine (the default).
//!
//! One writer thread owns the only writing connection and commits ingest batches in
//! groups: it takes a batch, drains whatever other batches are already queued (up to
//! a bound), runs each inside its own SAVEPOINT (one failing batch rolls back alone)
//! and commits them with ONE fsync, then answers every sender. Durability: WAL with
//! `synchronous=FULL`, so an answered batch survives a crash or power loss.
//! Reads run on a small pool of separate connections on `spawn_blocking` threads;
//! WAL lets them read while the writer writes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use ballast_model::IngestResponse;

use crate::storage::rows::{self, IngestTally, PreparedBatch};
use crate::storage::sql::{Cell, Param, Query, Row};
use crate::storage::store::{pending_migrations, Engine, Store, StoreError};
use crate::storage::{guard, pressure, virtio_mem};

/// Schema migrations, in order.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/sqlite/0001_init.sql")),
    (2, include_str!("migrations/sqlite/0002_rollup_tiers.sql")),
    (3, include_str!("migrations/sqlite/0003_notify_outbox.sql")),
    (4, include_str!("migrations/sqlite/0004_vms_by_host.sql")),
    (5, include_str!("migrations/sqlite/0005_vms_keyset.sql")),
    (
        6,
        include_str!("migrations/sqlite/0006_notify_messages.sql"),
    ),
    (
        7,
        include_str!("migrations/sqlite/0007_vms_by_host_uuid.sql"),
    ),
    (8, include_str!("migrations/sqlite/0008_oom_completion.sql")),
    (9, include_str!("migrations/sqlite/0009_pressure.sql")),
    (10, include_str!("migrations/sqlite/0010_guard_actions.sql")),
    (11, include_str!("migrations/sqlite/0011_virtio_mem.sql")),
];
/// Batches committed together at most ...
const MAX_GROUP_BATCHES: usize = 256;
/// ... and rows.
const MAX_GROUP_ROWS: usize = 50_000;
/// Idle read connections kept.
const MAX_IDLE_READERS: usize = 8;

/// The SQLite store; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    readers: Arc<Readers>,
}

#[derive(Debug)]
enum Job {
    Ingest(
        PreparedBatch,
        oneshot::Sender<Result<IngestResponse, StoreError>>,
    ),
    Execute(Query, oneshot::Sender<Result<u64, StoreError>>),
    ExecuteAll(Vec<Query>, oneshot::Sender<Result<Vec<u64>, StoreError>>),
}

#[derive(Debug)]
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Param::Int(Some(value)) => ToSqlOutput::from(*value),
            Param::Text(Some(text)) => ToSqlOutput::from(text.as_str()),
            Param::Int(None) | Param::Text(None) => ToSqlOutput::from(rusqlite::types::Null),
        })
    }
}

impl SqliteStore {
    /// Opens (creating) the database file and applies the migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        let writer = tokio::task::spawn_blocking({
            let path = path.clone();
            move || -> Result<Connection, StoreError> {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|source| StoreError::StateDir {
                        path: parent.to_path_buf(),
                        source,
                    })?;
                }
                let mut connection = Connection::open(&path)?;
                connection.execute_batch(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; PRAGMA cache_size = -65536;",
                )?;
                migrate(&mut connection)?;
                Ok(connection)
            }
        })
        .await
        .map_err(|_| StoreError::WorkerGone)??;
        let (jobs, receiver) = mpsc::channel(1024);
        std::thread::Builder::new()
            .name("ballast-sqlite-writer".into())
            .spawn(move || writer_loop(writer, receiver))
            .map_err(|source| StoreError::StateDir {
                path: path.clone(),
                source,
            })?;
        Ok(Self {
            jobs,
            readers: Arc::new(Readers {
                path,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn query(&self, query: Query) -> Result<Vec<Row>, StoreError> {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || {
            let connection = readers.take()?;
            let result = read(&connection, &query);
            readers.give_back(connection);
            result
        })
        .await
        .map_err(|_| StoreError::WorkerGone)?
    }

    async fn execute(&self, query: Query) -> Result<u64, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Execute(query, reply))
            .await
            .map_err(|_| StoreError::WorkerGone)?;
        answer.await.map_err(|_| StoreError::WorkerGone)?
    }

    async fn execute_all(&self, queries: Vec<Query>) -> Result<Vec<u64>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::ExecuteAll(queries, reply))
            .await
            .map_err(|_| StoreError::WorkerGone)?;
        answer.await.map_err(|_| StoreError::WorkerGone)?
    }

    async fn ingest(&self, batch: PreparedBatch) -> Result<IngestResponse, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Ingest(batch, reply))
            .await
            .map_err(|_| StoreError::WorkerGone)?;
        answer.await.map_err(|_| StoreError::WorkerGone)?
    }

    fn engine(&self) -> Engine {
        Engine::Sqlite
    }
}

impl Readers {
    fn take(&self) -> Result<Connection, StoreError> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        if let Some(connection) = idle {
            return Ok(connection);
        }
        let connection = Connection::open(&self.path)?;
        connection.execute_batch("PRAGMA busy_timeout = 10000; PRAGMA query_only = 1;")?;
        Ok(connection)
    }

    fn give_back(&self, connection: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE_READERS {
                idle.push(connection);
            }
        }
    }
}

fn read(connection: &Connection, query: &Query) -> Result<Vec<Row>, StoreError> {
    let mut statement = connection.prepare_cached(&query.sql)?;
    let n_columns = statement.column_count();
    let rows = statement.query_map(rusqlite::params_from_iter(query.params.iter()), |row| {
        let mut cells = Vec::with_capacity(n_columns);
        for index in 0..n_columns {
            cells.push(match row.get_ref(index)? {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(value) => Cell::Int(value),
                ValueRef::Real(value) => Cell::Int(value as i64),
                ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
                    Cell::Text(String::from_utf8_lossy(bytes).into_owned())
                }
            });
        }
        Ok(Row(cells))
    })?;
    Ok(rows.collect::<Result<Vec<Row>, _>>()?)
}

fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    connection.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL)",
    )?;
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = transaction.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |row| row.get(0),
    )?;
    for (version, sql) in pending_migrations(MIGRATIONS, current)? {
        transaction
            .execute_batch(sql)
            .and_then(|()| {
                transaction.execute(
                    "INSERT INTO schema_migrations (version, applied_at_ms) VALUES (?1, ?2)",
                    rusqlite::params![version, crate::now_ms()],
                )
            })
            .map_err(|source| StoreError::Migration {
                version: *version,
                source: Box::new(StoreError::Sqlite(source)),
            })?;
    }
    transaction.commit()?;
    Ok(())
}

/// TEST ONLY: the path of a file; while it exists, the writer thread takes no job,
/// as a hung writer would (the watchdog test in collector/tests/it/reload.rs). Never
/// set it in production.
pub const STALL_ENV: &str = "BALLAST_TEST_STALL_STORE";

fn writer_loop(mut connection: Connection, mut jobs: mpsc::Receiver<Job>) {
    let mut pending: Option<Job> = None;
    let stall_file = std::env::var_os(STALL_ENV).map(PathBuf::from);
    loop {
        let job = match pending.take() {
            Some(job) => job,
            None => match jobs.blocking_recv() {
                Some(job) => job,
                None => return,
            },
        };
        if let Some(file) = &stall_file {
            while file.exists() {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        match job {
            Job::Execute(query, reply) => {
                let result = connection
                    .prepare_cached(&query.sql)
                    .and_then(|mut statement| {
                        statement.execute(rusqlite::params_from_iter(query.params.iter()))
                    })
                    .map(|n| u64::try_from(n).unwrap_or(0))
                    .map_err(StoreError::from);
                let _ = reply.send(result);
            }
            Job::ExecuteAll(queries, reply) => {
                let _ = reply.send(execute_all(&mut connection, &queries));
            }
            Job::Ingest(batch, reply) => {
                let mut rows = batch.n_rows();
                let mut group = vec![(batch, reply)];
                while group.len() < MAX_GROUP_BATCHES && rows < MAX_GROUP_ROWS {
                    match jobs.try_recv() {
                        Ok(Job::Ingest(batch, reply)) => {
                            rows += batch.n_rows();
                            group.push((batch, reply));
                        }
                        Ok(other) => {
                            pending = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                commit_group(&mut connection, group);
            }
        }
    }
}

/// Runs the statements in one IMMEDIATE transaction (rolled back on the first error).
fn execute_all(connection: &mut Connection, queries: &[Query]) -> Result<Vec<u64>, StoreError> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut affected = Vec::with_capacity(queries.len());
    for query in queries {
        let n = transaction
            .prepare_cached(&query.sql)?
            .execute(rusqlite::params_from_iter(query.params.iter()))?;
        affected.push(u64::try_from(n).unwrap_or(0));
    }
    transaction.commit()?;
    Ok(affected)
}

type Reply = oneshot::Sender<Result<IngestResponse, StoreError>>;

fn commit_group(connection: &mut Connection, group: Vec<(PreparedBatch, Reply)>) {
    let mut transaction = match connection.transaction_with_behavior(TransactionBehavior::Immediate)
    {
        Ok(transaction) => transaction,
        Err(error) => {
            let message = error.to_string();
            for (_, reply) in group {
                let _ = reply.send(Err(StoreError::Commit(message.clone())));
            }
            return;
        }
    };
    let mut results = Vec::with_capacity(group.len());
    for (batch, _) in &group {
        let result = match transaction.savepoint() {
            Ok(savepoint) => match insert_batch(&savepoint, batch) {
                Ok(response) => savepoint
                    .commit()
                    .map(|()| response)
                    .map_err(StoreError::from),
                // Dropping the savepoint rolls this batch back; the others stay.
                Err(error) => Err(error),
            },
            Err(error) => Err(StoreError::from(error)),
        };
        results.push(result);
    }
    match transaction.commit() {
        Ok(()) => {
            for ((_, reply), result) in group.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Err(error) => {
            let message = error.to_string();
            for (_, reply) in group {
                let _ = reply.send(Err(StoreError::Commit(message.clone())));
            }
        }
    }
}

fn insert_batch(
    connection: &Connection,
    batch: &PreparedBatch,
) -> Result<IngestResponse, StoreError> {
    let host = batch.host_id.as_str();
    let mut tally = IngestTally::default();
    if !batch.rollups.is_empty() {
        let mut statement = connection.prepare_cached(rows::INSERT_ROLLUP)?;
        for row in &batch.rollups {
            let changed = statement.execute(rusqlite::params_from_iter(
                rows::rollup_params(host, row).iter(),
            ))?;
            tally.count(changed > 0);
        }
        insert_devices(connection, host, &batch.rollups)?;
    }
    let mut new_ooms = vec![false; batch.ooms.len()];
    for (row, new) in batch.ooms.iter().zip(new_ooms.iter_mut()) {
        let changed =
            connection
                .prepare_cached(rows::INSERT_OOM)?
                .execute(rusqlite::params_from_iter(
                    rows::oom_params(host, batch.received_at_ms, row).iter(),
                ))?;
        tally.count(changed > 0);
        if changed > 0 {
            *new = true;
            connection
                .prepare_cached(rows::INSERT_VM_IF_ABSENT)?
                .execute(rusqlite::params_from_iter(
                    rows::vm_if_absent_params(host, row).iter(),
                ))?;
        }
    }
    for target in &batch.notify {
        if let (Some(true), Some(row)) = (
            new_ooms.get(target.oom_index).copied(),
            batch.ooms.get(target.oom_index),
        ) {
            connection
                .prepare_cached(rows::INSERT_NOTIFY)?
                .execute(rusqlite::params_from_iter(
                    rows::notify_params(host, batch.received_at_ms, row, &target.webhook).iter(),
                ))?;
        }
    }
    for row in &batch.events {
        let changed =
            connection
                .prepare_cached(rows::INSERT_EVENT)?
                .execute(rusqlite::params_from_iter(
                    rows::event_params(host, row).iter(),
                ))?;
        tally.count(changed > 0);
        if changed > 0 {
            for vm in &row.vms {
                connection
                    .prepare_cached(rows::UPSERT_VM)?
                    .execute(rusqlite::params_from_iter(rows::vm_params(host, vm).iter()))?;
            }
            if let Some(episode) = &row.episode {
                connection
                    .prepare_cached(pressure::UPSERT_EPISODE)?
                    .execute(rusqlite::params_from_iter(
                        pressure::episode_params(host, episode).iter(),
                    ))?;
            }
            if let Some(action) = &row.guard {
                connection.prepare_cached(guard::INSERT_GUARD)?.execute(
                    rusqlite::params_from_iter(guard::guard_params(host, &row.key, action).iter()),
                )?;
            }
            if let Some(change) = &row.memory_device {
                connection
                    .prepare_cached(virtio_mem::INSERT_MEMORY_DEVICE)?
                    .execute(rusqlite::params_from_iter(
                        virtio_mem::memory_device_params(host, &row.key, change).iter(),
                    ))?;
            }
        }
    }
    Ok(tally.response())
}

/// The virtio-mem devices of a batch's rollups (a re-sent rollup's are stored
/// already: its key's rows conflict and add nothing).
fn insert_devices(
    connection: &rusqlite::Connection,
    host: &str,
    rollups: &[rows::RollupRow],
) -> Result<(), rusqlite::Error> {
    for row in rollups.iter().filter(|row| !row.devices.is_empty()) {
        let of = virtio_mem::RollupOf {
            host_id: host,
            key: &row.key,
            captured_at_ms: row.captured_at_ms,
            vm_uuid: &row.vm_uuid,
            period_start_ms: row.point.period_start_ms,
            period_secs: row.point.period_secs,
        };
        let mut statement = connection.prepare_cached(virtio_mem::INSERT_DEVICE)?;
        for device in &row.devices {
            statement.execute(rusqlite::params_from_iter(
                virtio_mem::device_params(of, device).iter(),
            ))?;
        }
    }
    Ok(())
}
