//! Delivery against the REAL collector over loopback HTTP: the agent's spool and sender
//! (`agent/examples/spool_pusher`, the agent's own spool + sink code) push numbered OOM
//! events and rollups while the collector is stopped for a while, SIGKILLed mid-ingest
//! and restarted, and the pusher itself is SIGKILLed at random moments. Every OOM event
//! must be listed by the collector's API exactly once.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ballast_tests::{
    binary, create_token, free_port, http_get, wait_until, write_collector_config,
};
use serde_json::Value;

const HOST: &str = "h1";
const N_EVENTS: u64 = 400;

fn example(name: &str) -> PathBuf {
    let collector = binary("ballast-collector");
    let path = collector
        .parent()
        .expect("target/<profile>")
        .join("examples")
        .join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "ballast-agent", "--example", name])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building example {name} failed");
    }
    path
}

fn start_collector(config: &Path, log: &Path) -> Child {
    Command::new(binary("ballast-collector"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("collector starts")
}

fn wait_healthy(addr: SocketAddr) {
    wait_until("the collector to answer", Duration::from_secs(30), || {
        matches!(http_get(addr, "/healthz", None), Ok((200, _))).then_some(())
    });
}

/// The capture time of the pusher's event 0: an hour before the test started, so the
/// events are recent on any date (the API lists the last 30 days by default).
fn base_ms() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(0));
        (now / 60_000) * 60_000 - 3_600_000
    })
}

fn start_pusher(dir: &Path, url: &str, token_file: &Path) -> Child {
    Command::new(example("spool_pusher"))
        .arg(dir)
        .arg(url)
        .arg(token_file)
        .arg(N_EVENTS.to_string())
        .arg(base_ms().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pusher starts")
}

/// How many events the pusher has put into its spool so far (its progress file).
fn pushed(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("pushed"))
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

/// Every OOM of `HOST` the API lists (all pages), counted by its capture time.
fn listed_ooms(addr: SocketAddr) -> BTreeMap<i64, u32> {
    let mut seen = BTreeMap::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/api/v1/ooms?host={HOST}&limit=100{cursor}");
        let Ok((200, body)) = http_get(addr, &path, None) else {
            return seen;
        };
        let page: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        for item in page["items"].as_array().into_iter().flatten() {
            *seen
                .entry(item["time_ms"].as_i64().unwrap_or(0))
                .or_default() += 1;
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return seen,
        }
    }
}

#[test]
fn every_oom_arrives_exactly_once_across_collector_outages_and_kills() {
    let root = std::env::temp_dir().join(format!("ballast-delivery-real-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("root");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let config = write_collector_config(&root, port, &root.join("store"), "");
    let token_file = root.join("agent.token");
    std::fs::write(&token_file, create_token(&config, HOST)).expect("token");
    let url = format!("http://{addr}");
    let pusher_dir = root.join("agent");

    // The collector is down when the agent starts: events wait in the spool.
    let mut pusher = start_pusher(&pusher_dir, &url, &token_file);
    wait_until(
        "the pusher to spool a hundred events while the collector is down",
        Duration::from_secs(60),
        || pushed(&pusher_dir) >= 100,
    );
    let _ = pusher.kill();
    let _ = pusher.wait();
    let mut collector = start_collector(&config, &root.join("collector-1.log"));
    wait_healthy(addr);

    // The agent's start-up check: its token is recognised, a wrong one refused.
    let token = std::fs::read_to_string(&token_file).expect("token");
    let (status, body) =
        http_get(addr, "/api/v1/health", Some(token.trim())).expect("health answers");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("\"host_id\":\"{HOST}\"")), "{body}");
    let wrong = format!("blt_{}", "0".repeat(64));
    let (status, _) = http_get(addr, "/api/v1/health", Some(&wrong)).expect("health answers");
    assert_eq!(status, 401, "a wrong token must be refused");

    // Kill the pusher (the agent side) at a few moments, and the collector once mid-ingest.
    for round in 0..6u64 {
        let mut pusher = start_pusher(&pusher_dir, &url, &token_file);
        // The scenario: a kill at a different moment each round, not a wait.
        std::thread::sleep(Duration::from_millis(300 + round * 170));
        let _ = pusher.kill();
        let _ = pusher.wait();
        if round == 2 {
            let _ = collector.kill();
            let _ = collector.wait();
            collector = start_collector(&config, &root.join("collector-2.log"));
            wait_healthy(addr);
        }
    }
    // Let the last one finish: it exits once everything is acknowledged.
    let mut pusher = start_pusher(&pusher_dir, &url, &token_file);
    let finished = wait_until(
        "the pusher to drain its spool",
        Duration::from_secs(180),
        || pusher.try_wait().ok().flatten(),
    );
    assert!(finished.success(), "the pusher failed");

    let listed = listed_ooms(addr);
    let expected: Vec<i64> = (0..N_EVENTS)
        .filter(|index| index % 10 == 0)
        .map(|index| base_ms() + index as i64 * 1_000)
        .collect();
    assert_eq!(
        listed.len(),
        expected.len(),
        "every OOM event is listed: {listed:?}"
    );
    for time in &expected {
        assert_eq!(
            listed.get(time),
            Some(&1),
            "the OOM captured at {time} is listed exactly once"
        );
    }
    let _ = collector.kill();
    let _ = collector.wait();
    let _ = std::fs::remove_dir_all(&root);
}
