//! The storage suite: the same cases run on SQLite files and on a real PostgreSQL
//! server; `snapshot` renders every query answer so the two can be compared.

use std::sync::Arc;

use ballast_collector::records::Signals;
use ballast_collector::retention;
use ballast_collector::storage::episodes;
use ballast_collector::storage::guard_reads::{self as guard, GuardFilter};
use ballast_collector::storage::queries::{self, GroupBy, OomFilter};
use ballast_collector::storage::{Param, Query, Store, StoreError};

use super::*;

/// The canonical data set: two hosts, two VMs, rollups, two OOMs, an inventory.
pub fn dataset() -> Vec<Batch> {
    let mut rollups = Vec::new();
    for minute in 0..30 {
        let start = oom_at_ms() - (30 - minute) * 60_000;
        let actual = if minute < 27 { 512 * MIB } else { 200 * MIB };
        rollups.push(rollup(&format!("pve1/r/{minute}"), LAB_UUID, start, actual));
    }
    let mut nul = lab_inflated();
    nul.vm.name = "evil\0name<script>".into();
    if let Some(killed) = nul.report.killed.as_mut() {
        killed.comm = "mem\0hog".into();
    }
    vec![
        batch(
            "pve1",
            vec![inventory(
                "pve1/inv/1",
                oom_at_ms() - 3_600_000,
                &[(LAB_UUID, "lab-512")],
            )],
        ),
        batch("pve1", rollups),
        batch(
            "pve1",
            vec![
                oom("pve1/oom/1", oom_at_ms(), lab_inflated()),
                oom("pve1/oom/2", oom_at_ms() + 3_600_000, nul),
            ],
        ),
        batch(
            "pve2",
            vec![oom("pve2/oom/1", oom_at_ms() - 60_000, tor_flat())],
        ),
    ]
}

pub async fn load(store: &dyn Store) -> Result<(), StoreError> {
    for batch in dataset() {
        store.ingest(prepared(batch)).await?;
    }
    Ok(())
}

/// Every query answer over the data set, as JSON (ids included).
pub async fn snapshot(store: &dyn Store) -> serde_json::Value {
    let all = OomFilter {
        limit: 100,
        ..OomFilter::default()
    };
    let list = queries::list_ooms(store, &all).await.expect("list");
    let mut details = Vec::new();
    for item in &list.items {
        details.push(queries::get_oom(store, item.id, 3600).await.expect("get"));
    }
    serde_json::json!({
        "list": list,
        "details": details,
        "vms": queries::list_vms(store, None).await.expect("vms"),
        "memory": queries::vm_memory(store, "pve1", LAB_UUID, 0, i64::MAX, 1000, queries::Resolution::Stored).await.expect("memory"),
        "counts": queries::oom_counts(store, GroupBy::Verdict, 86_400, 0, i64::MAX).await.expect("counts"),
        "hosts": queries::oom_counts(store, GroupBy::Host, 3600, 0, i64::MAX).await.expect("counts"),
        "repeat": queries::repeat_offenders(store, 0, 2).await.expect("repeat"),
    })
}

pub async fn ingest_is_idempotent(store: Arc<dyn Store>) {
    let first = dataset();
    let mut accepted = 0;
    for batch in first {
        let response = store.ingest(prepared(batch)).await.expect("ingest");
        assert_eq!(response.duplicates, 0);
        accepted += response.accepted;
    }
    assert_eq!(accepted, 1 + 30 + 2 + 1);
    for batch in dataset() {
        let response = store.ingest(prepared(batch)).await.expect("re-ingest");
        assert_eq!(response.accepted, 0, "nothing new on a re-sent batch");
    }
    let page = queries::list_ooms(
        store.as_ref(),
        &OomFilter {
            limit: 100,
            ..OomFilter::default()
        },
    )
    .await
    .expect("list");
    assert_eq!(page.items.len(), 3, "nothing doubled");
    let memory = queries::vm_memory(
        store.as_ref(),
        "pve1",
        LAB_UUID,
        0,
        i64::MAX,
        1000,
        queries::Resolution::Stored,
    )
    .await
    .expect("memory");
    assert_eq!(memory.points.len(), 30);
    // The same key from another host is another event.
    let other = batch("pve3", vec![rollup("pve1/r/0", LAB_UUID, oom_at_ms(), MIB)]);
    assert_eq!(
        store
            .ingest(prepared(other))
            .await
            .expect("ingest")
            .accepted,
        1
    );
}

/// A copy cut before its kill line went out first (the guest's console stalled); the
/// agent sends the whole report later under the same key. One OOM, one row, one id,
/// complete; a complete row is never overwritten, nor brought back to partial.
pub async fn a_partial_oom_is_completed_under_its_key(store: Arc<dyn Store>) {
    let all = OomFilter {
        limit: 100,
        ..OomFilter::default()
    };
    let mut cut = lab_inflated();
    cut.report.partial = true;
    cut.report.killed = None;
    cut.report.tasks = None;
    cut.analysis.verdict = ballast_model::ReportVerdict::Unknown;
    let cut_batch = || batch("pve1", vec![oom("pve1/oom/7410", oom_at_ms(), cut.clone())]);
    let response = store.ingest(prepared(cut_batch())).await.expect("ingest");
    assert_eq!((response.accepted, response.duplicates), (1, 0));
    let stored = queries::list_ooms(store.as_ref(), &all)
        .await
        .expect("list");
    assert_eq!(stored.items.len(), 1);
    let id = stored.items[0].id;
    assert_eq!(stored.items[0].killed, None);
    assert_eq!(stored.items[0].report_verdict, "unknown");

    let whole = || {
        batch(
            "pve1",
            vec![oom("pve1/oom/7410", oom_at_ms() + 20_000, lab_inflated())],
        )
    };
    let response = store.ingest(prepared(whole())).await.expect("ingest");
    assert_eq!(
        (response.accepted, response.duplicates),
        (1, 0),
        "the completion is taken"
    );
    let page = queries::list_ooms(store.as_ref(), &all)
        .await
        .expect("list");
    assert_eq!(page.items.len(), 1, "one OOM: {page:?}");
    let item = &page.items[0];
    assert_eq!(item.id, id, "the same row");
    assert_eq!(
        item.time_ms,
        oom_at_ms(),
        "captured when the first copy was"
    );
    assert_eq!(
        item.killed
            .as_ref()
            .and_then(|killed| killed.comm.as_deref()),
        Some("memhog")
    );
    assert_eq!(item.report_verdict, "balloon");
    assert_eq!(item.correlation.verdict, "balloon");
    let detail = queries::get_oom(store.as_ref(), id, 3600)
        .await
        .expect("get")
        .expect("stored");
    assert!(!detail.report.partial);

    // Either copy again, or another complete copy under the key: nothing changes.
    for again in [whole(), cut_batch()] {
        let response = store.ingest(prepared(again)).await.expect("re-ingest");
        assert_eq!((response.accepted, response.duplicates), (0, 1));
    }
    let mut other = tor_flat();
    other.vm = lab_inflated().vm;
    let response = store
        .ingest(prepared(batch(
            "pve1",
            vec![oom("pve1/oom/7410", oom_at_ms(), other)],
        )))
        .await
        .expect("ingest");
    assert_eq!((response.accepted, response.duplicates), (0, 1));
    let after = queries::get_oom(store.as_ref(), id, 3600)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(after, detail, "a complete row is never overwritten");
}

pub async fn queries_answer_as_documented(store: Arc<dyn Store>) {
    load(store.as_ref()).await.expect("load");
    let store = store.as_ref();
    let page = queries::list_ooms(
        store,
        &OomFilter {
            limit: 2,
            ..OomFilter::default()
        },
    )
    .await
    .expect("list");
    assert_eq!(page.items.len(), 2);
    assert_eq!(
        page.items[0].time_ms,
        oom_at_ms() + 3_600_000,
        "newest first"
    );
    let cursor = page.next_cursor.clone().expect("a second page");
    let rest = queries::list_ooms(
        store,
        &OomFilter {
            limit: 2,
            cursor: queries::parse_cursor(&cursor),
            ..OomFilter::default()
        },
    )
    .await
    .expect("page 2");
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.next_cursor, None);
    assert_eq!(rest.items[0].host, "pve2");
    assert_eq!(rest.items[0].correlation.verdict, "not_balloon");
    assert_eq!(rest.items[0].report_verdict, "kernel_unaccounted");

    let balloon = queries::list_ooms(
        store,
        &OomFilter {
            verdict: Some(ballast_model::CorrelationVerdict::Balloon),
            host: Some("pve1".into()),
            limit: 10,
            ..OomFilter::default()
        },
    )
    .await
    .expect("filter");
    assert_eq!(balloon.items.len(), 2);
    let first = &balloon.items[1];
    assert_eq!(first.vm.uuid, LAB_UUID);
    assert_eq!(first.vm.name, "lab-512");
    assert_eq!(first.correlation.balloon_held_kb, Some(312 * 1024));
    let killed = first.killed.as_ref().expect("killed");
    assert_eq!(killed.comm.as_deref(), Some("memhog"));
    assert_eq!(killed.anon_rss_kb, Some(107_652));
    assert_eq!(first.link, format!("/api/v1/ooms/{}", first.id));
    // Guest text with NUL is stored with U+FFFD, on both engines.
    assert_eq!(balloon.items[0].vm.name, "evil\u{FFFD}name<script>");

    let windowed = queries::list_ooms(
        store,
        &OomFilter {
            since_ms: Some(oom_at_ms() - 1),
            until_ms: Some(oom_at_ms() + 1),
            kind: Some(ballast_model::OomKind::Guest),
            limit: 10,
            ..OomFilter::default()
        },
    )
    .await
    .expect("time filter");
    assert_eq!(windowed.items.len(), 1);

    let detail = queries::get_oom(store, first.id, 3600)
        .await
        .expect("get")
        .expect("exists");
    assert!(detail.raw_report.contains("invoked oom-killer"));
    assert_eq!(
        detail.report.killed.as_ref().map(|k| k.comm.as_str()),
        Some("memhog")
    );
    assert_eq!(detail.analysis.verdict, "balloon");
    assert_eq!(
        detail.correlation_detail.verdict,
        ballast_model::CorrelationVerdict::Balloon
    );
    assert_eq!(detail.correlation_detail.would_have_survived, Some(true));
    assert_eq!(detail.balloon_history.len(), 360);
    assert_eq!(detail.rollups.len(), 30, "the window's rollups");
    assert!(queries::get_oom(store, 999_999, 3600)
        .await
        .expect("get")
        .is_none());

    let vms = queries::list_vms(store, None).await.expect("vms");
    assert_eq!(vms.items.len(), 2);
    let lab = vms
        .items
        .iter()
        .find(|vm| vm.uuid == LAB_UUID)
        .expect("lab vm");
    assert_eq!(lab.state, "running");
    assert_eq!(lab.config["balloon_floor_kib"], 256 * 1024);
    assert_eq!(lab.oom_count, 2);
    let tor = vms
        .items
        .iter()
        .find(|vm| vm.uuid == TOR_UUID)
        .expect("tor vm");
    assert_eq!(tor.state, "unknown", "known only from its OOM");

    let repeat = queries::repeat_offenders(store, 0, 2)
        .await
        .expect("repeat");
    assert_eq!(repeat.items.len(), 1);
    assert_eq!(repeat.items[0].vm.uuid, LAB_UUID);
    assert_eq!(repeat.items[0].count, 2);

    let counts = queries::oom_counts(store, GroupBy::Verdict, 86_400, 0, i64::MAX)
        .await
        .expect("counts");
    let total: i64 = counts.items.iter().map(|c| c.count).sum();
    assert_eq!(total, 3);
}

pub async fn tokens_are_stored_hashed(store: Arc<dyn Store>) {
    let store = store.as_ref();
    queries::put_token(store, "pve1", "aa", 1, false)
        .await
        .expect("create");
    assert!(matches!(
        queries::put_token(store, "pve1", "bb", 2, false).await,
        Err(StoreError::TokenExists(_))
    ));
    queries::put_token(store, "pve1", "cc", 3, true)
        .await
        .expect("rotate");
    assert_eq!(
        queries::host_for_token_hash(store, "aa").await.expect("q"),
        None
    );
    assert_eq!(
        queries::host_for_token_hash(store, "cc").await.expect("q"),
        Some(("pve1".into(), "cc".into()))
    );
    let list = queries::list_tokens(store).await.expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].created_ms, 3);
    assert!(queries::revoke_token(store, "pve1").await.expect("revoke"));
    assert!(!queries::revoke_token(store, "pve1").await.expect("revoke"));
    assert_eq!(
        queries::host_for_token_hash(store, "cc").await.expect("q"),
        None
    );
}

pub async fn retention_deletes_in_batches(store: Arc<dyn Store>) {
    load(store.as_ref()).await.expect("load");
    let settings = ballast_collector::retention::RetentionSettings {
        rollups: std::time::Duration::from_secs(10 * 60),
        minute_rollups: std::time::Duration::from_secs(48 * 3600),
        ooms: std::time::Duration::from_secs(3600),
        interval: std::time::Duration::from_secs(3600),
        batch_rows: 4,
    };
    let deleted = retention::run_pass(store.as_ref(), &settings, oom_at_ms() + 1000)
        .await
        .expect("retention");
    // Rollups started 30..1 minutes before; those started 10 or more minutes before go.
    assert_eq!(deleted.rollups, 21);
    assert_eq!(deleted.events, 1, "the inventory event");
    assert_eq!(deleted.ooms, 0);
    let deleted = retention::run_pass(store.as_ref(), &settings, oom_at_ms() + 3_600_000 + 1000)
        .await
        .expect("retention");
    assert_eq!(deleted.ooms, 2);
    let left = queries::list_ooms(
        store.as_ref(),
        &OomFilter {
            limit: 10,
            ..OomFilter::default()
        },
    )
    .await
    .expect("list");
    assert_eq!(left.items.len(), 1);
}

/// Minute rollups of one VM: `hours` whole hours from `start_ms`, actual varying.
fn minutes(host_key: &str, uuid: &str, start_ms: i64, hours: i64) -> Vec<Envelope> {
    (0..hours * 60)
        .map(|minute| {
            let actual = (200 + (minute * 37) % 300) as u64 * MIB;
            let key = format!("{host_key}/r/{minute}");
            let start = start_ms + minute * 60_000;
            // Every fifth minute carries pressure signals, so an hour folds minutes
            // with and without them.
            if minute % 5 == 0 {
                let stalls = ((minute * 13) % 40) as f64 + 0.25;
                let risk = match minute % 3 {
                    0 => RiskLevel::Ok,
                    1 => RiskLevel::Elevated,
                    _ => RiskLevel::Critical,
                };
                rollup_with_pressure(&key, uuid, start, actual, pressure(stalls, stalls, risk))
            } else {
                rollup(&key, uuid, start, actual)
            }
        })
        .collect()
}

async fn count_rows(store: &dyn Store, sql: &str, param: i64) -> i64 {
    store
        .query(Query::new(sql, vec![Param::int(param)]))
        .await
        .expect("count")
        .first()
        .map_or(0, |row| row.int_or_zero(0))
}

/// Retention compacts minute rollups older than the minute window into hourly
/// rollups that carry what the minutes said; the hourly series a user reads is
/// the same before and after; a late minute merges into its hour; a second pass
/// changes nothing.
pub async fn minute_rollups_compact_into_hours(store: Arc<dyn Store>) {
    const HOUR: i64 = 3_600_000;
    let start = (oom_at_ms() / HOUR) * HOUR - 3 * HOUR;
    let other = "7d3c41a2-5b1e-4f3e-9a6b-00000000a002";
    store
        .ingest(prepared(batch("pve1", minutes("pve1", LAB_UUID, start, 3))))
        .await
        .expect("ingest");
    store
        .ingest(prepared(batch("pve2", minutes("pve2", other, start, 1))))
        .await
        .expect("ingest");
    let series = |uuid: &'static str, resolution| {
        let store = Arc::clone(&store);
        let host = if uuid == LAB_UUID { "pve1" } else { "pve2" };
        async move {
            queries::vm_memory(store.as_ref(), host, uuid, 0, i64::MAX, 100_000, resolution)
                .await
                .expect("memory")
                .points
        }
    };
    let held_minutes = |store: Arc<dyn Store>| async move {
        let input = ballast_collector::reports::load::load(
            store.as_ref(),
            0,
            i64::MAX,
            &ballast_collector::reports::balloon_policy::PolicySettings::default(),
        )
        .await
        .expect("report input");
        input
            .vms
            .iter()
            .find(|vm| vm.uuid == LAB_UUID)
            .map(|vm| vm.held_periods)
    };
    assert_eq!(held_minutes(Arc::clone(&store)).await, Some(180));
    let hourly_before = series(LAB_UUID, queries::Resolution::Hour).await;
    assert_eq!(hourly_before.len(), 3);
    assert_eq!(hourly_before[0].samples, 60 * 6);
    assert_eq!(
        series(LAB_UUID, queries::Resolution::Stored).await.len(),
        180
    );

    // Minutes are kept one hour: at start + 3 h + 10 min the first two hours go.
    let settings = ballast_collector::retention::RetentionSettings {
        rollups: std::time::Duration::from_secs(30 * 86_400),
        minute_rollups: std::time::Duration::from_secs(3600),
        ooms: std::time::Duration::from_secs(365 * 86_400),
        interval: std::time::Duration::from_secs(3600),
        batch_rows: 7,
    };
    let now = start + 3 * HOUR + 10 * 60_000;
    let done = retention::run_pass(store.as_ref(), &settings, now)
        .await
        .expect("retention");
    assert_eq!(
        done.compacted,
        120 + 60,
        "two hours of pve1, the hour of pve2"
    );
    assert_eq!(done.rollups, 0);

    let stored = series(LAB_UUID, queries::Resolution::Stored).await;
    assert_eq!(
        stored.len(),
        2 + 60,
        "two hourly rows, then the last hour's minutes"
    );
    assert_eq!(
        stored
            .iter()
            .map(|p| p.period_secs)
            .take(3)
            .collect::<Vec<_>>(),
        vec![3600, 3600, 60]
    );
    assert_eq!(
        series(LAB_UUID, queries::Resolution::Hour).await,
        hourly_before,
        "compaction keeps min, max, last and samples of every hour"
    );
    assert_eq!(
        held_minutes(Arc::clone(&store)).await,
        Some(180),
        "the balloon-policy report counts an hourly rollup as its 60 minutes"
    );
    let other_hours = series(other, queries::Resolution::Stored).await;
    assert_eq!(other_hours.len(), 1);
    assert_eq!(other_hours[0].period_start_ms, start);
    assert_eq!(
        count_rows(
            store.as_ref(),
            "SELECT COUNT(*) FROM rollups WHERE period_secs < 3600 AND period_start_ms < ?",
            start + 2 * HOUR,
        )
        .await,
        0,
        "no minute row left before the cut"
    );

    // A minute delivered late (agent outage) into a compacted hour is merged.
    let mut late = rollup("pve1/r/late", LAB_UUID, start + 30 * 60_000 + 1, 5 * MIB);
    late.captured_at_ms = start + 2 * HOUR;
    store
        .ingest(prepared(batch("pve1", vec![late])))
        .await
        .expect("late ingest");
    let done = retention::run_pass(store.as_ref(), &settings, now)
        .await
        .expect("retention");
    assert_eq!(done.compacted, 1);
    let first = series(LAB_UUID, queries::Resolution::Stored).await[0].clone();
    assert_eq!(first.samples, 60 * 6 + 6);
    assert_eq!(first.actual_kib.min, Some(5 * MIB));
    assert_eq!(
        first.actual_kib.last,
        Some(5 * MIB),
        "captured last, so its value is the hour's last"
    );
    assert_eq!(first.actual_kib.max, hourly_before[0].actual_kib.max);

    // Nothing left to do: a pass changes nothing.
    let again = retention::run_pass(store.as_ref(), &settings, now)
        .await
        .expect("retention");
    assert_eq!(again, ballast_collector::metrics::Deleted::default());
    assert_eq!(
        count_rows(
            store.as_ref(),
            "SELECT COUNT(*) FROM rollups WHERE period_secs = ?",
            3600
        )
        .await,
        3
    );
}

/// A VM's pressure: rollups with and without signals read back with their peaks and
/// `signals`; one episode's start, peak and end (the end before the peak, as a resend
/// after an outage may bring them) fold into one row, each phase stored once however
/// often it is sent; open episodes are the VMs under pressure now; retention deletes
/// episodes last seen before the cut.
pub async fn pressure_is_stored_once_per_phase(store: Arc<dyn Store>) {
    let other = "7d3c41a2-5b1e-4f3e-9a6b-00000000a002";
    let start = oom_at_ms() - 20 * 60_000;
    let rollups = vec![
        rollup_with_pressure(
            "pve1/r/p0",
            LAB_UUID,
            start,
            200 * MIB,
            pressure(12.5, 33.25, RiskLevel::Critical),
        ),
        rollup("pve1/r/p1", LAB_UUID, start + 60_000, 200 * MIB),
    ];
    let response = store
        .ingest(prepared(batch("pve1", rollups)))
        .await
        .expect("rollups");
    assert_eq!(response.accepted, 2);
    let points = queries::vm_memory(
        store.as_ref(),
        "pve1",
        LAB_UUID,
        0,
        i64::MAX,
        100,
        queries::Resolution::Stored,
    )
    .await
    .expect("memory")
    .points;
    assert_eq!(points.len(), 2);
    assert_eq!(points[0].signals, Signals::Measured);
    assert_eq!(
        points[0].pressure,
        Some(pressure(12.5, 33.25, RiskLevel::Critical)),
        "what the agent sent reads back"
    );
    assert_eq!(points[1].signals, Signals::None);
    assert_eq!(points[1].pressure, None);

    let s = start;
    let phases = |keys: &[&str]| -> Vec<Envelope> {
        let all = [
            episode(
                "pve1/p/1s",
                LAB_UUID,
                EpisodePhase::Start,
                s,
                s,
                RiskLevel::Elevated,
                64 * MIB,
            ),
            episode(
                "pve1/p/1p",
                LAB_UUID,
                EpisodePhase::Peak,
                s,
                s + 60_000,
                RiskLevel::Critical,
                96 * MIB,
            ),
            episode(
                "pve1/p/1e",
                LAB_UUID,
                EpisodePhase::End,
                s,
                s + 300_000,
                RiskLevel::Critical,
                32 * MIB,
            ),
            episode(
                "pve1/p/2s",
                other,
                EpisodePhase::Start,
                s + 120_000,
                s + 120_000,
                RiskLevel::Elevated,
                MIB,
            ),
            // An earlier episode of the other VM whose end never came (its agent
            // restarted): the later one supersedes it.
            episode(
                "pve1/p/0s",
                other,
                EpisodePhase::Start,
                s - 60_000,
                s - 60_000,
                RiskLevel::Critical,
                MIB,
            ),
            episode(
                "pve1/p/3s",
                TOR_UUID,
                EpisodePhase::Start,
                s + 60_000,
                s + 200_000,
                RiskLevel::Critical,
                MIB,
            ),
        ];
        all.into_iter()
            .filter(|e| keys.contains(&e.key.as_str()))
            .collect()
    };
    let first = store
        .ingest(prepared(batch(
            "pve1",
            phases(&["pve1/p/1s", "pve1/p/1e", "pve1/p/2s", "pve1/p/0s"]),
        )))
        .await
        .expect("phases");
    assert_eq!((first.accepted, first.duplicates), (4, 0));
    let again = store
        .ingest(prepared(batch(
            "pve1",
            phases(&[
                "pve1/p/1s",
                "pve1/p/1p",
                "pve1/p/1e",
                "pve1/p/2s",
                "pve1/p/3s",
            ]),
        )))
        .await
        .expect("resend");
    assert_eq!(
        (again.accepted, again.duplicates),
        (2, 3),
        "each phase once"
    );

    let episodes = episodes::vm_episodes(store.as_ref(), "pve1", LAB_UUID, 0, i64::MAX, 100)
        .await
        .expect("episodes");
    assert_eq!(episodes.len(), 1, "three phases, one episode");
    let one = &episodes[0];
    assert_eq!(one.started_at_ms, s);
    assert_eq!(one.ended_at_ms, Some(s + 300_000));
    assert_eq!(one.last_at_ms, s + 300_000);
    assert_eq!(one.level, RiskLevel::Critical);
    assert_eq!(
        one.drivers,
        vec![PressureSignal::PsiFull, PressureSignal::AllocStalls],
        "the peak's drivers, though the end arrived before it"
    );
    assert_eq!(one.exhaustion_secs, Some(90));
    assert_eq!(
        one.signals.alloc_stalls_per_s,
        Some(25.0),
        "the peak's, not the calm end's"
    );
    assert_eq!(one.peak_psi_some_avg10, Some(60.0));
    assert_eq!(one.deficit_kib, Some(96 * MIB), "the largest deficit");
    assert!(one.at_balloon_floor);
    assert_eq!(one.balloon_floor_kib, Some(128 * MIB));
    assert_eq!(one.name, format!("vm-{}", &LAB_UUID[LAB_UUID.len() - 3..]));
    // Another host's VM of the same uuid is not this one.
    assert!(
        episodes::vm_episodes(store.as_ref(), "pve2", LAB_UUID, 0, i64::MAX, 100)
            .await
            .expect("episodes")
            .is_empty()
    );
    // An episode that ended before the range asked is not in it.
    assert!(
        episodes::vm_episodes(store.as_ref(), "pve1", LAB_UUID, s + 301_000, i64::MAX, 100)
            .await
            .expect("episodes")
            .is_empty()
    );

    let open = episodes::open_episodes(store.as_ref(), 0, 10)
        .await
        .expect("open");
    let open: Vec<(&str, RiskLevel)> = open.iter().map(|e| (e.uuid.as_str(), e.level)).collect();
    assert_eq!(
        open,
        vec![
            (TOR_UUID, RiskLevel::Critical),
            (other, RiskLevel::Elevated)
        ],
        "open only (not the superseded one), newest activity first"
    );
    assert_eq!(
        episodes::open_episodes(store.as_ref(), 0, 1)
            .await
            .expect("open")
            .len(),
        1,
        "bounded"
    );
    assert_eq!(
        episodes::vms_under_pressure(store.as_ref(), 0)
            .await
            .expect("count"),
        (1, 1)
    );

    let settings = ballast_collector::retention::RetentionSettings {
        rollups: std::time::Duration::from_secs(10 * 60),
        minute_rollups: std::time::Duration::from_secs(48 * 3600),
        ooms: std::time::Duration::from_secs(86_400),
        interval: std::time::Duration::from_secs(3600),
        batch_rows: 1,
    };
    // At s + 12 min the cut is s + 2 min: the superseded episode (last seen at
    // s - 1 min) goes; the first (last at s + 5 min), the other VM's (s + 2 min) and
    // the third stay.
    let deleted = retention::run_pass(store.as_ref(), &settings, s + 12 * 60_000)
        .await
        .expect("retention");
    let count = |store: Arc<dyn Store>| async move {
        store
            .query(Query::new(
                "SELECT COUNT(*) FROM pressure_episodes",
                Vec::new(),
            ))
            .await
            .expect("count")[0]
            .int_or_zero(0)
    };
    assert_eq!(count(Arc::clone(&store)).await, 3);
    assert_eq!(deleted.ooms, 0);
    // At s + 16 min the cut is s + 6 min: all three go, one per batch.
    retention::run_pass(store.as_ref(), &settings, s + 16 * 60_000)
        .await
        .expect("retention");
    assert_eq!(count(Arc::clone(&store)).await, 0);
}

/// The guard's actions: each stored once however often its batch is sent (the
/// event and the row), read back field by field, a VM's newest first and bounded,
/// the fleet's filtered by outcome, mode and host; retention deletes those decided
/// before the cut.
pub async fn guard_actions_are_stored_once(store: Arc<dyn Store>) {
    let s = oom_at_ms() - 20 * 60_000;
    let actions = vec![
        guard_action(
            "pve1/g/1",
            LAB_UUID,
            s,
            GuardMode::Act,
            GuardOutcome::Deflated,
            384 * MIB,
        ),
        guard_action(
            "pve1/g/2",
            LAB_UUID,
            s + 60_000,
            GuardMode::Act,
            GuardOutcome::OverriddenByHost,
            448 * MIB,
        ),
        guard_action(
            "pve1/g/3",
            TOR_UUID,
            s + 30_000,
            GuardMode::Observe,
            GuardOutcome::WouldDeflate,
            256 * MIB,
        ),
    ];
    let first = store
        .ingest(prepared(batch("pve1", actions.clone())))
        .await
        .expect("actions");
    assert_eq!((first.accepted, first.duplicates), (3, 0));
    let again = store
        .ingest(prepared(batch("pve1", actions)))
        .await
        .expect("resend");
    assert_eq!(
        (again.accepted, again.duplicates),
        (0, 3),
        "each action once"
    );
    let other_host = store
        .ingest(prepared(batch(
            "pve2",
            vec![guard_action(
                "pve2/g/1",
                LAB_UUID,
                s + 90_000,
                GuardMode::Observe,
                GuardOutcome::HostHasNothing,
                256 * MIB,
            )],
        )))
        .await
        .expect("pve2");
    assert_eq!(other_host.accepted, 1);

    let lab = guard::vm_guard_actions(store.as_ref(), "pve1", LAB_UUID, 0, i64::MAX, 100)
        .await
        .expect("lab");
    let seen: Vec<(i64, GuardOutcome)> = lab.iter().map(|a| (a.at_ms, a.outcome)).collect();
    assert_eq!(
        seen,
        vec![
            (s + 60_000, GuardOutcome::OverriddenByHost),
            (s, GuardOutcome::Deflated)
        ],
        "this host's VM only, newest first, stored once"
    );
    let deflated = &lab[1];
    assert_eq!(deflated.host, "pve1");
    assert_eq!(
        deflated.name,
        format!("vm-{}", &LAB_UUID[LAB_UUID.len() - 3..])
    );
    assert_eq!(deflated.mode, GuardMode::Act);
    assert_eq!(deflated.level, RiskLevel::Critical);
    assert_eq!(deflated.episode_started_at_ms, Some(s - 60_000));
    assert_eq!(deflated.actual_before_kib, Some(128 * MIB));
    assert_eq!(deflated.target_kib, Some(384 * MIB));
    assert_eq!(deflated.maximum_kib, Some(512 * MIB));
    assert_eq!(deflated.deficit_kib, Some(256 * MIB));
    assert_eq!(deflated.exhaustion_secs, Some(40));
    assert_eq!(deflated.host_available_kib, Some(4096 * MIB));
    assert_eq!(deflated.host_reserve_kib, Some(1024 * MIB));
    assert_eq!(deflated.floor_before_kib, Some(128 * MIB));
    assert_eq!(deflated.floor_after_kib, None);
    assert_eq!(
        deflated.drivers,
        vec![PressureSignal::PsiFull, PressureSignal::AllocStalls]
    );
    assert_eq!(deflated.signals.alloc_stalls_per_s, Some(25.0));
    assert_eq!(deflated.detail, "deflated <b>step</b>", "stored as sent");
    assert_eq!(lab[0].floor_after_kib, Some(448 * MIB));
    assert_eq!(
        guard::vm_guard_actions(store.as_ref(), "pve1", LAB_UUID, 0, i64::MAX, 1)
            .await
            .expect("bounded")
            .len(),
        1
    );
    assert_eq!(
        guard::vm_guard_actions(store.as_ref(), "pve1", LAB_UUID, s + 1, i64::MAX, 100)
            .await
            .expect("since")
            .len(),
        1,
        "the range asked"
    );

    let fleet = |filter: GuardFilter| {
        let store = Arc::clone(&store);
        async move {
            guard::guard_actions(store.as_ref(), &filter, 100)
                .await
                .expect("fleet")
                .iter()
                .map(|a| (a.host.clone(), a.outcome))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        fleet(GuardFilter::default()).await,
        vec![
            ("pve2".to_string(), GuardOutcome::HostHasNothing),
            ("pve1".to_string(), GuardOutcome::OverriddenByHost),
            ("pve1".to_string(), GuardOutcome::WouldDeflate),
            ("pve1".to_string(), GuardOutcome::Deflated),
        ]
    );
    assert_eq!(
        fleet(GuardFilter {
            mode: Some(GuardMode::Observe),
            ..GuardFilter::default()
        })
        .await,
        vec![
            ("pve2".to_string(), GuardOutcome::HostHasNothing),
            ("pve1".to_string(), GuardOutcome::WouldDeflate),
        ]
    );
    assert_eq!(
        fleet(GuardFilter {
            outcome: Some(GuardOutcome::Deflated),
            host: Some("pve1".into()),
            ..GuardFilter::default()
        })
        .await,
        vec![("pve1".to_string(), GuardOutcome::Deflated)]
    );
    assert!(fleet(GuardFilter {
        outcome: Some(GuardOutcome::Deflated),
        host: Some("pve2".into()),
        ..GuardFilter::default()
    })
    .await
    .is_empty());

    let settings = ballast_collector::retention::RetentionSettings {
        rollups: std::time::Duration::from_secs(10 * 60),
        minute_rollups: std::time::Duration::from_secs(48 * 3600),
        ooms: std::time::Duration::from_secs(86_400),
        interval: std::time::Duration::from_secs(3600),
        batch_rows: 1,
    };
    let count = |store: Arc<dyn Store>| async move {
        store
            .query(Query::new("SELECT COUNT(*) FROM guard_actions", Vec::new()))
            .await
            .expect("count")[0]
            .int_or_zero(0)
    };
    // At s + 10.75 min the cut is s + 45 s: the first and the observed one go.
    retention::run_pass(store.as_ref(), &settings, s + 645_000)
        .await
        .expect("retention");
    assert_eq!(count(Arc::clone(&store)).await, 2);
    retention::run_pass(store.as_ref(), &settings, s + 20 * 60_000)
        .await
        .expect("retention");
    assert_eq!(count(Arc::clone(&store)).await, 0);
}
