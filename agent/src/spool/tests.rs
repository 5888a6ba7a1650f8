//! Unit tests of the spool: ordering, acknowledgement, reopening, the cap.

use std::path::Path;

use ballast_model::{
    BalloonRollup, CaptureSource, Envelope, Event, NearMiss, OomAnalysis, OomEvent, OomKind,
    ParsedReport, VmRef,
};

use super::*;

pub(crate) fn vm(uuid: &str) -> VmRef {
    VmRef {
        uuid: uuid.into(),
        name: format!("vm-{uuid}"),
    }
}

pub(crate) fn rollup(uuid: &str, minute: i64) -> Envelope {
    let event = Event::Rollup(Box::new(BalloonRollup {
        vm: vm(uuid),
        period_start_ms: minute * 60_000,
        period_secs: 60,
        samples: 6,
        ..BalloonRollup::default()
    }));
    Envelope {
        key: key_for("h1", &event, &(minute * 60_000).to_string()),
        captured_at_ms: minute * 60_000 + 1_000,
        event,
    }
}

pub(crate) fn oom(uuid: &str, n: u64) -> Envelope {
    let event = Event::Oom(Box::new(OomEvent {
        vm: vm(uuid),
        kind: OomKind::Guest,
        source: CaptureSource::Serial,
        raw_report: "Out of memory: Killed process 1 (x)".repeat(10),
        raw_truncated: false,
        report: ParsedReport::default(),
        analysis: OomAnalysis::default(),
        balloon_at_oom: Default::default(),
        balloon_history: Vec::new(),
        host: None,
        flood_suppressed: 0,
    }));
    Envelope {
        key: key_for("h1", &event, &n.to_string()),
        captured_at_ms: 1_000 + n as i64,
        event,
    }
}

fn near_miss(uuid: &str, n: u64) -> Envelope {
    let event = Event::NearMiss(NearMiss {
        vm: vm(uuid),
        kind: ballast_model::NearMissKind::UsableLow,
        detail: String::new(),
        actual_kib: None,
        usable_kib: None,
    });
    Envelope {
        key: key_for("h1", &event, &n.to_string()),
        captured_at_ms: 1_000 + n as i64,
        event,
    }
}

fn open(dir: &Path, max_bytes: u64) -> (Spool, OpenReport) {
    let mut config = SpoolConfig::with_cap(dir.join("spool"), max_bytes);
    config.segment_max_bytes = 4 * 1024;
    Spool::open(config).expect("spool opens")
}

fn keys(batch: &PendingBatch) -> Vec<String> {
    batch.events.iter().map(|event| event.key.clone()).collect()
}

fn drain(spool: &mut Spool) -> Vec<String> {
    let mut all = Vec::new();
    loop {
        let batch = spool.next_batch(BatchLimits::default()).expect("batch");
        if batch.is_empty() {
            return all;
        }
        all.extend(keys(&batch));
        spool.ack(&batch).expect("ack");
    }
}

#[test]
fn critical_events_come_first_then_each_lane_oldest_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut spool, _) = open(dir.path(), 1 << 20);
    spool.push(&rollup("a", 1)).expect("push");
    spool.push(&oom("a", 1)).expect("push");
    spool.push(&rollup("a", 2)).expect("push");
    spool.push(&near_miss("a", 2)).expect("push");
    let batch = spool.next_batch(BatchLimits::default()).expect("batch");
    assert_eq!(
        keys(&batch),
        [
            "h1/oom/a/1",
            "h1/near_miss/a/2",
            "h1/rollup/a/60000",
            "h1/rollup/a/120000"
        ]
    );
    // Not acknowledged: the same batch again.
    let again = spool.next_batch(BatchLimits::default()).expect("batch");
    assert_eq!(keys(&again), keys(&batch));
    spool.ack(&batch).expect("ack");
    assert!(spool
        .next_batch(BatchLimits::default())
        .expect("batch")
        .is_empty());
    let stats = spool.stats();
    assert_eq!((stats.events, stats.bytes, stats.segments), (0, 0, 0));
    assert_eq!(stats.counters.acked, 4);
}

#[test]
fn batches_respect_limits_and_acks_survive_reopening() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut spool, _) = open(dir.path(), 1 << 20);
    for minute in 0..100 {
        spool.push(&rollup("a", minute)).expect("push");
    }
    let limits = BatchLimits {
        max_events: 30,
        max_bytes: 1 << 20,
    };
    let first = spool.next_batch(limits).expect("batch");
    assert_eq!(first.events.len(), 30);
    spool.ack(&first).expect("ack");
    let second = spool.next_batch(limits).expect("batch");
    assert_eq!(
        second.events.first().map(|e| e.key.as_str()),
        Some("h1/rollup/a/1800000")
    );
    drop(spool);

    let (mut spool, report) = open(dir.path(), 1 << 20);
    assert_eq!(report.events, 70);
    assert_eq!(report.damaged_regions, 0);
    let rest = drain(&mut spool);
    assert_eq!(rest.len(), 70);
    assert_eq!(
        rest.first().map(String::as_str),
        Some("h1/rollup/a/1800000")
    );
    // Sequence numbers keep growing after everything was acknowledged and removed.
    drop(spool);
    let (mut spool, _) = open(dir.path(), 1 << 20);
    let PushOutcome::Stored { seq } = spool.push(&oom("a", 1)).expect("push") else {
        panic!("stored");
    };
    assert!(seq > 100, "{seq}");
}

#[test]
fn the_cap_downsamples_then_drops_rollups_and_keeps_every_oom() {
    // Logic, not disk speed: on tmpfs when there is one.
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("temp dir");
    let cap = 64 * 1024;
    let (mut spool, _) = open(dir.path(), cap);
    let mut pushed_rollups = 0u64;
    for minute in 0..2_000 {
        if spool.push(&rollup("a", minute)).expect("push") != PushOutcome::DroppedRollup {
            pushed_rollups += 1;
        }
        assert!(spool.stats().bytes <= cap);
    }
    let stats = spool.stats();
    assert!(stats.counters.downsampled_rollups > 0, "{stats:?}");
    assert!(stats.counters.dropped_rollups > 0, "{stats:?}");
    assert_eq!(
        stats.events + stats.counters.downsampled_rollups + stats.counters.dropped_rollups,
        2_000,
        "every rollup is either kept or counted: {stats:?}"
    );
    assert!(pushed_rollups > 0);
    // OOM events push the remaining rollups out and are all kept.
    let mut n_oom = 0;
    loop {
        match spool.push(&oom("a", n_oom)) {
            Ok(PushOutcome::Stored { .. }) => n_oom += 1,
            Ok(PushOutcome::DroppedRollup) => panic!("an OOM is not a rollup"),
            Err(SpoolError::Full { .. }) => break,
            Err(error) => panic!("{error}"),
        }
    }
    let stats = spool.stats();
    assert_eq!(stats.events_by_lane[Lane::Rollup.index()], 0, "{stats:?}");
    assert_eq!(stats.events_by_lane[Lane::Critical.index()], n_oom);
    assert_eq!(stats.counters.rejected_full, 1);
    let delivered = drain(&mut spool);
    assert_eq!(delivered.len() as u64, n_oom);
    assert!(n_oom > 50, "{n_oom}");
}

#[test]
fn downsampling_keeps_every_other_minute() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut spool, _) = open(dir.path(), 1 << 20);
    for minute in 0..40 {
        spool.push(&rollup("a", minute)).expect("push");
        spool.push(&rollup("b", minute)).expect("push");
    }
    // Force one downsampling pass: pretend the cap is just below the current size.
    spool.config.max_bytes = spool.stats().bytes;
    spool.make_room(1).expect("make room");
    let stats = spool.stats();
    assert!(stats.counters.downsampled_rollups > 0);
    assert_eq!(stats.counters.dropped_rollups, 0);
    spool.config.max_bytes = 1 << 20;
    let kept = drain(&mut spool);
    let odd_minutes = kept
        .iter()
        .filter_map(|key| key.rsplit('/').next()?.parse::<i64>().ok())
        .filter(|start| (start / 60_000) % 2 == 1)
        .count() as u64;
    assert_eq!(kept.len() as u64 + stats.counters.downsampled_rollups, 80);
    assert!(
        odd_minutes < 40,
        "only the newest segment keeps odd minutes: {odd_minutes}"
    );
    // Survives reopening (the ".ds" name).
    for minute in 100..110 {
        spool.push(&rollup("a", minute)).expect("push");
    }
    drop(spool);
    let (mut spool, report) = open(dir.path(), 1 << 20);
    assert_eq!(report.damaged_regions, 0);
    assert_eq!(drain(&mut spool).len(), 10);
}

#[test]
fn a_refused_batch_goes_to_the_dead_letter_file_and_the_queue_moves_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut spool, _) = open(dir.path(), 1 << 20);
    spool.push(&oom("a", 1)).expect("push");
    spool.push(&oom("a", 2)).expect("push");
    let batch = spool
        .next_batch(BatchLimits {
            max_events: 1,
            max_bytes: 1 << 20,
        })
        .expect("batch");
    spool
        .dead_letter(&batch, "HTTP 400: events[0].vm.uuid: not a UUID")
        .expect("dead letter");
    let text = std::fs::read_to_string(spool.dead_letter_path()).expect("dead letter file");
    assert!(
        text.contains("h1/oom/a/1") && text.contains("not a UUID"),
        "{text}"
    );
    assert_eq!(drain(&mut spool), ["h1/oom/a/2"]);
    assert_eq!(spool.stats().counters.dead_lettered, 1);
}

#[test]
fn an_event_over_the_record_limit_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = SpoolConfig::with_cap(dir.path().join("spool"), 1 << 20);
    config.max_record_bytes = 256;
    let (mut spool, _) = Spool::open(config).expect("open");
    let error = spool.push(&oom("a", 1)).expect_err("too large");
    assert!(
        matches!(error, SpoolError::RecordTooLarge { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("h1/oom/a/1"), "{error}");
}

#[test]
fn dead_letters_replay_into_the_spool_once_per_run_and_unreplayable_entries_stay() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut spool, _) = open(dir.path(), 1 << 20);
    for n in 1..=3 {
        spool.push(&oom("a", n)).expect("push");
    }
    let batch = spool
        .next_batch(BatchLimits {
            max_events: 2,
            max_bytes: 1 << 20,
        })
        .expect("batch");
    spool
        .dead_letter(&batch, "HTTP 422: events[0].vm.uuid: bad")
        .expect("dead letter");
    // An entry whose events were too large to keep: only its keys.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(spool.dead_letter_path())
        .expect("dead letter file");
    std::io::Write::write_all(
        &mut file,
        b"{\"at_ms\":1,\"reason\":\"HTTP 422\",\"keys\":[\"h1/oom/a/9\"],\"events_omitted\":true}\n",
    )
    .expect("written");
    assert_eq!(drain(&mut spool), ["h1/oom/a/3"]);

    let queued = replay::queue_dead_letters(&spool.config().dir).expect("queued");
    assert_eq!(
        (queued.entries, queued.events, queued.unreplayable),
        (2, 2, 1)
    );
    assert!(!spool.dead_letter_path().exists(), "moved to the inbox");
    assert_eq!(replay::import_inbox(&mut spool).expect("imported"), 2);
    assert_eq!(replay::import_inbox(&mut spool).expect("nothing left"), 0);
    assert_eq!(drain(&mut spool), ["h1/oom/a/1", "h1/oom/a/2"]);
    let kept = std::fs::read_to_string(spool.config().dir.join("dead-letter.unreplayable.jsonl"))
        .expect("unreplayable kept");
    assert!(kept.contains("h1/oom/a/9"), "{kept}");
    // Nothing left to replay: a second run does nothing.
    let again = replay::queue_dead_letters(&spool.config().dir).expect("queued");
    assert_eq!((again.entries, again.events), (0, 0));
}
