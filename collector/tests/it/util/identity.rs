//! Storage cases for "a VM is (host, uuid)", run on both engines: two hosts with
//! the same VM uuid stay two VMs, and a store an older collector kept by uuid alone
//! (schema 6) is migrated with every row on its own host.

use std::sync::Arc;

use ballast_collector::storage::queries;
use ballast_collector::storage::{Param, Query, Store};

use super::*;

/// The vmid a standalone Proxmox host identifies its first VM by.
pub const VMID: &str = "100";

/// Schema 1 to 6 of `engine` (`sqlite` or `postgres`), as a collector before
/// migration 7 applied them.
pub fn migrations_before_v7(engine: &str) -> [&'static str; 6] {
    if engine == "sqlite" {
        [
            include_str!("../../../src/storage/migrations/sqlite/0001_init.sql"),
            include_str!("../../../src/storage/migrations/sqlite/0002_rollup_tiers.sql"),
            include_str!("../../../src/storage/migrations/sqlite/0003_notify_outbox.sql"),
            include_str!("../../../src/storage/migrations/sqlite/0004_vms_by_host.sql"),
            include_str!("../../../src/storage/migrations/sqlite/0005_vms_keyset.sql"),
            include_str!("../../../src/storage/migrations/sqlite/0006_notify_messages.sql"),
        ]
    } else {
        [
            include_str!("../../../src/storage/migrations/postgres/0001_init.sql"),
            include_str!("../../../src/storage/migrations/postgres/0002_rollup_tiers.sql"),
            include_str!("../../../src/storage/migrations/postgres/0003_notify_outbox.sql"),
            include_str!("../../../src/storage/migrations/postgres/0004_vms_by_host.sql"),
            include_str!("../../../src/storage/migrations/postgres/0005_vms_keyset.sql"),
            include_str!("../../../src/storage/migrations/postgres/0006_notify_messages.sql"),
        ]
    }
}

/// What a schema-6 store holds after two hosts each sent VM 100 to a collector that
/// keyed VMs by uuid: one `vms` row (pve-b's inventory came last and took the row
/// over), an OOM of each host's VM 100 (pve-a's from a cut report), a rollup of
/// pve-a's. Plain SQL for both
/// engines; `schema_migrations` says 6.
pub const OLD_STORE_ROWS: &str = "
CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at_ms BIGINT NOT NULL);
INSERT INTO schema_migrations (version, applied_at_ms) VALUES (1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1);
INSERT INTO vms (vm_uuid, host_id, vm_name, state, config_json, findings_json, updated_at_ms)
    VALUES ('100', 'pve-b', 'web-b', 'running', '{\"memory_kib\":524288,\"balloon_present\":true,\"guest_agent_channel\":false,\"serial_log\":false}', '[]', 1795672000000);
INSERT INTO ooms (host_id, key, captured_at_ms, received_at_ms, vm_uuid, vm_name, kind, source,
    report_kind, report_verdict, corr_verdict, event_json, correlation_json)
    VALUES ('pve-a', 'pve-a/oom/1', 1795672800000, 1795672801000, '100', 'web-a', 'guest', 'serial',
    'global', 'balloon', 'not_balloon', '{\"report\":{\"partial\":true}}', '{}'),
    ('pve-b', 'pve-b/oom/1', 1795672900000, 1795672901000, '100', 'web-b', 'guest', 'serial',
    'global', 'balloon', 'balloon', '{}', '{}');
INSERT INTO rollups (host_id, key, captured_at_ms, vm_uuid, vm_name, period_start_ms, period_secs,
    samples, maximum_kib, actual_last, stale)
    VALUES ('pve-a', 'pve-a/r/1', 1795672700000, '100', 'web-a', 1795672640000, 60, 6, 524288, 524288, 0);
";

/// (host, uuid, name, state, OOM count) of every listed VM.
async fn listed(store: &dyn Store) -> Vec<(String, String, String, String, i64)> {
    queries::list_vms(store, None)
        .await
        .expect("vms")
        .items
        .into_iter()
        .map(|vm| {
            (
                vm.host,
                vm.uuid,
                vm.name,
                vm.state.to_string(),
                vm.oom_count,
            )
        })
        .collect()
}

fn row(host: &str, name: &str, state: &str, ooms: i64) -> (String, String, String, String, i64) {
    (host.into(), VMID.into(), name.into(), state.into(), ooms)
}

/// A schema-6 store (filled with [`OLD_STORE_ROWS`]) after this collector opened it.
pub async fn old_store_is_migrated(store: &dyn Store) {
    let version = store
        .query(Query::new(
            "SELECT MAX(version) FROM schema_migrations",
            Vec::new(),
        ))
        .await
        .expect("version");
    // Every migration shipped (one file per version, the same in both engines' folders).
    let shipped = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/storage/migrations/sqlite"
    ))
    .expect("migrations folder")
    .filter(|entry| {
        entry
            .as_ref()
            .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".sql"))
    })
    .count();
    assert!(shipped >= 11, "0011_virtio_mem at least");
    assert_eq!(version[0].int(0), i64::try_from(shipped).ok());
    // Schema 8: the stored partial OOM may still be completed, the other never.
    let partial = store
        .query(Query::new(
            "SELECT host_id, report_partial FROM ooms ORDER BY host_id",
            Vec::new(),
        ))
        .await
        .expect("report_partial");
    let partial: Vec<_> = partial
        .iter()
        .map(|row| (row.text_or_empty(0), row.int(1)))
        .collect();
    assert_eq!(
        partial,
        [
            ("pve-a".to_string(), Some(1)),
            ("pve-b".to_string(), Some(0))
        ]
    );
    // The row keeps its host; pve-a's VM, overwritten by the old upsert, comes back
    // from its OOM (state unknown until pve-a's next inventory).
    assert_eq!(
        listed(store).await,
        vec![
            row("pve-a", "web-a", "unknown", 1),
            row("pve-b", "web-b", "running", 1),
        ]
    );
    assert_eq!(
        queries::hosts_of_vm(store, VMID).await.expect("hosts"),
        vec!["pve-a".to_string(), "pve-b".to_string()]
    );
    let a = queries::vm_context(store, "pve-a", VMID, 1_795_672_800_000, 3600)
        .await
        .expect("context");
    assert_eq!((a.config, a.rollups.len()), (None, 1));
    let b = queries::vm_context(store, "pve-b", VMID, 1_795_672_900_000, 3600)
        .await
        .expect("context");
    assert_eq!(
        (b.config.and_then(|c| c.memory_kib), b.rollups.len()),
        (Some(512 * MIB), 0)
    );
    // The migrated table takes (host, uuid) upserts: pve-a's inventory fills its row.
    store
        .ingest(prepared(batch(
            "pve-a",
            vec![inventory("pve-a/inv/9", oom_at_ms(), &[(VMID, "web-a")])],
        )))
        .await
        .expect("inventory");
    assert_eq!(
        listed(store).await,
        vec![
            row("pve-a", "web-a", "running", 1),
            row("pve-b", "web-b", "running", 1),
        ]
    );
}

/// Two hosts report VM 100: two VMs, each with its own inventory, OOMs and history.
pub async fn the_same_uuid_on_two_hosts_is_two_vms(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let history = |host: &str, actual_kib: u64| {
        (0..3)
            .map(|minute| {
                rollup(
                    &format!("{host}/r/{minute}"),
                    VMID,
                    oom_at_ms() - (4 - minute) * 60_000,
                    actual_kib,
                )
            })
            .collect::<Vec<_>>()
    };
    for (host, actual) in [("pve-a", 512 * MIB), ("pve-b", 200 * MIB)] {
        let mut events = vec![inventory(
            &format!("{host}/inv/1"),
            oom_at_ms() - 3_600_000,
            &[(VMID, &format!("web-{host}"))],
        )];
        events.extend(history(host, actual));
        store
            .ingest(prepared(batch(host, events)))
            .await
            .expect("ingest");
    }
    // pve-a's newer inventory must not touch pve-b's row (it took it over before).
    let mut tor = tor_flat();
    tor.vm.uuid = VMID.into();
    store
        .ingest(prepared(batch(
            "pve-a",
            vec![
                inventory("pve-a/inv/2", oom_at_ms(), &[(VMID, "renamed")]),
                oom("pve-a/oom/1", oom_at_ms(), tor),
            ],
        )))
        .await
        .expect("ingest");
    assert_eq!(
        listed(store).await,
        vec![
            row("pve-a", "renamed", "running", 1),
            row("pve-b", "web-pve-b", "running", 0),
        ]
    );
    for (host, actual) in [("pve-a", 512 * MIB), ("pve-b", 200 * MIB)] {
        let context = queries::vm_context(store, host, VMID, oom_at_ms(), 3600)
            .await
            .expect("context");
        assert_eq!(context.rollups.len(), 3, "{host}");
        assert!(
            context
                .rollups
                .iter()
                .all(|r| r.actual_kib.last == Some(actual)),
            "{host} reads its own history"
        );
        let memory = queries::vm_memory(
            store,
            host,
            VMID,
            0,
            i64::MAX,
            100,
            queries::Resolution::Stored,
        )
        .await
        .expect("memory");
        assert_eq!((memory.host.as_str(), memory.points.len()), (host, 3));
    }
    let counts = queries::oom_counts(store, queries::GroupBy::Vm, 86_400, 0, i64::MAX)
        .await
        .expect("counts");
    assert_eq!(
        counts
            .items
            .iter()
            .map(|c| (c.group.as_str(), c.count))
            .collect::<Vec<_>>(),
        vec![("pve-a/100", 1)]
    );
    let rows = store
        .query(Query::new(
            "SELECT COUNT(*) FROM vms WHERE vm_uuid = ?",
            vec![Param::text(VMID)],
        ))
        .await
        .expect("count");
    assert_eq!(rows[0].int(0), Some(2));
}
