//! Tests of envelope reading: tables, JSON, YAML, NPD's log, and the work bounds.

use super::*;

const KILL: &str = "Memory cgroup out of memory: Killed process 3504804 (kubectl) total-vm:753508kB, anon-rss:58776kB, file-rss:29400kB, shmem-rss:0kB, UID:0 pgtables:288kB oom_score_adj:999";

fn embedded(input: &str) -> Option<(String, Envelope)> {
    let killed_at = input
        .find("Killed process")
        .expect("a kill line in the case");
    find(input.as_bytes(), killed_at, 0, 0, None).map(|found| {
        (
            String::from_utf8_lossy(&found.text).into_owned(),
            found.envelope,
        )
    })
}

#[test]
fn reads_the_kill_line_out_of_every_envelope() {
    let cases = [
        (format!("5m          Warning   OOMKilling   node/node-1   {KILL}"), Envelope::EventTable),
        (format!("kube-system   5m   Warning   OOMKilling   node/node-1   {KILL}   5m   3   node-1.176"), Envelope::EventTable),
        (format!("  Warning  OOMKilling  2m (x3 over 5m)  kernel-monitor  {KILL}"), Envelope::EventTable),
        (format!("    \"message\": \"{KILL}\","), Envelope::Json),
        (format!("{{\"kind\":\"Event\",\"reason\":\"OOMKilling\",\"message\":\"{KILL}\",\"count\":3}}"), Envelope::Json),
        (format!("{{\"log\":\"{{\\\"reason\\\":\\\"OOMKilling\\\",\\\"message\\\":\\\"{KILL}\\\"}}\\n\",\"stream\":\"stdout\"}}"), Envelope::Json),
        (format!("  \"MESSAGE\" : \"{KILL}\","), Envelope::Json),
        (format!("  \"_SOURCE\" : \"/dev/kmsg\", \"MESSAGE\" : \"{KILL}\","), Envelope::Json),
        (format!("  message: '{KILL}'"), Envelope::Yaml),
        (format!("Jun 13 14:35:38 node-1 node-problem-detector[812]: I0613 14:35:38.123456 1 log_monitor.go:160] New status generated: &{{Source:kernel-monitor Events:[{{Severity:warn Timestamp:2023-06-13 14:35:38 +0000 UTC Reason:OOMKilling Message:{KILL}}}] Conditions:[]}}"), Envelope::NpdLog),
        (format!("{{\"log\":\"I0613 14:35:38.123456 1 log_monitor.go:160] New status generated: \\u0026{{Source:kernel-monitor Events:[{{Severity:warn Reason:OOMKilling Message:{KILL}}}] Conditions:[]}}\\n\",\"stream\":\"stderr\"}}"), Envelope::NpdLog),
        (format!("    \"message\": \"oom-kill:constraint=CONSTRAINT_MEMCG,task=kubectl\\n{KILL}\\n\","), Envelope::Json),
    ];
    for (line, envelope) in cases {
        assert_eq!(
            embedded(&line),
            Some((KILL.to_string(), envelope)),
            "{line}"
        );
    }
}

#[test]
fn json_escapes_and_yaml_folds_are_undone() {
    let escaped = r#"  "message": "Out of memory: Killed process 7 (a\"b\u003e\ud83d\ude00) total-vm:10kB, anon-rss:5kB, file-rss:0kB\n","#;
    assert_eq!(
        embedded(escaped),
        Some((
            "Out of memory: Killed process 7 (a\"b>😀) total-vm:10kB, anon-rss:5kB, file-rss:0kB"
                .to_string(),
            Envelope::Json
        ))
    );
    let folded = "  message: 'Memory cgroup out of memory: Killed process 3504804 (it''s) total-vm:753508kB,\n    anon-rss:58776kB, file-rss:29400kB'\n  metadata:\n";
    assert_eq!(
        embedded(folded),
        Some(("Memory cgroup out of memory: Killed process 3504804 (it's) total-vm:753508kB, anon-rss:58776kB, file-rss:29400kB".to_string(), Envelope::Yaml))
    );
    let allocating = "  Warning  OOMKilling  1m  kernel-monitor  Out of memory (oom_kill_allocating_task): Killed process 7 (a) total-vm:10kB, anon-rss:5kB, file-rss:0kB";
    assert_eq!(
        embedded(allocating).map(|(text, _)| text),
        Some(allocating[43..].to_string())
    );
    let double = "  message: \"Out of memory: Killed process 7 (a) total-vm:10kB, anon-rss:5kB,\\\n    \\ file-rss:0kB\"\n";
    assert_eq!(
        embedded(double).map(|(text, _)| text),
        Some(
            "Out of memory: Killed process 7 (a) total-vm:10kB, anon-rss:5kB, file-rss:0kB"
                .to_string()
        )
    );
}

#[test]
fn kernel_lines_and_other_programs_are_not_envelopes() {
    let kept = [
        format!("[  599.537757] {KILL}"),
        format!("Jun 13 14:35:38 node-1 kernel: {KILL}"),
        format!("Jun 13 14:35:38 node-1 kubelet[812]: {KILL}"),
        format!("the message below: it said {KILL}"),
        format!("  Warning  OOMKillingX  2m  kernel-monitor  {KILL}"),
        format!("    \"message\": \"an earlier line\", \"other\": \"{KILL}\""),
        format!("  Warning  SystemOOM  2m  kubelet  System OOM encountered, victim process: kubectl, pid: 3504804 {KILL}"),
    ];
    for line in kept {
        assert_eq!(embedded(&line), None, "{line}");
    }
}

#[test]
fn a_folded_scalar_cut_by_the_stream_is_incomplete() {
    let folded =
        "  message: 'Out of memory: Killed process 7 (a) total-vm:10kB,\n    anon-rss:5kB'\n";
    let cut = folded.find("\n    anon").map(|at| at + 1).unwrap_or(0);
    let killed_at = folded.find("Killed").unwrap_or(0);
    let found = find(folded.as_bytes(), killed_at, 0, 0, Some(cut)).expect("an envelope");
    assert!(found.incomplete);
    let found = find(folded.as_bytes(), killed_at, 0, 0, Some(folded.len())).expect("an envelope");
    assert!(!found.incomplete);
    let found = find(folded.as_bytes(), killed_at, 0, 0, None).expect("an envelope");
    assert!(!found.incomplete);
    assert_eq!(found.end, folded.len() - 1);
}

#[test]
fn the_search_back_stops_at_the_floor() {
    let line = format!("  Warning  OOMKilling  2m  kernel-monitor  {KILL}");
    let killed_at = line.find("Killed process").unwrap_or(0);
    assert!(find(line.as_bytes(), killed_at, 0, 0, None).is_some());
    assert!(find(line.as_bytes(), killed_at, 30, 0, None).is_none());
}

fn row(pid: u32, comm: &str) -> String {
    format!("  Warning  OOMKilling  5m (x3 over 10m)  kernel-monitor  Memory cgroup out of memory: Killed process {pid} ({comm}) total-vm:1000kB, anon-rss:500kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:8kB oom_score_adj:0\n")
}

#[test]
fn one_kill_is_one_report_whoever_logged_it_and_wherever() {
    let kernel = "[ 5.1] a invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n\
                  [ 5.1] CPU: 0 PID: 7 Comm: a Not tainted 6.1.0-18-amd64 #1\n\
                  [ 5.2] memory: usage 1024kB, limit 1024kB, failcnt 9\n\
                  [ 5.3] Memory cgroup out of memory: Killed process 7 (a) total-vm:1000kB, anon-rss:500kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:8kB oom_score_adj:0\n";
    let json = "{\"reason\":\"OOMKilling\",\"message\":\"Memory cgroup out of memory: Killed process 7 (a) total-vm:1000kB, anon-rss:500kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:8kB oom_score_adj:0\"}\n";
    let table = row(7, "a");
    let orders = [
        [kernel, json, table.as_str()],
        [json, kernel, table.as_str()],
        [table.as_str(), json, kernel],
    ];
    for parts in orders {
        let input = parts.concat();
        let parsed = crate::parse(input.as_bytes());
        assert_eq!(parsed.reports.len(), 1, "{input}");
        let report = &parsed.reports[0];
        assert_eq!(report.envelope, None, "the kernel's own report stays");
        assert!(report.trigger.is_some());
    }
    // Without the kernel's report: the two events are one kill.
    let input = format!("{json}{table}{table}");
    let parsed = crate::parse(input.as_bytes());
    assert_eq!(parsed.reports.len(), 1);
    assert_eq!(parsed.reports[0].envelope, Some(Envelope::Json));
}

#[test]
fn distinct_kills_in_events_are_one_report_each_after_the_kernels() {
    let kernel =
        "[ 9.0] Out of memory: Killed process 9 (k) total-vm:10kB, anon-rss:5kB, file-rss:0kB\n";
    let input = format!(
        "{}{}{}{kernel}{}",
        row(3, "x"),
        row(4, "y"),
        row(3, "x"),
        row(5, "z")
    );
    let parsed = crate::parse(input.as_bytes());
    let pids: Vec<_> = parsed
        .reports
        .iter()
        .map(|r| (r.killed.as_ref().map(|k| k.pid), r.envelope))
        .collect();
    let table = Some(Envelope::EventTable);
    assert_eq!(
        pids,
        [
            (Some(9), None),
            (Some(3), table),
            (Some(4), table),
            (Some(5), table)
        ]
    );
    assert_eq!(parsed.reports[1].span.first_line, 1);
    assert_eq!(parsed.reports[3].span.first_line, 5);
}

#[test]
fn a_flood_of_event_rows_keeps_at_most_the_cap() {
    let input: String = (0..MAX_RELOGGED_REPORTS as u32 + 500)
        .map(|pid| row(pid, "f"))
        .collect();
    let parsed = crate::parse(input.as_bytes());
    assert_eq!(parsed.reports.len(), MAX_RELOGGED_REPORTS);
}

#[test]
fn a_hostile_line_of_envelopes_is_read_in_linear_work() {
    // Every anchor has an envelope before it; none or each decodes: each byte is
    // searched back once and read forward once, not once per anchor near it.
    let pieces = [
        "OOMKilling Killed process x ",
        "OOMKilling Killed process 1 x ",
        "\"message\":\"Killed process 1 (a) total-vm:1kB\",",
        "message: Killed process 2 (b) ",
        // A non-kill anchor: the kill lines after it on its line are all tried.
        "oom-kill:x OOMKilling Killed process y ",
    ];
    for piece in pieces {
        let input = piece.repeat(40_000);
        work::take();
        let parsed = crate::parse(input.as_bytes());
        let bytes = work::take();
        assert!(parsed.reports.len() <= MAX_RELOGGED_REPORTS);
        assert!(
            bytes <= 3 * input.len(),
            "{piece}: {bytes} bytes read for {}",
            input.len()
        );
    }
}
