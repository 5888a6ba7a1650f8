//! The storage suite on real SQLite files (a fresh file per case).
#![allow(clippy::tests_outside_test_module)]

use crate::util;

use std::sync::Arc;

use ballast_collector::storage::sqlite::SqliteStore;
use ballast_collector::storage::Store;

async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("state").join("c.sqlite"))
        .await
        .expect("open");
    (dir, Arc::new(store))
}

#[tokio::test]
async fn ingest_is_idempotent() {
    let (_dir, store) = store().await;
    util::suite::ingest_is_idempotent(store).await;
}

#[tokio::test]
async fn a_partial_oom_is_completed_under_its_key() {
    let (_dir, store) = store().await;
    util::suite::a_partial_oom_is_completed_under_its_key(store).await;
}

#[tokio::test]
async fn queries_answer_as_documented() {
    let (_dir, store) = store().await;
    util::suite::queries_answer_as_documented(store).await;
}

#[tokio::test]
async fn tokens_are_stored_hashed() {
    let (_dir, store) = store().await;
    util::suite::tokens_are_stored_hashed(store).await;
}

#[tokio::test]
async fn retention_deletes_in_batches() {
    let (_dir, store) = store().await;
    util::suite::retention_deletes_in_batches(store).await;
}

#[tokio::test]
async fn pressure_is_stored_once_per_phase() {
    let (_dir, store) = store().await;
    util::suite::pressure_is_stored_once_per_phase(store).await;
}

#[tokio::test]
async fn guard_actions_are_stored_once() {
    let (_dir, store) = store().await;
    util::suite::guard_actions_are_stored_once(store).await;
}

#[tokio::test]
async fn minute_rollups_compact_into_hours() {
    let (_dir, store) = store().await;
    util::suite::minute_rollups_compact_into_hours(store).await;
}

#[tokio::test]
async fn virtio_mem_is_stored_once() {
    let (_dir, store) = store().await;
    util::virtio_mem::virtio_mem_is_stored_once(store).await;
}

#[tokio::test]
async fn virtio_mem_compacts_and_expires_with_the_rollups() {
    let (_dir, store) = store().await;
    util::virtio_mem::virtio_mem_compacts_and_expires_with_the_rollups(store).await;
}

#[tokio::test]
async fn reopening_keeps_data_and_migrations_are_applied_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.sqlite");
    {
        let store = SqliteStore::open(&path).await.expect("open");
        util::suite::load(&store).await.expect("load");
    }
    let store = SqliteStore::open(&path).await.expect("reopen");
    let snapshot = util::suite::snapshot(&store).await;
    assert_eq!(snapshot["list"]["items"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn the_same_uuid_on_two_hosts_is_two_vms() {
    let (_dir, store) = store().await;
    util::identity::the_same_uuid_on_two_hosts_is_two_vms(store).await;
}

#[tokio::test]
async fn a_uuid_keyed_store_is_migrated_to_host_and_uuid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.sqlite");
    {
        let old = rusqlite::Connection::open(&path).expect("open schema 6");
        for sql in util::identity::migrations_before_v7("sqlite") {
            old.execute_batch(sql).expect("migration");
        }
        old.execute_batch(util::identity::OLD_STORE_ROWS)
            .expect("old rows");
    }
    let store = SqliteStore::open(&path).await.expect("migrate");
    util::identity::old_store_is_migrated(&store).await;
}
