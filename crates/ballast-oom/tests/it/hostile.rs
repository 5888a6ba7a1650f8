//! Guest output is hostile: huge lines, binary garbage, floods of forged reports.
//! The parser must stay bounded and keep finding the real reports around them.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use ballast_oom::limits::{MAX_NAME_BYTES, MAX_STORED_TASKS};

const SEED: &str = include_str!("../fixtures/oom/debian9-kvm-1g-tor.log");

#[test]
fn a_100_mib_line_does_not_hide_the_report_after_it() {
    let mut input = Vec::with_capacity(101 << 20);
    input.extend_from_slice(b"[    1.000000] ");
    input.resize(100 << 20, b'A');
    input.push(b'\n');
    input.extend_from_slice(SEED.as_bytes());
    let parsed = ballast_oom::parse(&input);
    assert_eq!(parsed.reports.len(), 1);
    let report = &parsed.reports[0];
    assert_eq!(report.killed.as_ref().map(|k| k.pid), Some(1439));
    assert_eq!(report.span.first_line, 2);
}

#[test]
fn forged_long_names_are_cut_to_the_name_limit() {
    // A real comm is at most 15 bytes; a guest can print anything.
    let long_comm = "x".repeat(8 * 1024);
    let input = format!(
        "[ 1.0] {long_comm} invoked oom-killer: gfp_mask=0x0, order=0, oom_score_adj=0\n\
         [ 1.1] Out of memory: Killed process 7 ({long_comm}) total-vm:1kB, anon-rss:1kB\n"
    );
    let parsed = ballast_oom::parse(input.as_bytes());
    assert_eq!(parsed.reports.len(), 1);
    let report = &parsed.reports[0];
    let trigger = report.trigger.as_ref().expect("trigger");
    assert!(trigger.comm.len() <= MAX_NAME_BYTES);
    assert!(report
        .killed
        .as_ref()
        .is_some_and(|k| k.comm.len() <= MAX_NAME_BYTES));
}

#[test]
fn binary_garbage_around_a_report_is_skipped() {
    let mut input: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    input.push(b'\n');
    input.extend_from_slice(SEED.as_bytes());
    input.extend((0..200_000u32).map(|i| (i.wrapping_mul(40_503) >> 8) as u8));
    let explained = ballast_oom::explain(&input);
    assert_eq!(explained.reports.len(), 1);
    assert_eq!(explained.reports[0].analysis.unaccounted_kb, Some(384_832));
}

#[test]
fn a_task_table_of_100k_rows_is_counted_but_not_stored() {
    let mut input =
        String::from("[1.0] hog invoked oom-killer: gfp_mask=0x0, order=0, oom_score_adj=0\n");
    input.push_str("[1.0] [  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name\n");
    for pid in 0..100_000u32 {
        input.push_str(&format!("[1.0] [{pid:7}]     0 {pid:5}     1000 {:8}    4096        0             0 task{pid}\n", pid % 977));
    }
    input.push_str(
        "[1.1] Out of memory: Killed process 976 (task976) total-vm:4000kB, anon-rss:3904kB\n",
    );
    let parsed = ballast_oom::parse(input.as_bytes());
    assert_eq!(parsed.reports.len(), 1);
    let report = &parsed.reports[0];
    assert_eq!(report.tasks, Some(100_000));
    assert_eq!(report.top_tasks.len(), MAX_STORED_TASKS);
    assert_eq!(report.top_tasks[0].rss_pages, Some(976), "largest first");
}

#[test]
fn a_flood_of_forged_kill_lines_yields_bounded_reports() {
    let mut input = String::new();
    for pid in 0..20_000u32 {
        input.push_str(&format!(
            "[{pid}.0] Out of memory: Killed process {pid} (<script>) total-vm:1kB\n"
        ));
    }
    let parsed = ballast_oom::parse(input.as_bytes());
    assert_eq!(
        parsed.reports.len(),
        20_000,
        "each forged line is its own partial report"
    );
    assert!(parsed.reports.iter().all(|r| r.partial));
    assert!(parsed.diagnostics.len() <= ballast_oom::limits::MAX_DIAGNOSTICS);
}

#[test]
fn a_relogged_kill_line_is_counted_once() {
    let relogged = format!(
        "{SEED}\nJan 4 10:04:41 <host> kernel: [53543.000001] Killed process 1439 (tor) total-vm:557104kB, anon-rss:374956kB, file-rss:0kB, shmem-rss:0kB\n\
         Jan 4 10:04:41 <host> node-problem-detector[99]: Out of memory: Killed process 1439 (tor)\n"
    );
    let parsed = ballast_oom::parse(relogged.as_bytes());
    assert_eq!(parsed.reports.len(), 1, "{:?}", parsed.diagnostics);
}

#[test]
fn interleaved_hosts_give_one_report_each() {
    let mut input = String::new();
    let other = SEED
        .replace("<host>", "pve2")
        .replace("1439", "2222")
        .replace("(tor)", "(java)");
    for (ours, theirs) in SEED.lines().zip(other.lines()) {
        input.push_str(ours);
        input.push('\n');
        input.push_str(theirs);
        input.push('\n');
    }
    let parsed = ballast_oom::parse(input.as_bytes());
    let mut victims: Vec<(Option<String>, String)> = parsed
        .reports
        .iter()
        .map(|r| {
            (
                r.stamp.host.clone(),
                r.killed
                    .as_ref()
                    .map(|k| k.comm.clone())
                    .unwrap_or_default(),
            )
        })
        .collect();
    victims.sort();
    assert_eq!(
        victims,
        vec![
            (Some("<host>".to_string()), "tor".to_string()),
            (Some("pve2".to_string()), "java".to_string())
        ]
    );
    assert!(parsed.reports.iter().all(|r| r.tasks == Some(14)));
}

#[test]
fn page_allocation_failures_are_not_reports() {
    let warning = "[ 5.0] kworker/0:1: page allocation failure: order:4, mode:0x40c0\n[ 5.0] Mem-Info:\n[ 5.0] active_anon:1 inactive_anon:2 isolated_anon:0\n[ 5.0] 262010 pages RAM\n";
    assert!(ballast_oom::parse(warning.as_bytes()).reports.is_empty());
}

#[test]
fn a_flood_of_continuation_lines_joins_a_bounded_number_to_one_line() {
    // A kill line that never ends, then 100 000 rows that could each continue it: the
    // join takes at most 32, the rest are lines of their own, and the report ends.
    let head = "[ 1.0] Out of memory: Killed process 7 (a) total-vm:";
    let mut input = String::from(head);
    for _ in 0..100_000 {
        input.push_str("\n1kB,");
    }
    input.push_str("\n[ 2.0] Out of memory: Killed process 8 (b) total-vm:2kB, anon-rss:1kB\n");
    let parsed = ballast_oom::parse(input.as_bytes());
    assert_eq!(parsed.reports.len(), 2, "{:?}", parsed.diagnostics);
    let first = &parsed.reports[0];
    assert_eq!(first.killed.as_ref().and_then(|k| k.total_vm_kb), Some(1));
    assert!(
        first.span.end_byte <= head.len() + 32 * "\n1kB,".len(),
        "the joined line ends at byte {}",
        first.span.end_byte
    );
    assert_eq!(parsed.reports[1].killed.as_ref().map(|k| k.pid), Some(8));
}
