//! Two REAL collectors sharing one REAL PostgreSQL (issue 10, "Load and scale"):
//! started at the same moment on an empty database (their migrations race), then
//! simulated agents (`collector/examples/load_gen`, the load generator) send to both
//! in turn, and every batch goes to the other collector too, as from an agent behind a
//! load balancer that retries after a timeout: at the same moment (the first request
//! still in flight) or after the first answer. Every OOM must be stored once, and both
//! collectors must answer the list, per-event and per-VM API alike.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ballast_testpg::TestPg;
use ballast_tests::{binary, create_token, example, free_port, http_get, wait_until};
use serde_json::Value;

const HOSTS: usize = 6;

/// The load generator (`cargo test` builds it).
fn load_gen() -> PathBuf {
    example("ballast-collector", "collector/examples/load_gen.rs")
}

struct Collector {
    child: Child,
    addr: SocketAddr,
    config: PathBuf,
    log: PathBuf,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the config of collector `name` on `database_url` and starts it.
fn start_collector(root: &Path, name: &str, database_url: &str) -> Collector {
    let port = free_port();
    let config = root.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nstate_dir: {}\nstorage:\n  type: postgres\n  url: '{database_url}'\n",
            root.join(format!("{name}-state")).display()
        ),
    )
    .expect("config");
    let log = root.join(format!("{name}.log"));
    let child = Command::new(binary("ballast-collector"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("collector starts");
    Collector {
        child,
        addr: format!("127.0.0.1:{port}").parse().expect("address"),
        config,
        log,
    }
}

fn wait_healthy(collector: &mut Collector) {
    wait_until(
        "the collector to answer /healthz",
        Duration::from_secs(30),
        || {
            if let Ok(Some(status)) = collector.child.try_wait() {
                panic!(
                    "collector exited ({status}) before answering: {}",
                    std::fs::read_to_string(&collector.log).unwrap_or_default()
                );
            }
            matches!(http_get(collector.addr, "/healthz", None), Ok((200, _))).then_some(())
        },
    );
}

/// Starts two collectors at the same moment on `database_url`; both must come up.
fn start_pair(root: &Path, database_url: &str, tag: &str) -> (Collector, Collector) {
    let mut a = start_collector(root, &format!("{tag}-a"), database_url);
    let mut b = start_collector(root, &format!("{tag}-b"), database_url);
    wait_healthy(&mut a);
    wait_healthy(&mut b);
    (a, b)
}

/// GET returning JSON; panics with the collector's answer otherwise.
fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = http_get(addr, path, None).expect("GET");
    assert_eq!(status, 200, "GET {path} on {addr}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|error| panic!("GET {path}: {error}: {body}"))
}

/// Every page of `/api/v1/ooms`.
fn all_ooms(addr: SocketAddr) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = get_json(addr, &format!("/api/v1/ooms?limit=50{cursor}"));
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return items,
        }
    }
}

#[test]
fn two_collectors_on_one_postgres_store_each_oom_once_and_answer_alike() {
    // Skips only where PostgreSQL is not installed (never in CI); one that fails to
    // start fails the test.
    let Some(pg) = TestPg::start_or_skip() else {
        return;
    };
    let root = tempfile::tempdir().expect("temp dir");

    // Concurrent migrations: two more empty databases, each with a pair started together.
    for round in 0..2 {
        let url = pg.create_database().expect("database");
        let (a, b) = start_pair(root.path(), &url, &format!("race{round}"));
        drop((a, b));
    }
    let database_url = pg.create_database().expect("database");
    let (a, b) = start_pair(root.path(), &database_url, "main");

    // Tokens as an operator creates them, half through each collector's config.
    let mut tokens = String::new();
    for host in 0..HOSTS {
        let config = if host % 2 == 0 { &a.config } else { &b.config };
        let name = format!("two-{host}");
        tokens.push_str(&format!("{name} {}\n", create_token(config, &name)));
    }
    let tokens_file = root.path().join("tokens");
    std::fs::write(&tokens_file, tokens).expect("tokens");

    // Agents alternate between the collectors and send every batch to the other one too:
    // at the same time, or after the first answered. One OOM per host every 4 s on
    // average, with real kernel reports; rollups every 4 s instead of every minute.
    let summary_file = root.path().join("summary.json");
    let output = Command::new(load_gen())
        .args(["--url", &format!("http://{}", a.addr)])
        .args(["--url", &format!("http://{}", b.addr)])
        .arg("--tokens")
        .arg(&tokens_file)
        .args(["--agents", &HOSTS.to_string(), "--vms", "3"])
        .args(["--interval-secs", "1", "--secs", "12", "--rollup-secs", "4"])
        .args([
            "--ooms-per-host-hour",
            "900",
            "--near-misses-per-host-hour",
            "600",
        ])
        .args([
            "--balloon-move",
            "0.3",
            "--resend",
            "--label",
            "two collectors",
        ])
        .args(["--pid", &a.child.id().to_string()])
        .args(["--pid", &b.child.id().to_string()])
        .args(["--pg", &database_url])
        .arg("--out")
        .arg(&summary_file)
        .output()
        .expect("load_gen runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}");
    assert!(
        output.status.success(),
        "load_gen failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value =
        serde_json::from_slice(&std::fs::read(&summary_file).expect("summary")).expect("JSON");
    assert_eq!(
        summary["errors"],
        serde_json::json!({}),
        "no send failed: {stdout}"
    );
    assert_eq!(
        summary["resend_mismatches"],
        serde_json::json!([]),
        "a batch sent again to the other collector is all duplicates: {stdout}"
    );
    assert!(
        summary["resends"].as_u64().unwrap_or(0) >= (HOSTS * 6) as u64,
        "batches went to both collectors: {stdout}"
    );
    assert!(
        summary["rollup_batches"].as_u64().unwrap_or(0) >= HOSTS as u64,
        "rollup batches went to both collectors too: {stdout}"
    );
    let acked = summary["acked_ooms"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(acked.len() >= 5, "enough OOMs to prove anything: {stdout}");

    // Every acknowledged OOM is listed once, by both collectors alike.
    let list_a = all_ooms(a.addr);
    let list_b = all_ooms(b.addr);
    assert_eq!(list_a, list_b, "both collectors list the same OOMs");
    let mut listed: BTreeMap<(String, String, i64), u32> = BTreeMap::new();
    for item in &list_a {
        let key = (
            item["host"].as_str().unwrap_or_default().to_string(),
            item["vm"]["uuid"].as_str().unwrap_or_default().to_string(),
            item["time_ms"].as_i64().unwrap_or_default(),
        );
        *listed.entry(key).or_default() += 1;
    }
    for oom in &acked {
        let key = (
            oom["host"].as_str().unwrap_or_default().to_string(),
            oom["vm_uuid"].as_str().unwrap_or_default().to_string(),
            oom["time_ms"].as_i64().unwrap_or_default(),
        );
        assert_eq!(
            listed.get(&key),
            Some(&1),
            "OOM {oom} is listed exactly once"
        );
    }
    assert_eq!(
        list_a.len(),
        acked.len(),
        "nothing is listed that was not sent"
    );

    // Per event, and per VM: the same answers from both.
    for item in &list_a {
        let id = item["id"].as_i64().expect("OOM id");
        let path = format!("/api/v1/ooms/{id}");
        let detail = get_json(a.addr, &path);
        assert_eq!(detail["id"].as_i64(), Some(id), "{path}: {detail}");
        assert!(
            detail["raw_report"]
                .as_str()
                .is_some_and(|raw| !raw.is_empty()),
            "{path} holds the report: {detail}"
        );
        assert_eq!(detail, get_json(b.addr, &path), "{path} differs");
    }
    let vms = get_json(a.addr, "/api/v1/vms");
    assert_eq!(vms, get_json(b.addr, "/api/v1/vms"), "/api/v1/vms differs");
    // A VM is (host, uuid).
    let mut vm_ids: Vec<(String, String)> = acked
        .iter()
        .filter_map(|oom| {
            Some((
                oom["host"].as_str()?.to_string(),
                oom["vm_uuid"].as_str()?.to_string(),
            ))
        })
        .collect();
    vm_ids.sort();
    vm_ids.dedup();
    for (host, uuid) in vm_ids {
        assert!(
            vms.to_string().contains(&uuid),
            "VM {uuid} with an OOM is in /api/v1/vms"
        );
        let path = format!("/api/v1/vms/{host}/{uuid}/memory?since=0&until=99999999999999");
        let memory = get_json(a.addr, &path);
        assert_eq!(memory, get_json(b.addr, &path), "{path} differs");
    }
}
