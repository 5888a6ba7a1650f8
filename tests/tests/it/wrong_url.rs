//! A wrong `collector.url` loses nothing (issue 15, item 2), with the REAL agent (on an
//! empty Proxmox host: no guests needed) and the REAL collector (SQLite): the agent
//! posts to `http://127.0.0.1:PORT/wrong/`, gets 404s, holds its spool and says so
//! (`check-config` fails naming collector.url, `status` says BLOCKED, `/metrics`
//! counts the refusals); a SIGHUP with the fixed URL delivers every OOM exactly once.
//! Events are handed to the agent through `ballast-agent spool replay-dead-letters`
//! (dead-letter lines written here), which is tested on the way: replaying the same
//! events again stores nothing twice. The real-guest version of this scenario is in
//! `fault_matrix.rs` (`wrong_collector_url_until_a_reload_loses_no_oom`).

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ballast_model::{
    CaptureSource, Envelope, Event, OomAnalysis, OomEvent, OomKind, ParsedReport, VmRef,
};
use ballast_tests::{
    binary, create_token, free_port, http_get, wait_until, write_collector_config, Daemon,
};
use serde_json::Value;

const HOST: &str = "wrong-url-host";
const N_OOMS: i64 = 12;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(0))
}

/// OOM `n`, captured at `base_ms + n` (its capture time identifies it in the API).
fn oom(base_ms: i64, n: i64) -> Envelope {
    Envelope {
        key: format!("{HOST}/oom/wrong-url/{n}"),
        captured_at_ms: base_ms + n,
        event: Event::Oom(Box::new(OomEvent {
            vm: VmRef {
                uuid: "0f0e0d0c-0b0a-0908-0706-050403020100".into(),
                name: "wrong-url-vm".into(),
            },
            kind: OomKind::Guest,
            source: CaptureSource::Serial,
            raw_report: format!("Out of memory: Killed process {} (hog)", 1000 + n),
            raw_truncated: false,
            report: ParsedReport {
                kind: ballast_model::ReportKind::Global,
                ..ParsedReport::default()
            },
            analysis: OomAnalysis {
                verdict: ballast_model::ReportVerdict::Unknown,
                ..OomAnalysis::default()
            },
            balloon_at_oom: Default::default(),
            balloon_history: Vec::new(),
            host: None,
            flood_suppressed: 0,
        })),
    }
}

/// Dead-letter lines as the agent writes them (spool/dead_letter.rs).
fn write_dead_letters(spool_dir: &Path, events: &[Envelope]) {
    std::fs::create_dir_all(spool_dir).expect("spool dir");
    let mut text = String::new();
    for event in events {
        let line = serde_json::json!({
            "at_ms": now_ms(),
            "reason": "HTTP 422: events[0].vm.uuid: refused by an older collector",
            "keys": [event.key],
            "events": [event],
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::write(spool_dir.join("dead-letter.jsonl"), text).expect("dead letters");
}

fn agent_config(dir: &Path, url: &str, token_file: &Path, metrics_port: u16) -> String {
    format!(
        "host_id: {HOST}\nbackend: proxmox\n\
         proxmox:\n  run_dir: {run}\n  config_dir: {pve}\n\
         state_dir: {state}\npoll_interval_secs: 2\n\
         capture:\n  host_kernel: false\n\
         metrics:\n  listen: 127.0.0.1:{metrics_port}\n\
         collector:\n  url: {url}\n  token_file: {token}\n",
        run = dir.join("run").display(),
        pve = dir.join("pve").display(),
        state = dir.join("state").display(),
        token = token_file.display(),
    )
}

fn agent(args: &[&str], config: &Path) -> Output {
    Command::new(binary("ballast-agent"))
        .args(args)
        .arg(config)
        .output()
        .expect("ballast-agent runs")
}

/// Every OOM of `HOST` the collector lists, counted by capture time.
fn listed(addr: SocketAddr) -> BTreeMap<i64, u32> {
    let mut seen = BTreeMap::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/api/v1/ooms?host={HOST}&limit=100{cursor}");
        let Ok((200, body)) = http_get(addr, &path, None) else {
            return seen;
        };
        let page: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        for item in page["items"].as_array().into_iter().flatten() {
            if let Some(at) = item["time_ms"].as_i64() {
                *seen.entry(at).or_insert(0) += 1;
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return seen,
        }
    }
}

fn metric(addr: SocketAddr, line_start: &str) -> Option<f64> {
    let (_, body) = http_get(addr, "/metrics", None).ok()?;
    body.lines()
        .find_map(|line| line.strip_prefix(line_start))
        .and_then(|value| value.trim().parse().ok())
}

#[test]
fn a_wrong_collector_url_holds_every_oom_until_a_reload_fixes_it_real_agent_and_collector() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    for sub in ["run", "pve", "state"] {
        std::fs::create_dir_all(root.join(sub)).expect("host dirs");
    }
    let port = free_port();
    let collector_dir = root.join("collector");
    let collector_config = write_collector_config(
        &collector_dir,
        port,
        &collector_dir,
        "storage:\n  type: sqlite\n",
    );
    let token_file = root.join("agent.token");
    std::fs::write(&token_file, create_token(&collector_config, HOST)).expect("token");
    let collector_addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let config_arg = collector_config.display().to_string();
    let _collector = Daemon::start(
        "ballast-collector",
        &["serve", "--config", &config_arg],
        &root.join("collector.log"),
    );
    wait_until("the collector", Duration::from_secs(60), || {
        matches!(http_get(collector_addr, "/healthz", None), Ok((200, _))).then_some(())
    });

    let metrics_port = free_port();
    let metrics_addr: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().expect("addr");
    let wrong_url = format!("http://127.0.0.1:{port}/wrong/");
    let config = root.join("agent.yaml");
    std::fs::write(
        &config,
        agent_config(root, &wrong_url, &token_file, metrics_port),
    )
    .expect("agent config");

    // check-config names the problem.
    let checked = agent(&["check-config"], &config);
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("collector.url") && stderr.contains("/wrong/") && stderr.contains("404"),
        "{stderr}"
    );

    // OOMs waiting for delivery, handed over as dead letters before the agent starts.
    let base_ms = now_ms() - 60_000;
    let events: Vec<Envelope> = (0..N_OOMS).map(|n| oom(base_ms, n)).collect();
    let spool_dir = root.join("state").join("spool");
    write_dead_letters(&spool_dir, &events);
    let replayed = agent(&["spool", "replay-dead-letters", "--config"], &config);
    assert!(replayed.status.success(), "{replayed:?}");
    assert!(
        String::from_utf8_lossy(&replayed.stdout).contains(&format!("{N_OOMS} dead-lettered")),
        "{replayed:?}"
    );

    let log = root.join("agent.log");
    let config_str = config.display().to_string();
    let mut agent_daemon = Daemon::start("ballast-agent", &["run", "--config", &config_str], &log);
    let hold = Duration::from_secs(
        std::env::var("BALLAST_WRONG_URL_HOLD_SECS")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(8),
    );
    // The scenario: the wrong URL stays for its hold (time passing, not a wait).
    std::thread::sleep(hold);
    let refused = wait_until("refusals on /metrics", Duration::from_secs(30), || {
        metric(
            metrics_addr,
            "ballast_agent_delivery_refusals_total{reason=\"not_found\"} ",
        )
        .filter(|count| *count >= 2.0)
    });
    assert!(
        listed(collector_addr).is_empty(),
        "nothing reached the collector"
    );
    assert!(
        metric(metrics_addr, "ballast_agent_delivery_held_seconds ").unwrap_or(0.0) > 0.0,
        "the held gauge runs"
    );
    assert_eq!(
        metric(metrics_addr, "ballast_agent_dead_letters_total "),
        Some(0.0),
        "a 404 dead-letters nothing"
    );
    let status = agent(&["status", "--config"], &config);
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(
        table.contains("BLOCKED") && table.contains("not_found") && table.contains("HTTP 404"),
        "{table}"
    );
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logs.contains("collector.url is wrong") && logs.contains("ERROR"),
        "the start-up health check names the configuration error: {logs}"
    );
    assert!(logs.contains("Delivery to the collector is held"), "{logs}");
    assert!(
        !logs.contains("//api/"),
        "URLs are printed as requested: {logs}"
    );

    // The operator fixes the URL and reloads.
    std::fs::write(
        &config,
        agent_config(
            root,
            &format!("http://127.0.0.1:{port}"),
            &token_file,
            metrics_port,
        ),
    )
    .expect("fixed config");
    let _ = Command::new("kill")
        .args(["-HUP", &agent_daemon.child.id().to_string()])
        .status();
    let expected: BTreeMap<i64, u32> = events.iter().map(|e| (e.captured_at_ms, 1)).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while listed(collector_addr).len() < events.len() && std::time::Instant::now() < deadline {
        // A poll, not wait_until: at the deadline the assertion below shows the agent's
        // log, which a panic here could not.
        std::thread::sleep(Duration::from_millis(300));
    }
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        listed(collector_addr).len(),
        events.len(),
        "after the reload; agent log: {logs}"
    );
    assert_eq!(listed(collector_addr), expected, "every OOM exactly once");
    let status = agent(&["status", "--config"], &config);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains(": OK, last batch confirmed"),
        "{status:?}"
    );
    eprintln!(
        "WRONG-URL: held {hold:?} with {refused} refusals (404), reload -> {} OOMs listed once",
        events.len()
    );

    // Replaying the same events again (twice) stores nothing twice.
    for _ in 0..2 {
        write_dead_letters(&spool_dir, &events);
        let replayed = agent(&["spool", "replay-dead-letters", "--config"], &config);
        assert!(replayed.status.success(), "{replayed:?}");
    }
    let inbox = spool_dir.join("replay-inbox");
    wait_until("the replays to be sent", Duration::from_secs(30), || {
        let empty = std::fs::read_dir(&inbox).map_or(true, |mut dir| dir.next().is_none());
        let delivered =
            metric(metrics_addr, "ballast_agent_delivered_events_total ").unwrap_or(0.0);
        (empty && delivered >= (3 * N_OOMS) as f64).then_some(())
    });
    assert_eq!(
        listed(collector_addr),
        expected,
        "replays are deduplicated by key"
    );
    assert!(
        agent_daemon.child.try_wait().expect("wait").is_none(),
        "the agent runs on"
    );
}
