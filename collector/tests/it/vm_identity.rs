//! A VM is (host, uuid), against the real `ballast-collector` binary: two hosts,
//! each with its own token, each run a VM `100` (the vmid every standalone Proxmox
//! host has) and send an inventory, balloon rollups and an OOM of it. Both VMs are
//! listed, each OOM is judged with its own host's balloon history, and a batch with
//! one host's token naming the other host changes nothing of the other host's VM.
//!
//! A second case: hosts the collector's config puts in one cluster share a VM's
//! history across a migration; a host outside the cluster does not.
//!
//! Times are relative to the test's clock (any date).
#![allow(clippy::tests_outside_test_module)]

use crate::util;

use std::process::Stdio;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::Full;

use ballast_model::{BalloonAtOom, Batch};
use ballast_testenv::wait_until_async;

use util::client::{client, send, HttpClient};
use util::server::{collector, create_token, free_port, KillOnDrop};

/// The vmid both hosts use as the VM's identity.
const VMID: &str = "100";

async fn post(client: &HttpClient, base: &str, token: &str, batch: &Batch) -> u16 {
    let request = hyper::Request::post(format!("{base}/api/v1/ingest"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(batch).expect("json"),
        )))
        .expect("request");
    send(client, request).await.expect("post").status
}

async fn get(client: &HttpClient, url: &str) -> (u16, Vec<u8>) {
    let request = hyper::Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = send(client, request).await.expect("get");
    (reply.status, reply.body)
}

async fn get_json(client: &HttpClient, url: &str) -> serde_json::Value {
    let (status, body) = get(client, url).await;
    assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("json")
}

/// Host `host`'s history of VM 100: an inventory and 30 minute rollups ending just
/// before `oom_at_ms` with the balloon at `actual_kib` of 512 MiB.
fn history_batch(host: &str, oom_at_ms: i64, actual_kib: u64) -> Batch {
    let mut events = vec![util::inventory(
        &format!("{host}/inv/1"),
        oom_at_ms - 3_600_000,
        &[(VMID, &format!("web-{host}"))],
    )];
    for minute in 0..30 {
        events.push(util::rollup(
            &format!("{host}/r/{minute}"),
            VMID,
            oom_at_ms - (31 - minute) * 60_000,
            actual_kib,
        ));
    }
    util::batch(host, events)
}

/// Host `host`'s OOM of VM 100, sent after its history: the event carries no balloon
/// figures of its own, so its verdict rests on what the collector stored for the VM.
fn oom_batch(host: &str, oom_at_ms: i64) -> Batch {
    let mut oom = util::lab_inflated();
    oom.vm.uuid = VMID.into();
    oom.vm.name = format!("web-{host}");
    // No sample of its own: the stored rollups that ended before the kill (printed
    // after a read 5 s before the capture) stand for the balloon at the OOM.
    oom.balloon_at_oom = BalloonAtOom {
        kill_after_ms: Some(oom_at_ms - 5_000),
        ..BalloonAtOom::default()
    };
    oom.balloon_history.clear();
    util::batch(
        host,
        vec![util::oom(&format!("{host}/oom/1"), oom_at_ms, oom)],
    )
}

/// The verdict of the one OOM `host` has.
async fn verdict_of(client: &HttpClient, base: &str, host: &str) -> (String, serde_json::Value) {
    let page = get_json(client, &format!("{base}/api/v1/ooms?host={host}")).await;
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{host} has one OOM: {page}");
    let verdict = items[0]["correlation"]["verdict"]
        .as_str()
        .expect("verdict")
        .to_string();
    (verdict, items[0].clone())
}

/// The real collector with `extra_yaml` in its config and a token per host.
struct Running {
    _dir: tempfile::TempDir,
    _child: KillOnDrop,
    base: String,
    client: HttpClient,
    tokens: Vec<String>,
}

async fn start(hosts: &[&str], extra_yaml: &str) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("collector.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nstate_dir: {}\n{extra_yaml}",
            dir.path().join("state").display()
        ),
    )
    .expect("config");
    let config = config.to_str().expect("utf-8 path").to_string();
    let tokens = hosts
        .iter()
        .map(|host| create_token(&config, host))
        .collect();
    let child = KillOnDrop(
        collector(&["serve", "--config", &config])
            .stdout(Stdio::null())
            .spawn()
            .expect("serve"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = client();
    wait_until_async(
        "the collector to come up",
        Duration::from_secs(20),
        async || {
            send(
                &client,
                hyper::Request::get(format!("{base}/healthz"))
                    .body(Full::new(Bytes::new()))
                    .expect("request"),
            )
            .await
            .is_ok()
        },
    )
    .await;
    Running {
        _dir: dir,
        _child: child,
        base,
        client,
        tokens,
    }
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_with_vm_100_stay_two_vms_each_judged_by_its_own_history() {
    let running = start(&["pve-a", "pve-b"], "").await;
    let (base, client) = (running.base.clone(), running.client.clone());
    let (token_a, token_b) = (running.tokens[0].clone(), running.tokens[1].clone());
    let now_ms = now_ms();
    let oom_at_ms = now_ms - 10 * 60_000;
    // pve-a's VM 100: the balloon never moved. pve-b's VM 100: held 312 MiB of 512.
    // Histories first (both hosts), then the OOMs.
    for (host, token, actual) in [
        ("pve-a", &token_a, 512 * util::MIB),
        ("pve-b", &token_b, 200 * util::MIB),
    ] {
        let batch = history_batch(host, oom_at_ms, actual);
        assert_eq!(post(&client, &base, token, &batch).await, 200, "{host}");
    }
    for (host, token) in [("pve-a", &token_a), ("pve-b", &token_b)] {
        let batch = oom_batch(host, oom_at_ms);
        assert_eq!(post(&client, &base, token, &batch).await, 200, "{host}");
    }

    // Both VMs are listed, each on its own host with its own name and OOM.
    let vms = get_json(&client, &format!("{base}/api/v1/vms")).await;
    let listed: Vec<(String, String, String, i64)> = vms["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|vm| {
            (
                vm["host"].as_str().unwrap_or_default().to_string(),
                vm["uuid"].as_str().unwrap_or_default().to_string(),
                vm["name"].as_str().unwrap_or_default().to_string(),
                vm["oom_count"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("pve-a".into(), VMID.into(), "web-pve-a".into(), 1),
            ("pve-b".into(), VMID.into(), "web-pve-b".into(), 1),
        ]
    );

    // Each OOM was judged with its own host's rollups: pve-a's balloon held nothing.
    let (verdict_a, oom_a) = verdict_of(&client, &base, "pve-a").await;
    let (verdict_b, oom_b) = verdict_of(&client, &base, "pve-b").await;
    assert_eq!(verdict_a, "not_balloon", "{oom_a}");
    assert_eq!(oom_a["correlation"]["balloon_held_kb"], 0, "{oom_a}");
    assert_eq!(verdict_b, "balloon", "{oom_b}");
    assert_eq!(
        oom_b["correlation"]["balloon_held_kb"],
        312 * util::MIB,
        "{oom_b}"
    );

    // Each VM's memory is its own host's; the uuid alone is ambiguous (409).
    for (host, actual) in [("pve-a", 512 * util::MIB), ("pve-b", 200 * util::MIB)] {
        let memory = get_json(
            &client,
            &format!("{base}/api/v1/vms/{host}/{VMID}/memory?since=0"),
        )
        .await;
        let points = memory["points"].as_array().expect("points");
        assert_eq!(points.len(), 30, "{host}");
        assert!(
            points.iter().all(|p| p["actual_kib"]["last"] == actual),
            "{host}: {memory}"
        );
    }
    let (status, body) = get(&client, &format!("{base}/api/v1/vms/{VMID}/memory")).await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("pve-a") && body.contains("pve-b"),
        "the 409 names the hosts: {body}"
    );

    // pve-a's token cannot write pve-b's VM: a batch naming host pve-b is refused,
    // and pve-a's own inventory of VM 100 touches only pve-a's row.
    let before_b = get_json(&client, &format!("{base}/api/v1/vms?host=pve-b")).await;
    let mut forged = history_batch("pve-b", now_ms - 60_000, 64 * util::MIB);
    forged
        .events
        .extend(oom_batch("pve-b", now_ms - 60_000).events);
    for envelope in &mut forged.events {
        envelope.key = format!("forged/{}", envelope.key);
    }
    assert_eq!(post(&client, &base, &token_a, &forged).await, 403);
    let renamed = util::batch(
        "pve-a",
        vec![util::inventory(
            "pve-a/inv/2",
            now_ms - 60_000,
            &[(VMID, "renamed-by-a"), ("101", "only-on-a")],
        )],
    );
    assert_eq!(post(&client, &base, &token_a, &renamed).await, 200);
    assert_eq!(
        get_json(&client, &format!("{base}/api/v1/vms?host=pve-b")).await,
        before_b,
        "pve-b's VM is unchanged"
    );
    let a = get_json(&client, &format!("{base}/api/v1/vms?host=pve-a")).await;
    let names: Vec<(&str, &str)> = a["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|vm| {
            (
                vm["uuid"].as_str().unwrap_or_default(),
                vm["name"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(names, vec![("101", "only-on-a"), (VMID, "renamed-by-a")]);
    let (verdict_b_after, _) = verdict_of(&client, &base, "pve-b").await;
    assert_eq!(verdict_b_after, "balloon");
    let memory_b = get_json(
        &client,
        &format!("{base}/api/v1/vms/pve-b/{VMID}/memory?since=0"),
    )
    .await;
    assert_eq!(memory_b["points"].as_array().map(Vec::len), Some(30));

    // The dashboard links each VM by (host, uuid); the old uuid link lists both.
    let (status, page) = get(&client, &format!("{base}/vms/pve-b/{VMID}")).await;
    let page = String::from_utf8_lossy(&page);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("web-pve-b"), "{page}");
    assert!(
        page.contains(&format!("href=\"/vms/pve-a/{VMID}\"")),
        "the page links the same uuid on pve-a: {page}"
    );
    let (status, page) = get(&client, &format!("{base}/vms/{VMID}")).await;
    let page = String::from_utf8_lossy(&page);
    assert_eq!(status, 300, "{page}");
    assert!(
        page.contains(&format!("href=\"/vms/pve-a/{VMID}\""))
            && page.contains(&format!("href=\"/vms/pve-b/{VMID}\"")),
        "{page}"
    );
    // A uuid one host reported: the old paths still serve it.
    let reply = send(
        &client,
        hyper::Request::get(format!("{base}/vms/101?range=7d"))
            .body(Full::new(Bytes::new()))
            .expect("request"),
    )
    .await
    .expect("get");
    assert_eq!(reply.status, 303);
    assert_eq!(
        reply.headers.get("location").and_then(|v| v.to_str().ok()),
        Some("/vms/pve-a/101?range=7d")
    );
    let memory = get_json(&client, &format!("{base}/api/v1/vms/101/memory")).await;
    assert_eq!(
        (memory["host"].as_str(), memory["uuid"].as_str()),
        (Some("pve-a"), Some("101"))
    );
}

/// Hosts declared one cluster in the collector's config (`clusters:`): a VM that
/// migrated from pve-c to pve-d is judged with the history it had on pve-c; pve-e,
/// outside the cluster, sending an OOM of the same uuid gets none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_migrated_inside_a_configured_cluster_keeps_its_history() {
    let running = start(
        &["pve-c", "pve-d", "pve-e"],
        "clusters:\n  prod: [pve-c, pve-d]\n",
    )
    .await;
    let (base, client) = (&running.base, &running.client);
    let oom_at_ms = now_ms() - 10 * 60_000;
    // On pve-c the balloon held 312 MiB of VM 100's 512 MiB; then it moved to pve-d.
    let history = history_batch("pve-c", oom_at_ms, 200 * util::MIB);
    assert_eq!(post(client, base, &running.tokens[0], &history).await, 200);
    for (host, token) in [("pve-d", &running.tokens[1]), ("pve-e", &running.tokens[2])] {
        let batch = oom_batch(host, oom_at_ms);
        assert_eq!(post(client, base, token, &batch).await, 200, "{host}");
    }
    let (verdict_d, oom_d) = verdict_of(client, base, "pve-d").await;
    assert_eq!(verdict_d, "balloon", "{oom_d}");
    assert_eq!(
        oom_d["correlation"]["balloon_held_kb"],
        312 * util::MIB,
        "pve-d's OOM is judged with pve-c's rollups: {oom_d}"
    );
    let (_, oom_e) = verdict_of(client, base, "pve-e").await;
    assert_ne!(
        oom_e["correlation"]["balloon_held_kb"],
        312 * util::MIB,
        "pve-e is not in the cluster: none of pve-c's history: {oom_e}"
    );
    let id = oom_e["id"].as_i64().expect("id");
    let detail = get_json(client, &format!("{base}/api/v1/ooms/{id}")).await;
    assert_eq!(detail["correlation_detail"]["window_points"], 0, "{detail}");

    // The VM page of pve-d charts the joined history and links pve-c's rows.
    let (status, page) = get(client, &format!("{base}/vms/pve-d/{VMID}")).await;
    let page = String::from_utf8_lossy(&page);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("History joined with"), "{page}");
    assert!(
        page.contains(&format!("href=\"/vms/pve-c/{VMID}\"")),
        "{page}"
    );
}
