//! The storage suite on a real PostgreSQL server (a throwaway cluster from
//! `ballast-testpg`, a fresh database per case), and the same-answers check
//! against SQLite.
#![allow(clippy::tests_outside_test_module)]

use crate::util;

use std::sync::Arc;

use ballast_collector::storage::postgres::PostgresStore;
use ballast_collector::storage::sqlite::SqliteStore;
use ballast_collector::storage::Store;
use ballast_daemon::error_chain;
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
    util::suite::a_partial_oom_is_completed_under_its_key(store(&cluster).await).await;
    util::suite::queries_answer_as_documented(store(&cluster).await).await;
    util::suite::tokens_are_stored_hashed(store(&cluster).await).await;
    util::suite::retention_deletes_in_batches(store(&cluster).await).await;
    util::suite::minute_rollups_compact_into_hours(store(&cluster).await).await;
    util::suite::pressure_is_stored_once_per_phase(store(&cluster).await).await;
    util::suite::guard_actions_are_stored_once(store(&cluster).await).await;
    util::virtio_mem::virtio_mem_is_stored_once(store(&cluster).await).await;
    util::virtio_mem::virtio_mem_compacts_and_expires_with_the_rollups(store(&cluster).await).await;
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

/// The throwaway cluster with `ssl=on` (its own CA), reached over TCP: `verify-full`
/// with that CA stores and reads, and the server sees the connection encrypted
/// (`pg_stat_ssl`); another CA, or a host name the certificate does not name, is
/// refused with an error naming the mode and the certificate problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_connects_over_verified_tls() {
    use ballast_collector::storage::Query;

    let Some(cluster) = TestPg::start_with_tls_or_skip() else {
        return;
    };
    let socket_url = cluster.create_database().expect("createdb");
    let dbname = socket_url
        .rsplit_once("dbname=")
        .map(|(_, name)| name.to_string())
        .expect("dbname");
    let tcp = cluster.tcp_connection_string(&dbname).expect("TLS cluster");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, cluster.tls_ca_pem().expect("CA")).expect("CA file");

    let url = format!(
        "{tcp} sslmode=verify-full sslrootcert={}",
        ca_file.display()
    );
    let store = PostgresStore::open(&url, 2)
        .await
        .expect("verify-full opens");
    util::suite::load(&store).await.expect("write over TLS");
    let seen = util::suite::snapshot(&store).await;
    assert_eq!(seen["list"]["items"].as_array().map(Vec::len), Some(3));
    // The server's view: every connection to this database is encrypted.
    let rows = store
        .query(Query::new(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*), max(s.version) \
             FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid \
             WHERE a.datname = current_database()",
            Vec::new(),
        ))
        .await
        .expect("pg_stat_ssl");
    let row = rows.first().expect("one row");
    assert!(row.int_or_zero(1) >= 1, "at least this connection");
    assert_eq!(row.int(0), row.int(1), "every connection is encrypted");
    assert!(
        row.text_or_empty(2).starts_with("TLSv1."),
        "TLS version: {:?}",
        row.text(2)
    );

    // A CA that did not sign the server's certificate.
    let other = ballast_testpg::pki::TestPki::generate("another CA", &["localhost"]).expect("pki");
    let wrong_ca = dir.path().join("wrong-ca.pem");
    std::fs::write(&wrong_ca, &other.ca_pem).expect("CA file");
    let url = format!(
        "{tcp} sslmode=verify-full sslrootcert={}",
        wrong_ca.display()
    );
    let error = PostgresStore::open(&url, 1).await.expect_err("wrong CA");
    let text = error_chain(&error);
    assert!(text.contains("sslmode=verify-full"), "{text}");
    assert!(text.contains("UnknownIssuer"), "{text}");

    // verify-full checks the name; verify-ca does not (the certificate names
    // localhost and 127.0.0.1, not 127.0.0.2, which still reaches the server).
    let by_other_name = tcp.replace("host=localhost", "host=127.0.0.2 hostaddr=127.0.0.1");
    let url = format!(
        "{by_other_name} sslmode=verify-full sslrootcert={}",
        ca_file.display()
    );
    let error = PostgresStore::open(&url, 1).await.expect_err("wrong name");
    let text = error_chain(&error);
    assert!(text.contains("not valid for name \"127.0.0.2\""), "{text}");
    let url = format!(
        "{by_other_name} sslmode=verify-ca sslrootcert={}",
        ca_file.display()
    );
    PostgresStore::open(&url, 1)
        .await
        .expect("verify-ca ignores the name");
    // require: encrypted, no certificate check (the documented risk).
    PostgresStore::open(&format!("{tcp} sslmode=require"), 1)
        .await
        .expect("require takes any certificate");
}
