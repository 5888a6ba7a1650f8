//! Tests over real loopback HTTP: the server in-process on 127.0.0.1:0, and the
//! `ballast-collector` binary as a child process that is SIGKILLed mid-ingest.
#![allow(clippy::tests_outside_test_module)]

use crate::util;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::Full;

use ballast_collector::state::ApiConfig;
use ballast_model::{Batch, IngestResponse};
use ballast_testenv::wait_until_async;

use util::client::{client, send, HttpClient};
use util::server::{collector, create_token, free_port, InProcess, KillOnDrop};

async fn post(
    client: &HttpClient,
    base: &str,
    token: &str,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    post_with(client, base, token, body, "keep-alive").await
}

/// [`post`] with a `Connection` header: `close` where the collector answers before
/// reading the whole body (401, 413), so it closes the connection: a pooled copy raced
/// the next request (seen under load: the 403 after the 401 failed to send).
async fn post_with(
    client: &HttpClient,
    base: &str,
    token: &str,
    body: Vec<u8>,
    connection: &str,
) -> Result<(u16, Vec<u8>), String> {
    let request = hyper::Request::post(format!("{base}/api/v1/ingest"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("connection", connection)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let reply = send(client, request).await?;
    Ok((reply.status, reply.body))
}

async fn get(client: &HttpClient, url: &str) -> Result<(u16, Vec<u8>), String> {
    let request = hyper::Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let reply = send(client, request).await?;
    Ok((reply.status, reply.body))
}

fn json(batch: &Batch) -> Vec<u8> {
    serde_json::to_vec(batch).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_limits_hold_over_real_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ApiConfig::default();
    config.ingest.max_body_bytes = 256 * 1024;
    let server = InProcess::start(dir.path(), &["pve1", "pve2"], config).await;
    let base = server.base.clone();
    let client = client();
    let good = util::batch(
        "pve1",
        vec![util::oom(
            "pve1/oom/1",
            util::oom_at_ms(),
            util::lab_inflated(),
        )],
    );
    let (status, _) = post_with(&client, &base, "blt_nope", json(&good), "close")
        .await
        .expect("post");
    assert_eq!(status, 401);
    let (status, _) = post(&client, &base, "blt_pve2", json(&good))
        .await
        .expect("post");
    assert_eq!(status, 403);
    let (status, _) = post_with(&client, &base, "blt_pve1", vec![b'{'; 300 * 1024], "close")
        .await
        .expect("post");
    assert_eq!(status, 413);
    let (status, _) = post(&client, &base, "blt_pve1", b"{not json".to_vec())
        .await
        .expect("post");
    assert_eq!(status, 400);
    let (status, _) = get(&client, &format!("{base}/api/v1/ooms"))
        .await
        .expect("get");
    assert_eq!(status, 200);
    let page: serde_json::Value = serde_json::from_slice(
        &get(&client, &format!("{base}/api/v1/ooms"))
            .await
            .expect("get")
            .1,
    )
    .expect("json");
    assert_eq!(
        page["items"].as_array().map(Vec::len),
        Some(0),
        "nothing stored"
    );
    for expected in [(1, 0), (0, 1)] {
        let (status, body) = post(&client, &base, "blt_pve1", json(&good))
            .await
            .expect("post");
        assert_eq!(status, 200);
        let answer: IngestResponse = serde_json::from_slice(&body).expect("answer");
        assert_eq!((answer.accepted, answer.duplicates), expected);
    }
    server.stop().await.expect("join").expect("served");
}

async fn wait_healthy(client: &HttpClient, base: &str) {
    wait_until_async(
        &format!("the collector to come up at {base}"),
        Duration::from_secs(20),
        async || matches!(get(client, &format!("{base}/healthz")).await, Ok((200, _))),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_acknowledged_survives_a_sigkill_mid_ingest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("collector.yaml");
    let mut file = std::fs::File::create(&config).expect("config");
    write!(
        file,
        // Minute rollups stay minute rows for 30 days: the restarted collector's
        // retention pass must not compact the days of rows this test stores.
        "listen: 127.0.0.1:{port}\nstate_dir: {}\ningest:\n  rate_per_sec: 10000\n  burst: 10000\n  max_in_flight_per_host: 16\nretention:\n  minute_rollup_hours: 720\n",
        dir.path().join("state").display()
    )
    .expect("write");
    let config = config.to_str().expect("utf-8 path").to_string();
    let token = create_token(&config, "pve1");
    assert!(token.starts_with("blt_"));
    let listed = collector(&["token", "list", "--config", &config])
        .output()
        .expect("list");
    assert!(String::from_utf8_lossy(&listed.stdout).starts_with("pve1\t"));

    let base = format!("http://127.0.0.1:{port}");
    let client = client();
    let child = KillOnDrop(
        collector(&["serve", "--config", &config])
            .stdout(Stdio::null())
            .spawn()
            .expect("serve"),
    );
    wait_healthy(&client, &base).await;

    // 4 agents send 50-rollup batches back to back; the collector is killed meanwhile.
    const ROWS: usize = 50;
    let mut senders = Vec::new();
    for agent in 0..4 {
        let client = client.clone();
        let base = base.clone();
        let token = token.clone();
        senders.push(tokio::spawn(async move {
            let uuid = format!("00000000-0000-4000-8000-00000000000{agent}");
            let mut acknowledged = 0usize;
            for batch_index in 0.. {
                let events = (0..ROWS)
                    .map(|row| {
                        util::rollup(
                            &format!("pve1/{agent}/{batch_index}/{row}"),
                            &uuid,
                            // One minute apart, back from the fixtures' OOM time: never
                            // in the future of the collector's clock.
                            util::oom_at_ms()
                                - i64::try_from(batch_index * ROWS + row).unwrap_or(0) * 60_000,
                            512 * util::MIB,
                        )
                    })
                    .collect();
                match post(&client, &base, &token, json(&util::batch("pve1", events))).await {
                    Ok((200, _)) => acknowledged += 1,
                    _ => break,
                }
            }
            (uuid, acknowledged)
        }));
    }
    // The scenario: the agents ingest for a while, then the collector is killed mid-flight.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(child); // SIGKILL, then reap.
    let mut results = Vec::new();
    for sender in senders {
        results.push(sender.await.expect("join"));
    }
    assert!(
        results.iter().all(|(_, n)| *n > 0),
        "every agent got acknowledgements: {results:?}"
    );

    let _child = KillOnDrop(
        collector(&["serve", "--config", &config])
            .stdout(Stdio::null())
            .spawn()
            .expect("serve again"),
    );
    wait_healthy(&client, &base).await;
    for (uuid, acknowledged) in results {
        let (status, body) = get(
            &client,
            &format!("{base}/api/v1/vms/pve1/{uuid}/memory?since=0&limit=100000"),
        )
        .await
        .expect("memory");
        assert_eq!(status, 200);
        let memory: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let stored = memory["points"].as_array().map_or(0, Vec::len);
        assert!(
            stored >= acknowledged * ROWS,
            "{uuid}: {stored} rows stored, {acknowledged} batches acknowledged"
        );
        assert_eq!(stored % ROWS, 0, "{uuid}: batches are all-or-nothing");
        assert!(
            stored <= (acknowledged + 1) * ROWS,
            "at most the one in-flight batch more"
        );
    }
}
