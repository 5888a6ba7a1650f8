//! Test fixtures: OOM events built from the founding reports
//! (crates/ballast-oom/tests/fixtures/oom), with balloon histories around them.
//! Shared by unit tests and (through `#[path]`) the integration tests.

use ballast_model::{
    BalloonAtOom, BalloonPoint, CaptureSource, HostMemory, OomAnalysis, OomEvent, OomKind,
    ParsedReport, VmRef,
};

pub const MIB: u64 = 1024;
/// The OOM time used by the fixtures: the whole hour three hours before this test
/// process first asked, so fixtures are recent on any date (a fixed date ages past
/// retention and compaction windows and the collector's timestamp window) and hour
/// boundaries fall where the tests expect them. The same value for the whole process.
pub fn oom_at_ms() -> i64 {
    static AT: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *AT.get_or_init(|| {
        const HOUR_MS: i64 = 3_600_000;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        (now_ms / HOUR_MS) * HOUR_MS - 3 * HOUR_MS
    })
}

pub const TOR_UUID: &str = "9a6c3b1e-0000-4000-8000-000000000100";
pub const LAB_UUID: &str = "3f2a0c1e-0000-4000-8000-000000000512";

fn fixture_text(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../crates/ballast-oom/tests/fixtures/oom/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|error| panic!("fixture {path}: {error}"))
}

/// An OOM event of the first report in fixture `name`, analyzed without host figures.
pub fn oom_from_fixture(name: &str, uuid: &str, vm_name: &str) -> OomEvent {
    let text = fixture_text(name);
    let parsed = ballast_oom::parse(&text);
    let report = parsed.reports.first().expect("the fixture has a report");
    let analysis = ballast_oom::analyze(report, None);
    let raw = text
        .get(report.span.start_byte..report.span.end_byte)
        .unwrap_or(&text);
    OomEvent {
        vm: VmRef {
            uuid: uuid.into(),
            name: vm_name.into(),
        },
        kind: OomKind::Guest,
        source: CaptureSource::Serial,
        raw_report: String::from_utf8_lossy(raw).into_owned(),
        raw_truncated: false,
        report: ParsedReport::from(report),
        analysis: OomAnalysis::from(&analysis),
        balloon_at_oom: BalloonAtOom::default(),
        balloon_history: Vec::new(),
        host: None,
        flood_suppressed: 0,
    }
}

/// A history every 10 s over the hour before `oom_at_ms()`; `actual_at(seconds_before)`.
pub fn history(maximum_kib: u64, actual_at: impl Fn(i64) -> u64) -> Vec<BalloonPoint> {
    (1..=360)
        .rev()
        .map(|step| {
            let before = step * 10;
            let actual = actual_at(before);
            BalloonPoint {
                at_ms: oom_at_ms() - before * 1000,
                actual_kib: Some(actual),
                maximum_kib: Some(maximum_kib),
                available_kib: Some(actual.saturating_sub(40 * MIB)),
                usable_kib: Some(actual / 4),
                event: false,
                virtio_mem: None,
            }
        })
        .collect()
}

/// The seed report: Debian 9, 1 GiB, tor killed; the balloon never moved.
pub fn tor_flat() -> OomEvent {
    let mut event = oom_from_fixture("debian9-kvm-1g-tor.log", TOR_UUID, "tor-relay");
    let maximum = 1024 * MIB;
    event.balloon_at_oom = BalloonAtOom {
        maximum_kib: Some(maximum),
        actual_kib: Some(maximum),
        deflate_on_oom: Some(false),
        ..BalloonAtOom::default()
    };
    event.balloon_history = history(maximum, |_| maximum);
    event.host = Some(HostMemory {
        total_kib: Some(32 * 1024 * MIB),
        available_kib: Some(20 * 1024 * MIB),
        psi_some_avg10: Some(0.0),
        ksm_sharing_kib: None,
    });
    event
}

/// The lab report: 512 MiB guest ballooned to 200 MiB 120 s before the OOM.
pub fn lab_inflated() -> OomEvent {
    let mut event = oom_from_fixture(
        "lab-debian12-6.1-balloon-200m-of-512m.serial.log",
        LAB_UUID,
        "lab-512",
    );
    let maximum = 512 * MIB;
    event.balloon_at_oom = BalloonAtOom {
        maximum_kib: Some(maximum),
        actual_kib: Some(200 * MIB),
        deflate_on_oom: Some(false),
        ..BalloonAtOom::default()
    };
    event.balloon_history = history(
        maximum,
        |before| {
            if before > 120 {
                maximum
            } else {
                200 * MIB
            }
        },
    );
    event.host = Some(HostMemory {
        total_kib: Some(24 * 1024 * MIB),
        available_kib: Some(18 * 1024 * MIB),
        psi_some_avg10: None,
        ksm_sharing_kib: None,
    });
    event
}
