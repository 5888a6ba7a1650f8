//! The storage suite on a real PostgreSQL server (a throwaway cluster from
//! `ballast-testpg`, a fresh database per case), and the same-answers check
//! against SQLite.
#![allow(clippy::tests_outside_test_module)]

mod util;

use std::sync::Arc;

use ballast_collector::storage::postgres::PostgresStore;
use ballast_collector::storage::sqlite::SqliteStore;
use ballast_collector::storage::Store;
use ballast_testpg::TestPg;

async fn store(cluster: &TestPg) -> Arc<dyn Store> {
    let url = cluster.create_database().expect("createdb");
    Arc::new(PostgresStore::open(&url, 4).await.expect("open"))
}

/// One cluster for the whole suite (initdb takes seconds); each case gets its own database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_suite_passes_on_postgresql() {
    let Some(cluster) = util::pg_cluster() else {
        return;
    };
    util::suite::ingest_is_idempotent(store(&cluster).await).await;
    util::suite::queries_answer_as_documented(store(&cluster).await).await;
    util::suite::tokens_are_stored_hashed(store(&cluster).await).await;
    util::suite::retention_deletes_in_batches(store(&cluster).await).await;
    util::suite::minute_rollups_compact_into_hours(store(&cluster).await).await;
    util::identity::the_same_uuid_on_two_hosts_is_two_vms(store(&cluster).await).await;

    // A store an older collector kept by uuid alone (schema 6) is migrated to (host, uuid).
    let url = cluster.create_database().expect("createdb");
    {
        let (old, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        let connection = tokio::spawn(connection);
        for sql in util::identity::migrations_before_v7("postgres") {
            old.batch_execute(sql).await.expect("migration");
        }
        old.batch_execute(util::identity::OLD_STORE_ROWS)
            .await
            .expect("old rows");
        drop(old);
        let _ = connection.await;
    }
    let migrated = PostgresStore::open(&url, 2).await.expect("migrate");
    util::identity::old_store_is_migrated(&migrated).await;

    // Migrations are applied once, also by two collectors starting together.
    let url = cluster.create_database().expect("createdb");
    let (a, b) = tokio::join!(PostgresStore::open(&url, 2), PostgresStore::open(&url, 2));
    let (a, b) = (a.expect("first"), b.expect("second"));
    util::suite::load(&a).await.expect("load");
    let seen_by_b = util::suite::snapshot(&b).await;
    assert_eq!(seen_by_b["list"]["items"].as_array().map(Vec::len), Some(3));

    // Same data, same answers on both engines.
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = SqliteStore::open(&dir.path().join("c.sqlite"))
        .await
        .expect("sqlite");
    util::suite::load(&sqlite).await.expect("load");
    let postgres = store(&cluster).await;
    util::suite::load(postgres.as_ref()).await.expect("load");
    assert_eq!(
        util::suite::snapshot(&sqlite).await,
        util::suite::snapshot(postgres.as_ref()).await
    );
}
