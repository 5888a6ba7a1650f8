//! Fuzz target: the OOM parser on arbitrary bytes, end to end.
//!
//! Runs what `ballast-agent explain --json` runs on guest output: parse and
//! analyze every report (`explain`), analyze each again with host balloon
//! figures, and serialize the whole explanation. Any panic is a bug, and so is
//! output that breaks the bounds in `ballast_oom::limits`.
#![no_main]

use ballast_oom::limits::{
    MAX_DIAGNOSTICS, MAX_MEMCG_STATS, MAX_REPORTS, MAX_STORED_TASKS, MAX_ZONES,
};
use ballast_oom::HostBalloon;
use libfuzzer_sys::fuzz_target;

const HOST: HostBalloon = HostBalloon {
    maximum_kb: Some(1 << 20),
    actual_kb: Some(1 << 19),
    deflate_on_oom: Some(false),
};

fuzz_target!(|data: &[u8]| {
    let explanation = ballast_oom::explain(data);
    assert!(explanation.diagnostics.len() <= MAX_DIAGNOSTICS);
    assert!(explanation.reports.len() <= MAX_REPORTS);
    for explained in &explanation.reports {
        let report = &explained.report;
        assert!(report.span.start_byte <= report.span.end_byte);
        assert!(report.span.end_byte <= data.len());
        assert!(report.span.first_line >= 1);
        assert!(report.top_tasks.len() <= MAX_STORED_TASKS);
        assert!(report.zones.len() <= MAX_ZONES);
        assert!(report
            .memcg
            .as_ref()
            .is_none_or(|memcg| memcg.stats.len() <= MAX_MEMCG_STATS));
        std::hint::black_box(ballast_oom::analyze(report, Some(&HOST)));
    }
    let json = serde_json::to_string(&explanation).expect("an explanation always serializes");
    std::hint::black_box(json);
});
