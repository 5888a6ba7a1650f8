//! The virtio-mem part on correlations of fixtures, and wired into the report on a
//! real SQLite store.

use std::sync::Arc;

use ballast_model::{Batch, Envelope, Event, OomEvent, VirtioMemDevice, SCHEMA_VERSION};

use super::*;
use crate::correlation::{correlate, CorrelationInput, CorrelationSettings};
use crate::elastic_fixtures::{virtio_unplugged, ELASTIC_DEVICES};
use crate::test_fixtures::{lab_inflated, oom_at_ms, MIB};

fn fact(id: i64, name: &str, event: &OomEvent, block_kib: Option<u64>) -> ElasticOomFact {
    let c = correlate(
        &CorrelationInput {
            oom_at_ms: oom_at_ms(),
            event,
            vm_config: None,
            rollups: &[],
        },
        &CorrelationSettings::default(),
    );
    ElasticOomFact {
        id,
        time_ms: oom_at_ms() + id,
        host: "pve1".into(),
        vm_uuid: event.vm.uuid.clone(),
        vm_name: name.into(),
        host_took: c.host_took_or_balloon(),
        needed_kib: c.needed_kb,
        devices: vec![VirtioMemDevice {
            id: "vmem0".into(),
            block_size_kib: block_kib,
            ..VirtioMemDevice::default()
        }],
    }
}

/// The fixture's guest lacked 23168 KiB (~22.6 MiB) at the OOM.
const NEEDED: u64 = 23_168;

#[test]
fn an_oom_after_an_unplug_is_listed_with_the_request_that_would_have_held() {
    let unplugged = fact(1, "elastic-8g", &virtio_unplugged(512 * MIB), Some(2 * MIB));
    // An earlier OOM with 256 MiB unplugged whose request came down before the window.
    let mut earlier = fact(2, "elastic-8g", &virtio_unplugged(256 * MIB), Some(2 * MIB));
    earlier.host_took.requested_lowered_kib = None;
    earlier.host_took.requested_lowered_at_ms = None;
    let balloon = fact(3, "lab-512", &lab_inflated(), None);
    let part = build(&[balloon, earlier, unplugged]);
    // The balloon-only OOM has no virtio-mem figures: not in this part.
    assert_eq!(part.virtio_mem_ooms, 2);
    assert_eq!(part.ooms_after_unplug.len(), 1, "{part:#?}");
    let oom = &part.ooms_after_unplug[0];
    assert_eq!(oom.id, 1);
    assert_eq!(oom.host_took, HostTookVerdict::HostTookMemory);
    assert_eq!(oom.requested_lowered_kib, Some(512 * MIB));
    assert_eq!(oom.seconds_after_lowering, Some(40));
    assert_eq!(part.vms_below_maximum.len(), 1);
    let vm = &part.vms_below_maximum[0];
    assert_eq!((vm.ooms, vm.host_took_ooms), (2, 2));
    assert_eq!(vm.max_unplugged_kib, 512 * MIB);
    assert_eq!(vm.lowest_requested_kib, Some(ELASTIC_DEVICES - 512 * MIB));
    // The larger of the two: the earlier OOM's 6400 MiB plugged + the 22.6 MiB the
    // guest lacked, in 2 MiB blocks.
    let holds = (ELASTIC_DEVICES - 256 * MIB + NEEDED).div_ceil(2 * MIB) * 2 * MIB;
    assert_eq!(vm.request_that_holds_kib, Some(holds), "{vm:#?}");
    assert!(!vm.beyond_maximum);

    let text = markdown(&part);
    assert!(text.contains("## virtio-mem"), "{text}");
    assert!(
        text.contains("| 512 MiB | 40 s | 512 MiB | host_took_memory |"),
        "{text}"
    );
    assert!(text.contains(&format!("at least {}", kib(holds))), "{text}");
    let page = html(&part).into_string();
    assert!(page.contains("id=\"virtio-mem\""), "{page}");
    assert!(page.contains("/ooms/1"), "{page}");
}

#[test]
fn a_need_beyond_the_devices_size_has_no_request_that_holds() {
    let mut event = virtio_unplugged(512 * MIB);
    for zone in &mut event.report.zones {
        if zone.name == "Normal" {
            zone.high_kb = Some(2048 * MIB);
        }
    }
    let part = build(&[fact(1, "elastic-8g", &event, None)]);
    let vm = &part.vms_below_maximum[0];
    assert!(vm.beyond_maximum, "{vm:#?}");
    assert_eq!(vm.request_that_holds_kib, None);
    assert!(markdown(&part).contains("even the devices' full size would not have held"));
}

#[test]
fn guest_chosen_names_are_escaped_and_a_fleet_without_virtio_mem_gets_nothing() {
    let part = build(&[fact(
        1,
        "<img src=x onerror=alert(1)>|**x**",
        &virtio_unplugged(512 * MIB),
        None,
    )]);
    let text = markdown(&part);
    assert_eq!(
        text.matches("<img").count(),
        text.matches("\\<img").count(),
        "only escaped: {text}"
    );
    assert!(
        text.contains("\\<img src=x onerror=alert(1)\\>\\|\\*\\*x\\*\\*"),
        "{text}"
    );
    let page = html(&part).into_string();
    assert!(!page.contains("<img"), "{page}");
    assert!(page.contains("&lt;img"), "{page}");

    let none = build(&[fact(1, "lab-512", &lab_inflated(), None)]);
    assert!(none.is_empty());
    assert_eq!(markdown(&none), "");
    assert_eq!(html(&none).into_string(), "");
}

async fn ingest(store: &dyn crate::storage::Store, ooms: Vec<OomEvent>) {
    let events = ooms
        .into_iter()
        .enumerate()
        .map(|(n, oom)| Envelope {
            key: format!("pve1/oom/{n}"),
            captured_at_ms: oom_at_ms() + i64::try_from(n).unwrap_or(0),
            event: Event::Oom(Box::new(oom)),
        })
        .collect();
    let batch = Batch {
        schema_version: SCHEMA_VERSION,
        host_id: "pve1".into(),
        agent_version: "0.1.0".into(),
        events,
    };
    crate::ingest::store_batch(
        store,
        batch,
        "pve1",
        crate::now_ms(),
        &crate::ingest::IngestSettings {
            correlation: &CorrelationSettings::default(),
            clusters: &crate::clusters::Clusters::default(),
            notify: &[],
        },
    )
    .await
    .expect("stored");
}

#[tokio::test]
async fn the_balloon_policy_report_carries_the_virtio_mem_part_only_where_there_is_one() {
    use crate::reports::{balloon_policy, PolicySettings, ReportFormat};
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn crate::storage::Store> = Arc::new(
        crate::storage::sqlite::SqliteStore::open(&dir.path().join("c.sqlite"))
            .await
            .expect("open"),
    );
    ingest(store.as_ref(), vec![lab_inflated()]).await;
    let (since, until) = (oom_at_ms() - 86_400_000, oom_at_ms() + 86_400_000);
    let report = |format| {
        let store = Arc::clone(&store);
        async move {
            balloon_policy(
                store.as_ref(),
                since,
                until,
                &PolicySettings::default(),
                format,
            )
            .await
            .expect("report")
        }
    };
    let json: serde_json::Value =
        serde_json::from_str(&report(ReportFormat::Json).await).expect("json");
    assert!(json.get("fleet").is_some(), "{json}");
    assert!(
        json.get("elastic").is_none(),
        "a balloon-only fleet: {json}"
    );
    assert!(!report(ReportFormat::Markdown).await.contains("virtio-mem"));

    ingest(
        store.as_ref(),
        vec![lab_inflated(), virtio_unplugged(512 * MIB)],
    )
    .await;
    let json: serde_json::Value =
        serde_json::from_str(&report(ReportFormat::Json).await).expect("json");
    assert_eq!(json["elastic"]["virtio_mem_ooms"], 1, "{json}");
    assert_eq!(
        json["elastic"]["ooms_after_unplug"][0]["host_took"],
        "host_took_memory"
    );
    assert!(report(ReportFormat::Markdown)
        .await
        .contains("### OOMs after an unplug"));
    assert!(report(ReportFormat::Html)
        .await
        .contains("id=\"virtio-mem\""));
}
