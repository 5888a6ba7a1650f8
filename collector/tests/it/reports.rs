//! The balloon-policy report: the pure builder on hand-made fleet facts with exact
//! expected recommendations, and the whole path (store -> load -> build -> render)
//! on the real lab balloon OOM (crates/ballast-oom/tests/fixtures/oom/
//! lab-debian12-6.1-balloon-200m-of-512m.serial.log) stored in a SQLite file.
#![allow(clippy::tests_outside_test_module)]

use crate::util;

use ballast_collector::reports::autoballoon::{HostPoint, ReplayPoint};
use ballast_collector::reports::balloon_policy::{
    build, HostFacts, NearMissFact, OomFact, Platform, PolicyInput, PolicySettings, VmFacts,
    WorkingSetHistogram,
};
use ballast_collector::reports::starvation::EpisodeFact;
use ballast_collector::reports::{self, render, ReportFormat};
use ballast_collector::storage::sqlite::SqliteStore;
use ballast_collector::storage::Store;
use ballast_model::{
    AgentHello, BalloonRollup, Envelope, Event, HostMemory, MinMaxLast, VmConfig, VmRef,
};

use util::{batch, lab_config, lab_inflated, oom, oom_at_ms, LAB_UUID, MIB};

const GIB: u64 = 1024 * MIB;
const T0: i64 = 1_795_672_800_000;

fn vm(uuid: &str, name: &str, host: &str, platform: Platform, config: VmConfig) -> VmFacts {
    VmFacts {
        uuid: uuid.into(),
        name: name.into(),
        host: host.into(),
        platform,
        config: Some(config),
        findings: Vec::new(),
        working_set: WorkingSetHistogram {
            bin_kib: 16 * MIB,
            ..WorkingSetHistogram::default()
        },
        held_periods: 0,
        held_sum_kib: 0,
        maximum_kib: None,
        ooms: Vec::new(),
        near_misses: Vec::new(),
        replay_series: Vec::new(),
        episodes: Vec::new(),
        guard_overridden: Vec::new(),
    }
}

/// Three VMs: a Proxmox web server whose floor is below its working set and whose
/// balloon OOMed it, an oversized libvirt database without stats or agent, and a
/// hostile name.
fn fleet() -> PolicyInput {
    let mut web = vm(
        "101",
        "web",
        "pve1",
        Platform::Proxmox,
        VmConfig {
            memory_kib: Some(4096 * MIB),
            balloon_floor_kib: Some(1024 * MIB),
            balloon_present: true,
            stats_period_secs: Some(2),
            deflate_on_oom: Some(false),
            guest_agent_channel: true,
            serial_log: true,
            ..VmConfig::default()
        },
    );
    // 100 samples: 60 at ~1 GiB (bin 64), 39 at ~1.2 GiB (bin 76), 1 at 1500 MiB.
    web.working_set.bins = vec![(64, 60), (76, 39), (93, 1)];
    web.working_set.max_kib = Some(1500 * MIB);
    web.held_periods = 100;
    web.held_sum_kib = 100 * 512 * MIB;
    web.findings = vec!["deflate_on_oom_off".into()];
    web.ooms = vec![
        OomFact {
            id: 7,
            time_ms: T0 + 200_000,
            verdict: ballast_model::CorrelationVerdict::Balloon,
            balloon_held_kb: Some(1_258_292),
            demand_kib: None,
        },
        OomFact {
            id: 9,
            time_ms: T0 + 86_400_000,
            verdict: ballast_model::CorrelationVerdict::NotBalloon,
            balloon_held_kb: Some(0),
            demand_kib: None,
        },
    ];
    web.near_misses = vec![
        NearMissFact {
            time_ms: T0 + 60_000,
            kind: ballast_model::NearMissKind::UsableLow,
            usable_kib: Some(300 * MIB),
            held_kib: Some(1000 * MIB),
        },
        NearMissFact {
            time_ms: T0 + 120_000,
            kind: ballast_model::NearMissKind::UsableLow,
            usable_kib: Some(200 * MIB),
            held_kib: Some(1200 * MIB),
        },
        NearMissFact {
            time_ms: T0 + 3_600_000,
            kind: ballast_model::NearMissKind::OutOfPuff,
            usable_kib: None,
            held_kib: None,
        },
    ];
    web.replay_series = (0..5)
        .map(|minute| ReplayPoint {
            at_ms: T0 + minute * 60_000,
            period_secs: 60,
            actual_kib: 4 * GIB,
            free_kib: Some(3 * GIB),
        })
        .collect();

    let mut db = vm(
        "5e1f0000-0000-4000-8000-0000000000db",
        "db",
        "kvm1",
        Platform::Libvirt,
        VmConfig {
            memory_kib: Some(8192 * MIB),
            balloon_floor_kib: Some(8192 * MIB),
            balloon_present: true,
            stats_period_secs: None,
            deflate_on_oom: Some(true),
            guest_agent_channel: false,
            serial_log: true,
            ..VmConfig::default()
        },
    );
    db.working_set.bins = vec![(100, 119), (124, 1)];
    db.working_set.max_kib = Some(2000 * MIB);
    db.held_periods = 120;
    db.held_sum_kib = 0;

    let mut hostile = vm(
        "6a000000-0000-4000-8000-000000000666",
        "<script>alert(1)</script>",
        "kvm1",
        Platform::Unknown,
        VmConfig {
            memory_kib: Some(2048 * MIB),
            balloon_floor_kib: None,
            balloon_present: true,
            stats_period_secs: Some(10),
            deflate_on_oom: Some(true),
            guest_agent_channel: true,
            serial_log: true,
            ..VmConfig::default()
        },
    );
    hostile.working_set.bins = vec![(90, 10)];
    hostile.working_set.max_kib = Some(1500 * MIB);

    let no_balloon = VmFacts {
        config: Some(VmConfig {
            memory_kib: Some(GIB),
            ..VmConfig::default()
        }),
        ..vm("7", "plain", "kvm1", Platform::Libvirt, VmConfig::default())
    };

    PolicyInput {
        since_ms: T0 - 86_400_000,
        until_ms: T0 + 2 * 86_400_000,
        vms: vec![db, hostile, web, no_balloon],
        hosts: vec![HostFacts {
            host: "pve1".into(),
            series: (0..5)
                .map(|minute| HostPoint {
                    at_ms: T0 + minute * 60_000,
                    total_kib: 16 * GIB,
                    available_kib: if minute < 3 { 2 * GIB } else { 8 * GIB },
                })
                .collect(),
        }],
    }
}

#[test]
fn fleet_facts_give_exact_recommendations() {
    let report = build(&fleet(), &PolicySettings::default());

    // The VM without a balloon is left out; the one with a balloon OOM comes first,
    // then by host and name (byte order: '<' sorts before 'd').
    let names: Vec<&str> = report.vms.iter().map(|vm| vm.name.as_str()).collect();
    assert_eq!(names, ["web", "<script>alert(1)</script>", "db"]);

    let web = &report.vms[0];
    let ws = web.working_set.expect("working set");
    assert_eq!(
        (ws.samples, ws.p50_kib, ws.p95_kib, ws.max_kib),
        (100, 1040 * MIB, 1232 * MIB, 1500 * MIB)
    );
    // 1500 MiB + 20 % = 1800 MiB, rounded up to 64 MiB = 1856 MiB.
    assert_eq!(web.recommended_floor_kib, Some(1856 * MIB));
    assert!(web.floor_below_working_set);
    assert_eq!(web.reclaimed_avg_kib, Some(512 * MIB));
    assert_eq!(web.balloon_ooms.len(), 1);
    assert_eq!(web.balloon_ooms[0].id, 7);
    assert_eq!(web.other_ooms, 1);
    // The two usable_low periods a minute apart are one near miss (the worst kept).
    assert_eq!(web.near_misses.len(), 2);
    assert_eq!(web.near_misses[0].usable_kib, Some(200 * MIB));
    assert_eq!(web.near_misses[1].kind, "out_of_puff");
    let issues: Vec<&str> = web.actions.iter().map(|a| a.issue.as_str()).collect();
    assert_eq!(issues, ["raise_floor", "deflate_on_oom_off"]);
    assert_eq!(web.actions[0].fix, ["qm set 101 --balloon 1856"]);
    assert_eq!(
        web.actions[1].fix,
        ["qm set 101 --args '-global virtio-balloon-pci.deflate-on-oom=on' (replaces existing args; restart the VM)"]
    );
    let check = web.floor_check.as_ref().expect("floor check");
    assert_eq!(
        check.summary,
        "with this floor, 0 of 1 recorded OOMs would recur (1 without the figures to check)"
    );
    assert_eq!(check.working_set_periods, 100);
    // Never above 1500 MiB of 4 GiB, but it ran out: never a shrink candidate.
    assert_eq!(web.shrink_to_kib, None);

    let db = &report.vms[2];
    // 2000 MiB + 20 % = 2400 -> 2432 MiB; the configured floor (8 GiB) is above it.
    assert_eq!(db.recommended_floor_kib, Some(2432 * MIB));
    assert!(!db.floor_below_working_set);
    // Never above 2000 MiB of 8 GiB over 120 samples: shrink to 2000 + 50 % -> 3008 MiB.
    assert_eq!(db.shrink_to_kib, Some(3008 * MIB));
    let issues: Vec<&str> = db.actions.iter().map(|a| a.issue.as_str()).collect();
    assert_eq!(issues, ["stats_period_off", "no_guest_agent", "shrink"]);
    assert_eq!(
        db.actions[0].fix,
        [
            "virsh dommemstat db --period 10 --live --config",
            "<memballoon model='virtio' autodeflate='on'><stats period='10'/></memballoon>"
        ]
    );
    assert_eq!(
        db.actions[2].fix,
        ["virsh setmaxmem db 3008M --config && virsh setmem db 3008M --config"]
    );

    let hostile = &report.vms[1];
    // No floor configured and no trouble: no raise_floor; 10 samples: too few to shrink.
    assert_eq!(hostile.recommended_floor_kib, Some(1856 * MIB));
    assert!(hostile.actions.is_empty(), "{:?}", hostile.actions);

    let fleet = &report.fleet;
    assert_eq!(fleet.vms_with_balloon, 3);
    assert_eq!(fleet.reclaimed_avg_kib, 512 * MIB);
    assert_eq!((fleet.balloon_ooms, fleet.balloon_contributed_ooms), (1, 0));
    assert_eq!(fleet.near_misses, 2);
    assert_eq!(fleet.floors_below_working_set, 1);
    assert_eq!(fleet.shrink_candidates, 1);

    // The replay inflates web while pve1 is over 80 % and the OOM 200 s later follows it.
    assert_eq!(report.replay.len(), 1);
    let inflation = &report.replay[0].inflations[0];
    assert_eq!(
        (
            inflation.vm_name.as_str(),
            inflation.from_kib,
            inflation.to_kib
        ),
        ("web", 4 * GIB, 4 * GIB - 1_258_292)
    );
    assert_eq!(inflation.ooms_after_ms, vec![T0 + 200_000]);
    assert_eq!(
        (fleet.replay_inflations, fleet.replay_inflations_before_ooms),
        (1, 1)
    );
}

#[test]
fn renderings_escape_names_and_say_the_numbers() {
    let report = build(&fleet(), &PolicySettings::default());
    let md = render::markdown(&report);
    assert!(
        md.contains("Ballooning reclaimed **512 MiB** on average"),
        "{md}"
    );
    assert!(md.contains("- Recommended floor: **1856 MiB** (the configured floor is BELOW the observed working set)."));
    assert!(md.contains("  - `qm set 101 --balloon 1856`"));
    assert!(md.contains("&lt;script&gt;alert\\(1\\)&lt;/script&gt;"));
    assert!(!md.contains("<script>"));
    let csv = render::csv(&report);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], render::CSV_HEADER);
    assert_eq!(
        lines[1],
        "pve1,web,101,proxmox,4096,1024,100,1040,1232,1500,1856,true,1,2,512,,raise_floor;deflate_on_oom_off"
    );
    assert_eq!(
        lines[3],
        "kvm1,db,5e1f0000-0000-4000-8000-0000000000db,libvirt,8192,8192,120,1616,1616,2000,2432,false,0,0,0,3008,stats_period_off;no_guest_agent;shrink"
    );
    let html = ballast_collector::reports::html::standalone(&report);
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains("<script>"));
}

fn lab_rollup(minute: i64, actual: u64, memtotal: u64, usable: u64) -> Envelope {
    let start = oom_at_ms() - (60 - minute) * 60_000;
    let mml = |v: u64| MinMaxLast {
        min: Some(v),
        max: Some(v),
        last: Some(v),
    };
    Envelope {
        key: format!("lab/r/{minute}"),
        captured_at_ms: start + 60_000,
        event: Event::Rollup(Box::new(BalloonRollup {
            vm: VmRef {
                uuid: LAB_UUID.into(),
                name: "lab-512".into(),
            },
            period_start_ms: start,
            period_secs: 60,
            samples: 6,
            maximum_kib: Some(512 * MIB),
            actual_kib: mml(actual),
            available_kib: mml(memtotal),
            usable_kib: mml(usable),
            host: Some(HostMemory {
                total_kib: Some(24 * GIB),
                available_kib: Some(18 * GIB),
                ..HostMemory::default()
            }),
            ..BalloonRollup::default()
        })),
    }
}

/// The lab guest's last hour: 58 minutes at 512 MiB (working set 120 MiB), then the
/// balloon at 200 MiB (working set 168 MiB, MemAvailable 20 MiB), then the real OOM.
pub fn lab_batches(host: &str) -> Vec<ballast_model::Batch> {
    let mut rollups = Vec::new();
    for minute in 0..60 {
        rollups.push(if minute < 58 {
            lab_rollup(minute, 512 * MIB, 500 * MIB, 380 * MIB)
        } else {
            lab_rollup(minute, 200 * MIB, 188 * MIB, 20 * MIB)
        });
    }
    vec![
        batch(
            host,
            vec![
                Envelope {
                    key: "lab/hello".into(),
                    captured_at_ms: oom_at_ms() - 7_200_000,
                    event: Event::Hello(AgentHello {
                        backend: "libvirt".into(),
                        capabilities: Vec::new(),
                        host_memory_kib: Some(24 * GIB),
                    }),
                },
                Envelope {
                    key: "lab/inv".into(),
                    captured_at_ms: oom_at_ms() - 7_200_000,
                    event: Event::Inventory(ballast_model::Inventory {
                        vms: vec![ballast_model::VmInventory {
                            openstack: Default::default(),
                            vm: VmRef {
                                uuid: LAB_UUID.into(),
                                name: "lab-512".into(),
                            },
                            state: ballast_model::VmState::Running,
                            config: lab_config(),
                            findings: vec!["deflate_on_oom_off".into()],
                        }],
                    }),
                },
            ],
        ),
        batch(host, rollups),
        batch(host, vec![oom("lab/oom", oom_at_ms(), lab_inflated())]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_lab_balloon_oom_gives_a_256_mib_floor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("c.sqlite"))
        .await
        .expect("open");
    for batch in lab_batches("lab-host") {
        store.ingest(util::prepared(batch)).await.expect("ingest");
    }
    let settings = PolicySettings::default();
    let since = oom_at_ms() - 30 * 86_400_000;
    let until = oom_at_ms() + 60_000;
    let input = reports::load::load(&store, since, until, &settings)
        .await
        .expect("load");
    let report = build(&input, &settings);
    assert_eq!(report.vms.len(), 1);
    let lab = &report.vms[0];
    assert_eq!(
        (lab.name.as_str(), lab.platform),
        ("lab-512", Platform::Libvirt)
    );
    assert_eq!(lab.balloon_ooms.len(), 1, "{lab:?}");
    assert_eq!(lab.balloon_ooms[0].verdict, "balloon");
    assert_eq!(lab.balloon_ooms[0].balloon_held_kb, Some(312 * MIB));
    // Working set: 58 samples at 120 MiB (bin 7), 2 at 168 MiB (bin 10).
    let ws = lab.working_set.expect("working set");
    assert_eq!(
        (ws.samples, ws.p50_kib, ws.p95_kib, ws.max_kib),
        (60, 128 * MIB, 128 * MIB, 168 * MIB)
    );
    // 168 MiB + 20 % = 201.6 MiB, rounded up to 64 MiB: 256 MiB; floor 128 MiB is below 168.
    assert_eq!(lab.recommended_floor_kib, Some(256 * MIB));
    assert!(lab.floor_below_working_set);
    // MemAvailable 20 MiB (< 10 % of 512) with 312 MiB held, two periods: one near miss.
    assert_eq!(lab.near_misses.len(), 1);
    assert_eq!(lab.near_misses[0].usable_kib, Some(20 * MIB));
    assert_eq!(lab.near_misses[0].held_kib, Some(312 * MIB));
    assert_eq!(
        lab.actions[0].fix,
        [
            "virsh setmem lab-512 256M --live --config",
            "never set <currentMemory unit='MiB'> below 256"
        ]
    );
    assert_eq!(lab.actions[1].issue, "deflate_on_oom_off");
    // avg held: (58 × 0 + 2 × 312 MiB) / 60.
    assert_eq!(lab.reclaimed_avg_kib, Some(2 * 312 * MIB / 60));

    let md = reports::balloon_policy(&store, since, until, &settings, ReportFormat::Markdown)
        .await
        .expect("md");
    assert!(md.contains("caused **1** OOMs"), "{md}");
    assert!(md.contains("Recommended floor: **256 MiB**"), "{md}");
    let json = reports::balloon_policy(&store, since, until, &settings, ReportFormat::Json)
        .await
        .expect("json");
    let value: serde_json::Value = serde_json::from_str(&json).expect("json parses");
    assert_eq!(value["vms"][0]["recommended_floor_kib"], 256 * MIB);
}

/// The quickstart's demo: a 512 MiB guest, the balloon inflated to 200 MiB, a ~105 MiB
/// hog grown and OOM-killed between two samples, so the rollups never saw it (working
/// set 40 MiB, then 45 MiB at 200 MiB). The rollups alone give a 64 MiB floor, below
/// the size that just OOMed; the OOM's own demand must lift it above 200 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_demo_floor_is_above_the_size_that_just_oomed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("c.sqlite"))
        .await
        .expect("open");
    let mut batches = lab_batches("demo-host");
    let rollups = (0..60)
        .map(|minute| {
            if minute < 58 {
                lab_rollup(minute, 512 * MIB, 500 * MIB, 460 * MIB)
            } else {
                lab_rollup(minute, 200 * MIB, 188 * MIB, 143 * MIB)
            }
        })
        .collect();
    batches[1] = batch("demo-host", rollups);
    for batch in batches {
        store.ingest(util::prepared(batch)).await.expect("ingest");
    }
    let settings = PolicySettings::default();
    let since = oom_at_ms() - 30 * 86_400_000;
    let until = oom_at_ms() + 60_000;
    let input = reports::load::load(&store, since, until, &settings)
        .await
        .expect("load");
    let report = build(&input, &settings);
    let demo = &report.vms[0];
    let ws = demo.working_set.expect("working set");
    assert_eq!(ws.max_kib, 45 * MIB, "the rollups never saw the hog");
    assert_eq!(demo.balloon_ooms.len(), 1, "{demo:?}");
    assert_eq!(demo.balloon_ooms[0].verdict, "balloon");
    // 200 MiB at the OOM plus the 1340 kB it lacked (DMA32 2576 kB free below its
    // 3912 kB high watermark, plus the order-0 page).
    assert_eq!(demo.balloon_ooms[0].demand_kib, Some(200 * MIB + 1340));
    // (200 MiB + 1340 kB) + 20 % = 241.6 MiB, rounded up to 64 MiB: 256 MiB.
    let floor = demo.recommended_floor_kib.expect("a floor");
    assert!(floor > 200 * MIB, "floor {floor} KiB");
    assert_eq!(floor, 256 * MIB);
    let check = demo.floor_check.as_ref().expect("floor check");
    assert_eq!(
        (
            check.balloon_ooms,
            check.ooms_would_recur,
            check.ooms_unchecked
        ),
        (1, 0, 0)
    );
    assert_eq!(
        (
            check.working_set_periods,
            check.working_set_periods_above_floor
        ),
        (60, 0)
    );
    assert_eq!(
        check.summary,
        "with this floor, 0 of 1 recorded OOMs would recur"
    );
    assert_eq!(
        demo.actions[0].fix,
        [
            "virsh setmem lab-512 256M --live --config",
            "never set <currentMemory unit='MiB'> below 256"
        ]
    );
    assert!(
        demo.actions[0].why.contains("an OOM needed 201 MiB"),
        "{}",
        demo.actions[0].why
    );

    let md = reports::balloon_policy(&store, since, until, &settings, ReportFormat::Markdown)
        .await
        .expect("md");
    assert!(md.contains("Recommended floor: **256 MiB**"), "{md}");
    assert!(
        md.contains("With this floor, 0 of 1 recorded OOMs would recur."),
        "{md}"
    );
    let json = reports::balloon_policy(&store, since, until, &settings, ReportFormat::Json)
        .await
        .expect("json");
    let value: serde_json::Value = serde_json::from_str(&json).expect("json parses");
    assert_eq!(value["vms"][0]["recommended_floor_kib"], 256 * MIB);
    assert_eq!(value["vms"][0]["floor_check"]["ooms_would_recur"], 0);
    assert_eq!(value["vms"][0]["floor_check"]["balloon_ooms"], 1);
}

/// A memcg limit inside the guest that ended in `compulsory panic_on_oom` is kind
/// `panic`, not `memcg`: it says nothing about the guest's size, so it must not lift
/// the floor (its memory in use is the memcg's, however large) nor count as a balloon
/// OOM the floor has to cover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memcg_limit_answered_by_a_panic_never_moves_the_floor() {
    let settings = PolicySettings::default();
    let since = oom_at_ms() - 30 * 86_400_000;
    let until = oom_at_ms() + 60_000;
    let mut reports_by_case = Vec::new();
    for with_memcg_panic in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("c.sqlite"))
            .await
            .expect("open");
        let mut batches = lab_batches("lab-host");
        if with_memcg_panic {
            let mut panic = util::fixtures::oom_from_fixture(
                "constructed-6.1-memcg-v2-compulsory-panic-on-oom.log",
                LAB_UUID,
                "lab-512",
            );
            assert_eq!(panic.report.kind, "panic");
            // Figures that would size the guest if this were the guest's own OOM: the
            // memory in use of the lab's 6.1 report (a paste that carried its Mem-Info).
            let lab = lab_inflated();
            panic.report.zones = lab.report.zones;
            panic.analysis.managed_kb = lab.analysis.managed_kb;
            panic.balloon_at_oom = lab_inflated().balloon_at_oom;
            panic.balloon_history = lab_inflated().balloon_history;
            batches.push(batch(
                "lab-host",
                vec![oom("lab/memcg-panic", oom_at_ms() - 30_000, panic)],
            ));
        }
        for batch in batches {
            store.ingest(util::prepared(batch)).await.expect("ingest");
        }
        let input = reports::load::load(&store, since, until, &settings)
            .await
            .expect("load");
        if with_memcg_panic {
            let ooms = &input.vms[0].ooms;
            assert_eq!(ooms.len(), 2, "{ooms:?}");
            let memcg = ooms
                .iter()
                .find(|oom| !matches!(oom.verdict.as_str(), "balloon" | "balloon_contributed"))
                .expect("the memcg panic is not a balloon OOM");
            assert_eq!(memcg.demand_kib, None, "{memcg:?}");
        }
        reports_by_case.push(build(&input, &settings).vms.remove(0));
    }
    let (alone, with_panic) = (&reports_by_case[0], &reports_by_case[1]);
    assert_eq!(
        with_panic.recommended_floor_kib,
        alone.recommended_floor_kib
    );
    let (alone, with_panic) = (
        alone.floor_check.as_ref().expect("floor check"),
        with_panic.floor_check.as_ref().expect("floor check"),
    );
    assert_eq!(with_panic.oom_demand_max_kib, alone.oom_demand_max_kib);
    assert_eq!(with_panic.balloon_ooms, 1);
    assert_eq!(
        with_panic.summary,
        "with this floor, 0 of 1 recorded OOMs would recur"
    );
}

fn at_floor(start: i64, minutes: i64, stalls: f64, psi: f64, deficit_mib: u64) -> EpisodeFact {
    EpisodeFact {
        started_at_ms: start,
        last_at_ms: start + minutes * 60_000,
        ended_at_ms: Some(start + minutes * 60_000),
        at_balloon_floor: true,
        balloon_floor_kib: Some(1024 * MIB),
        deficit_kib: Some(deficit_mib * MIB),
        peak_alloc_stalls_per_s: Some(stalls),
        peak_psi_some_avg10: Some(psi),
        peak_psi_full_avg10: Some(psi / 2.0),
    }
}

/// Issue 19's starvation finding on constructed rows: a Proxmox VM held at its 1 GiB
/// floor for 40 minutes of stalls and PSI without an OOM is listed with the floor that
/// would have ended it (1 GiB + the 300 MiB deficit, rounded up to 64 MiB: 1344 MiB)
/// and the command to set it; a VM whose episode at the floor ended in an OOM, and one
/// whose pressure was brief, are not starved.
#[test]
fn a_vm_starved_at_its_balloon_floor_gets_the_floor_that_would_have_ended_it() {
    let config = VmConfig {
        memory_kib: Some(4096 * MIB),
        balloon_floor_kib: Some(1024 * MIB),
        balloon_present: true,
        deflate_on_oom: Some(true),
        ..VmConfig::default()
    };
    let mut starved = vm("120", "vm120", "pve1", Platform::Proxmox, config.clone());
    starved.episodes = vec![
        at_floor(T0, 30, 18.0, 35.0, 200),
        at_floor(T0 + 3_600_000, 10, 0.0, 22.5, 300),
    ];
    let mut killed = vm("121", "vm121", "pve1", Platform::Proxmox, config.clone());
    killed.episodes = vec![at_floor(T0, 30, 18.0, 35.0, 200)];
    killed.ooms = vec![OomFact {
        id: 3,
        time_ms: T0 + 20 * 60_000,
        verdict: ballast_model::CorrelationVerdict::Balloon,
        balloon_held_kb: Some(3072 * MIB),
        demand_kib: None,
    }];
    let mut brief = vm("122", "vm122", "pve1", Platform::Proxmox, config);
    brief.episodes = vec![at_floor(T0, 1, 50.0, 80.0, 500)];
    let input = PolicyInput {
        since_ms: T0 - 86_400_000,
        until_ms: T0 + 86_400_000,
        vms: vec![starved, killed, brief],
        hosts: Vec::new(),
    };
    let report = build(&input, &PolicySettings::default());
    assert_eq!(report.fleet.starved_vms, 1);
    let by_name = |name: &str| {
        report
            .vms
            .iter()
            .find(|vm| vm.name == name)
            .unwrap_or_else(|| panic!("{name} in the report"))
    };
    let finding = by_name("vm120").starvation.as_ref().expect("vm120 starved");
    assert_eq!(finding.episodes.len(), 2);
    assert_eq!(
        (finding.total_secs, finding.longest_secs),
        (40 * 60, 30 * 60)
    );
    assert_eq!(finding.peak_alloc_stalls_per_s, Some(18.0));
    assert_eq!(finding.peak_psi_some_avg10, Some(35.0));
    assert_eq!(finding.floor_kib, Some(1024 * MIB));
    assert_eq!(finding.floor_to_end_kib, Some(1344 * MIB));
    let action = by_name("vm120")
        .actions
        .iter()
        .find(|action| action.issue == "starvation")
        .expect("a starvation action");
    assert_eq!(action.fix, ["qm set 120 --balloon 1344"]);
    assert!(action.why.contains("no OOM"), "{}", action.why);
    assert_eq!(
        by_name("vm121").starvation,
        None,
        "its episode ended in an OOM"
    );
    assert_eq!(
        by_name("vm122").starvation,
        None,
        "a minute is not sustained"
    );

    let md = render::markdown(&report);
    assert!(
        md.contains("**1** VMs starved at their balloon floor"),
        "{md}"
    );
    assert!(md.contains("Starved at its balloon floor"), "{md}");
    assert!(
        md.contains("(stalls 18.0/s, PSI some 35.0 %, full 17.5 %)"),
        "{md}"
    );
    let html = reports::html::standalone(&report);
    assert!(html.contains("Starved at the floor"), "{html}");
}

/// The whole path for starvation: a VM's inventory and its episode at the floor go
/// into a real SQLite store; `load` reads the episode beside the VM's other facts and
/// the report lists the VM as starved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_episodes_reach_the_starvation_finding() {
    use ballast_model::{EpisodePhase, RiskLevel};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("c.sqlite"))
        .await
        .expect("open");
    let start = oom_at_ms() - 3_600_000;
    let events = vec![
        util::inventory("lab/inv", start - 60_000, &[(LAB_UUID, "lab-512")]),
        util::episode(
            "lab/p/s",
            LAB_UUID,
            EpisodePhase::Start,
            start,
            start,
            RiskLevel::Elevated,
            64 * MIB,
        ),
        util::episode(
            "lab/p/p",
            LAB_UUID,
            EpisodePhase::Peak,
            start,
            start + 300_000,
            RiskLevel::Critical,
            96 * MIB,
        ),
        util::episode(
            "lab/p/e",
            LAB_UUID,
            EpisodePhase::End,
            start,
            start + 900_000,
            RiskLevel::Critical,
            32 * MIB,
        ),
    ];
    store
        .ingest(util::prepared(batch("lab-host", events)))
        .await
        .expect("ingest");
    let settings = PolicySettings::default();
    let input = reports::load::load(&store, start - 60_000, oom_at_ms(), &settings)
        .await
        .expect("load");
    let lab = input
        .vms
        .iter()
        .find(|vm| vm.uuid == LAB_UUID)
        .expect("the lab VM");
    assert_eq!(lab.episodes.len(), 1, "three phases, one episode");
    assert_eq!(lab.episodes[0].deficit_kib, Some(96 * MIB));
    let report = build(&input, &settings);
    let finding = report.vms[0].starvation.as_ref().expect("starved");
    assert_eq!(finding.longest_secs, 15 * 60);
    // The 128 MiB floor + 96 MiB = 224 MiB, rounded up to 64 MiB: 256 MiB.
    assert_eq!(finding.floor_to_end_kib, Some(256 * MIB));
}

/// The guard's overridden actions, stored from a batch, reach the report with the
/// floor that would hold, in its Markdown and its HTML.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_actions_the_host_overrode_reach_the_report_with_the_floor_that_would_hold() {
    use ballast_model::{GuardMode, GuardOutcome};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("c.sqlite"))
        .await
        .expect("open");
    let start = oom_at_ms() - 3_600_000;
    let events = vec![
        util::inventory("lab/inv", start - 60_000, &[(LAB_UUID, "lab-512")]),
        util::guard_action(
            "lab/g/1",
            LAB_UUID,
            start,
            GuardMode::Act,
            GuardOutcome::OverriddenByHost,
            320 * MIB,
        ),
        util::guard_action(
            "lab/g/2",
            LAB_UUID,
            start + 60_000,
            GuardMode::Act,
            GuardOutcome::OverriddenByHost,
            384 * MIB,
        ),
        // Not overridden: not listed.
        util::guard_action(
            "lab/g/3",
            LAB_UUID,
            start + 120_000,
            GuardMode::Act,
            GuardOutcome::Deflated,
            448 * MIB,
        ),
    ];
    store
        .ingest(util::prepared(batch("lab-host", events)))
        .await
        .expect("ingest");
    let settings = PolicySettings::default();
    let input = reports::load::load(&store, start - 60_000, oom_at_ms(), &settings)
        .await
        .expect("load");
    let report = build(&input, &settings);
    let lab = report
        .vms
        .iter()
        .find(|vm| vm.uuid == LAB_UUID)
        .expect("the lab VM");
    let floors: Vec<(i64, Option<u64>)> = lab
        .guard_overridden
        .iter()
        .map(|o| (o.at_ms, o.floor_after_kib))
        .collect();
    assert_eq!(
        floors,
        vec![(start, Some(320 * MIB)), (start + 60_000, Some(384 * MIB))]
    );
    let markdown = render::markdown(&report);
    assert!(
        markdown.contains("**Guard overridden by host policy** 2 time(s)")
            && markdown.contains("Floor that would hold: **384 MiB**"),
        "{markdown}"
    );
    let html = reports::balloon_policy(
        &store,
        start - 60_000,
        oom_at_ms(),
        &settings,
        ReportFormat::Html,
    )
    .await
    .expect("html");
    assert!(html.contains("Guard overridden by host policy"), "{html}");
    assert!(html.contains("<strong>384 MiB</strong>"), "{html}");
}
