//! `GET /metrics` of the real `ballast-collector` binary (SQLite, loopback HTTP, a
//! local webhook receiver): ingest OOMs, duplicates and bad batches, let webhooks
//! deliver and fail and retention delete, then scrape and check the counters moved
//! as an operator would read them. Every scrape is parsed strictly and, with
//! promtool installed (scripts/install-deps.sh; required in CI), linted by
//! `promtool check metrics`. A SIGHUP reload keeps the counters. A real SQLite
//! store made to refuse writes gives 5xx and storage errors. Also: docs/metrics.md
//! lists every family, and the Grafana dashboard and alert rules name only families
//! the collector exports.
#![allow(clippy::tests_outside_test_module)]

use crate::util;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_testenv::wait_until_async;
use util::server::{collector, create_token, free_port, InProcess, KillOnDrop};

const READ_TOKEN: &str = "read-secret-for-metrics";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A webhook receiver answering 200 on `/hook` and `/hook2`, counting the posts of each.
async fn receiver() -> (u16, [Arc<AtomicU64>; 2]) {
    let posts = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let counting = |counter: &Arc<AtomicU64>| {
        let counted = Arc::clone(counter);
        axum::routing::post(move || {
            let counted = Arc::clone(&counted);
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                "ok"
            }
        })
    };
    let app = axum::Router::new()
        .route("/hook", counting(&posts[0]))
        .route("/hook2", counting(&posts[1]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, posts)
}

// ------------------------------------------------------------ exposition parser

/// One scrape: series (name + labels as written) -> value, and family -> type.
#[derive(Debug, Default)]
struct Scrape {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    fn value(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no series {series}; have {:?}", self.samples.keys()))
    }
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses the text format, panicking with the line number on anything malformed:
/// bad names or labels, unparsable values, samples without a `# TYPE`, a type
/// given twice, a series twice.
fn parse(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    for (index, line) in text.lines().enumerate() {
        let at = index + 1;
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let keyword = parts.next().unwrap_or_default();
            let name = parts.next().unwrap_or_default();
            let tail = parts.next().unwrap_or_default();
            assert!(is_name(name), "line {at}: bad metric name in {line:?}");
            match keyword {
                "HELP" => assert!(!tail.is_empty(), "line {at}: empty HELP"),
                "TYPE" => {
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&tail),
                        "line {at}: bad type {tail:?}"
                    );
                    assert!(
                        scrape
                            .types
                            .insert(name.to_string(), tail.to_string())
                            .is_none(),
                        "line {at}: {name} typed twice"
                    );
                }
                _ => panic!("line {at}: unknown comment {line:?}"),
            }
            continue;
        }
        assert!(!line.is_empty(), "line {at}: empty line");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("line {at}: no value in {line:?}"));
        let parsed: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("line {at}: bad value {v:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (
                name,
                Some(
                    rest.strip_suffix('}')
                        .unwrap_or_else(|| panic!("line {at}: unclosed labels")),
                ),
            ),
            None => (series, None),
        };
        assert!(is_name(name), "line {at}: bad metric name {name:?}");
        if let Some(labels) = labels {
            check_labels(labels, at);
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| scrape.types.get(*base).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        assert!(
            scrape.types.contains_key(family),
            "line {at}: sample of {name} without a # TYPE before it"
        );
        assert!(
            scrape.samples.insert(series.to_string(), parsed).is_none(),
            "line {at}: series {series} twice"
        );
    }
    scrape
}

/// `k="v",k2="v2"` with escapes `\\`, `\"`, `\n` only.
fn check_labels(labels: &str, at: usize) {
    let mut rest = labels;
    let mut seen = BTreeSet::new();
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("line {at}: bad label in {labels:?}"));
        assert!(
            is_name(name) && !name.contains(':'),
            "line {at}: bad label name {name:?}"
        );
        assert!(seen.insert(name), "line {at}: label {name} twice");
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\' | '"' | 'n')) => {}
                    other => panic!("line {at}: bad escape {other:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, '\n')) => panic!("line {at}: raw newline in a label"),
                Some(_) => {}
                None => panic!("line {at}: unterminated label value"),
            }
        };
        rest = &after[end + 1..];
        if let Some(next) = rest.strip_prefix(',') {
            rest = next;
        } else {
            assert!(rest.is_empty(), "line {at}: junk after a label: {rest:?}");
        }
    }
}

/// `promtool check metrics` on the scrape: required in CI, skipped with a note elsewhere.
fn promtool_check(text: &str) {
    let Some(promtool) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("promtool"))
            .find(|path| path.is_file())
    }) else {
        assert!(
            !ballast_testenv::in_ci(),
            "promtool is missing (scripts/install-deps.sh installs it)"
        );
        ballast_testenv::skip(
            &ballast_testenv::current_test(),
            "promtool check metrics: promtool not installed",
        );
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool output");
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ------------------------------------------------------------------- the test

struct Running {
    base: String,
    http: reqwest::Client,
    token: String,
    read_token: String,
    port: u16,
    dead_port: u16,
    child: KillOnDrop,
}

impl Running {
    async fn ingest(&self, token: &str, body: Vec<u8>) -> (u16, String) {
        let response = self
            .http
            .post(format!("{}/api/v1/ingest", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("ingest request");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    async fn scrape_text(&self) -> String {
        let response = self
            .http
            .get(format!("{}/metrics", self.base))
            .bearer_auth(&self.read_token)
            .send()
            .await
            .expect("scrape");
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        response.text().await.expect("scrape body")
    }

    async fn scrape(&self) -> Scrape {
        parse(&self.scrape_text().await)
    }

    /// Scrapes until `done` holds (webhooks and retention run in the background).
    async fn scrape_until(&self, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let scrape = self.scrape().await;
            if done(&scrape) {
                return scrape;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {scrape:?}"
            );
            // A poll, not wait_until_async: the timeout message shows the last scrape.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Writes collector.yaml: read token `read_token`, webhook "ok" posting to
/// `hook_path` of the receiver, webhook "down" to a closed port.
fn write_config(
    dir: &Path,
    (port, hook_port, dead_port): (u16, u16, u16),
    read_token: &str,
    hook_path: &str,
) {
    let read_file = dir.join(format!("{read_token}.token"));
    std::fs::write(&read_file, read_token).expect("read token");
    std::fs::write(
        dir.join("collector.yaml"),
        format!(
            "listen: 127.0.0.1:{port}\n\
             state_dir: {state}\n\
             read:\n  token_file: {read}\n\
             ingest:\n  rate_per_sec: 1000\n  burst: 1000\n\
             retention:\n  rollup_days: 30\n  interval_secs: 1\n\
             notify:\n  poll_interval_ms: 100\n  webhooks:\n\
             \x20   - {{name: ok, url: 'http://127.0.0.1:{hook_port}{hook_path}', format: json}}\n\
             \x20   - {{name: down, url: 'http://127.0.0.1:{dead_port}/hook', format: json, \
             timeout_secs: 2, max_attempts: 2, backoff_initial_ms: 50, backoff_max_secs: 1}}\n",
            state = dir.join("state").display(),
            read = read_file.display(),
        ),
    )
    .expect("config");
}

async fn start(dir: &Path, hook_port: u16) -> Running {
    let port = free_port();
    let dead_port = free_port();
    write_config(dir, (port, hook_port, dead_port), READ_TOKEN, "/hook");
    let config = dir.join("collector.yaml");
    let config = config.to_str().expect("utf-8 path").to_string();
    let token = create_token(&config, "pve1");
    let child = KillOnDrop(
        collector(&["serve", "--config", &config])
            .stdout(Stdio::null())
            .spawn()
            .expect("serve"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_until_async(
        "the collector to come up",
        Duration::from_secs(30),
        async || {
            http.get(format!("{base}/healthz"))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success())
        },
    )
    .await;
    Running {
        base,
        http,
        token,
        read_token: READ_TOKEN.to_string(),
        port,
        dead_port,
        child,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_counts_ingest_outcomes_webhooks_and_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hook_port, posts) = receiver().await;
    let mut collector = start(dir.path(), hook_port).await;

    // The read token guards /metrics like the query API.
    let anonymous = collector
        .http
        .get(format!("{}/metrics", collector.base))
        .send()
        .await
        .expect("anonymous scrape");
    assert_eq!(anonymous.status().as_u16(), 401);

    let first = collector.scrape_text().await;
    promtool_check(&first);
    let before = parse(&first);
    assert_eq!(
        before.value("ballast_collector_build_info{version=\"0.1.0\"}"),
        1.0
    );
    let started = before.value("ballast_collector_start_time_seconds");
    let now = ballast_collector::now_ms() as f64 / 1000.0;
    assert!(
        (now - 120.0..=now).contains(&started),
        "start {started}, now {now}"
    );
    assert!(
        !before
            .samples
            .contains_key("ballast_collector_last_ingest_timestamp_seconds"),
        "no ingest yet: no timestamp"
    );

    // One OOM, one fresh rollup, one rollup past retention (40 days old); then the OOM
    // and the fresh rollup again (not the old rollup: retention, every second here,
    // may have deleted it and its key by then, and it would be new again).
    let old = ballast_collector::now_ms() - 40 * 86_400_000;
    let fresh = vec![
        util::oom("pve1/oom/1", util::oom_at_ms(), util::lab_inflated()),
        util::rollup(
            "pve1/r/1",
            util::LAB_UUID,
            util::oom_at_ms() - 60_000,
            300 * util::MIB,
        ),
    ];
    let mut first = fresh.clone();
    first.push(util::rollup(
        "pve1/r/old",
        util::LAB_UUID,
        old,
        300 * util::MIB,
    ));
    let body = serde_json::to_vec(&util::batch("pve1", first)).expect("json");
    let token = collector.token.clone();
    assert_eq!(collector.ingest(&token, body).await.0, 200);
    let again = serde_json::to_vec(&util::batch("pve1", fresh)).expect("json");
    let (status, answer) = collector.ingest(&token, again).await;
    assert_eq!(
        (status, answer.as_str()),
        (200, r#"{"accepted":0,"duplicates":2}"#)
    );
    assert_eq!(collector.ingest(&token, b"{not json".to_vec()).await.0, 400);
    assert_eq!(
        collector
            .ingest(&token, br#"{"host_id":"pve1"}"#.to_vec())
            .await
            .0,
        422
    );
    assert_eq!(collector.ingest("blt_wrong", b"{}".to_vec()).await.0, 401);

    // The verdict the API shows for the OOM is the label it is counted under.
    let listed: serde_json::Value = collector
        .http
        .get(format!("{}/api/v1/ooms", collector.base))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("list ooms")
        .json()
        .await
        .expect("ooms json");
    let verdict = listed["items"][0]["correlation"]["verdict"]
        .as_str()
        .expect("a verdict")
        .to_string();

    let text = collector.scrape_text().await;
    promtool_check(&text);
    let after = parse(&text);
    let requests = |outcome: &str| {
        after.value(&format!(
            "ballast_collector_ingest_requests_total{{outcome=\"{outcome}\"}}"
        ))
    };
    let rejected = |reason: &str| {
        after.value(&format!(
            "ballast_collector_ingest_requests_total{{outcome=\"rejected\",reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(requests("accepted"), 1.0);
    assert_eq!(requests("duplicate"), 1.0);
    assert_eq!(requests("error"), 0.0);
    assert_eq!(rejected("bad_request"), 1.0);
    assert_eq!(rejected("invalid"), 1.0);
    assert_eq!(rejected("unauthorized"), 1.0);
    assert_eq!(rejected("rate_limited"), 0.0);
    assert_eq!(
        after.types["ballast_collector_ingest_duration_seconds"],
        "histogram"
    );
    assert_eq!(
        after.value("ballast_collector_ingest_duration_seconds_count"),
        5.0
    );
    assert_eq!(
        after.value("ballast_collector_ingest_duration_seconds_bucket{le=\"+Inf\"}"),
        5.0
    );
    assert!(after.value("ballast_collector_ingest_duration_seconds_sum") > 0.0);
    assert_eq!(after.value("ballast_collector_events_accepted_total"), 3.0);
    assert_eq!(after.value("ballast_collector_events_duplicate_total"), 2.0);
    assert_eq!(
        after.value("ballast_collector_events_stored_total{type=\"oom\"}"),
        1.0
    );
    assert_eq!(
        after.value("ballast_collector_events_stored_total{type=\"rollup\"}"),
        2.0
    );
    assert_eq!(
        after.value(&format!(
            "ballast_collector_ooms_stored_total{{kind=\"guest\",verdict=\"{verdict}\"}}"
        )),
        1.0
    );
    let ooms: f64 = after
        .samples
        .iter()
        .filter(|(series, _)| series.starts_with("ballast_collector_ooms_stored_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(ooms, 1.0, "the re-sent OOM is not counted twice");
    assert_eq!(after.value("ballast_collector_storage_errors_total"), 0.0);
    let last = after.value("ballast_collector_last_ingest_timestamp_seconds");
    assert!(last >= started, "last ingest {last} after start {started}");
    // No host, VM or guest string becomes a label.
    for private in ["pve1", util::LAB_UUID, "memhog"] {
        assert!(!text.contains(private), "{private} leaked into /metrics");
    }

    // Webhooks: "ok" delivers, "down" (refused connections) retries once, gives up.
    let done = collector
        .scrape_until("webhook delivery and give-up", |s| {
            s.value("ballast_collector_notifications_sent_total") >= 1.0
                && s.value("ballast_collector_notifications_failed_total") >= 1.0
                && s.value("ballast_collector_notify_outbox_rows{state=\"pending\"}") == 0.0
        })
        .await;
    assert_eq!(
        done.value("ballast_collector_notifications_sent_total"),
        1.0
    );
    assert_eq!(
        done.value("ballast_collector_notifications_failed_total"),
        1.0
    );
    assert!(done.value("ballast_collector_notification_retries_total") >= 1.0);
    assert_eq!(
        done.value("ballast_collector_notifications_suppressed_total"),
        0.0
    );
    assert_eq!(
        done.value("ballast_collector_notify_outbox_rows{state=\"failed\"}"),
        1.0
    );
    assert_eq!(
        posts[0].load(Ordering::SeqCst),
        1,
        "the receiver got the one OOM"
    );

    // Retention (every second here) deletes the 40-day-old rollup.
    let done = collector
        .scrape_until("retention deleting the old rollup", |s| {
            s.value("ballast_collector_retention_deleted_rows_total{table=\"rollups\"}") >= 1.0
        })
        .await;
    assert_eq!(
        done.value("ballast_collector_retention_deleted_rows_total{table=\"rollups\"}"),
        1.0
    );
    assert!(done.value("ballast_collector_retention_passes_total") >= 2.0);
    assert_eq!(
        done.value("ballast_collector_retention_failures_total"),
        0.0
    );
    assert!(done.value("ballast_collector_retention_last_duration_seconds") >= 0.0);
    promtool_check(&collector.scrape_text().await);

    // SIGHUP with a new read token and webhook "ok" moved to /hook2: the counters
    // carry over, and the senders started by the reload count into them.
    let new_read = "read-secret-after-reload";
    write_config(
        dir.path(),
        (collector.port, hook_port, collector.dead_port),
        new_read,
        "/hook2",
    );
    let pid = collector.child.0.id().to_string();
    let hup = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    collector.read_token = new_read.to_string();
    wait_until_async(
        "the reload to take the new read token",
        Duration::from_secs(30),
        async || {
            collector
                .http
                .get(format!("{}/metrics", collector.base))
                .bearer_auth(new_read)
                .send()
                .await
                .expect("scrape during reload")
                .status()
                .is_success()
        },
    )
    .await;
    let reloaded = collector.scrape().await;
    for series in [
        "ballast_collector_ingest_requests_total{outcome=\"accepted\"}",
        "ballast_collector_notifications_sent_total",
        "ballast_collector_notifications_failed_total",
        "ballast_collector_ingest_requests_total{outcome=\"rejected\",reason=\"unauthorized\"}",
    ] {
        assert_eq!(reloaded.value(series), 1.0, "{series} after SIGHUP");
    }
    let second = util::batch(
        "pve1",
        vec![util::oom(
            "pve1/oom/2",
            util::oom_at_ms() + 60_000,
            util::lab_inflated(),
        )],
    );
    let body = serde_json::to_vec(&second).expect("json");
    assert_eq!(collector.ingest(&token, body).await.0, 200);
    let done = collector
        .scrape_until("the reloaded senders", |s| {
            s.value("ballast_collector_notifications_sent_total") >= 2.0
                && s.value("ballast_collector_notifications_failed_total") >= 2.0
        })
        .await;
    assert_eq!(
        done.value("ballast_collector_notifications_sent_total"),
        2.0
    );
    assert_eq!(
        done.value("ballast_collector_notifications_failed_total"),
        2.0
    );
    assert_eq!(
        done.value("ballast_collector_ingest_requests_total{outcome=\"accepted\"}"),
        2.0
    );
    assert_eq!(
        (
            posts[0].load(Ordering::SeqCst),
            posts[1].load(Ordering::SeqCst)
        ),
        (1, 1),
        "the second OOM went to the reloaded URL"
    );
}

/// The parser of these tests refuses what Prometheus would refuse.
#[test]
fn the_exposition_parser_fails_on_malformed_lines() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{k=\"v\\\"\"} 1\n";
    assert_eq!(parse(good).value("a_total{k=\"v\\\"\"}"), 1.0);
    for bad in [
        "a_total 1\n",                                    // no TYPE
        "# TYPE a_total counter\na_total one\n",          // value
        "# TYPE a_total counter\na_total{k=v} 1\n",       // unquoted label
        "# TYPE a_total counter\na_total{k=\"v\"\n",      // unclosed
        "# TYPE a_total counter\na_total{k=\"\\x\"} 1\n", // bad escape
        "# TYPE a_total counter\na_total 1\na_total 2\n", // series twice
        "# TYPE a_total counter\n# TYPE a_total gauge\n", // typed twice
        "# TYPE a_total kounter\n",                       // type
        "# TYPE 1a counter\n",                            // name
        "# TYPE a_total counter\na_total 1",              // no final newline
    ] {
        let outcome = std::panic::catch_unwind(|| parse(bad));
        assert!(outcome.is_err(), "accepted {bad:?}");
    }
}

// ------------------------------------------------------- docs and deploy files

/// Every `ballast_collector_…` identifier in `text`, histogram suffixes folded.
fn collector_names(text: &str, histograms: &BTreeSet<String>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("ballast_collector_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let folded = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|b| histograms.contains(*b))
            })
            .unwrap_or(name);
        names.insert(folded.to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn docs_dashboard_and_rules_name_only_exported_collector_metrics() {
    let metrics = ballast_collector::metrics::Metrics::new();
    metrics.retention_pass(Duration::from_millis(1), Some(Default::default()));
    metrics.ingest(
        ballast_collector::metrics::IngestOutcome::Accepted,
        Duration::from_millis(1),
        Some((&Default::default(), 1, 0)),
    );
    let scrape = parse(&metrics.render_scrape(Some(&[]), Some((0, 0)), Some(0)));
    let exported: BTreeSet<String> = scrape.types.keys().cloned().collect();
    let histograms: BTreeSet<String> = scrape
        .types
        .iter()
        .filter(|(_, t)| *t == "histogram")
        .map(|(n, _)| n.clone())
        .collect();
    assert!(exported.len() >= 20, "{exported:?}");
    let read = |path: &str| {
        std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let docs = collector_names(&read("docs/metrics.md"), &histograms);
    let missing: Vec<_> = exported.difference(&docs).collect();
    assert!(missing.is_empty(), "docs/metrics.md misses {missing:?}");
    for path in [
        "docs/metrics.md",
        "deploy/grafana/ballast.json",
        "deploy/prometheus/ballast-rules.yml",
    ] {
        let named = collector_names(&read(path), &histograms);
        let unknown: Vec<_> = named.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{path} names collector metrics that are not exported: {unknown:?}"
        );
    }
}

/// A real SQLite store that starts refusing writes (a trigger raising on insert, as a
/// full disk would) and loses the outbox table: ingest answers 500 and counts as
/// `outcome="error"`, both failures as storage errors, and the outbox gauge is
/// absent rather than a made-up 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failures_count_as_5xx_and_storage_errors() {
    use ballast_collector::state::ApiConfig;
    use ballast_collector::storage::sql::Query;
    use ballast_collector::storage::Store;

    let dir = tempfile::tempdir().expect("tempdir");
    let server = InProcess::start(dir.path(), &["pve1"], ApiConfig::default()).await;
    let (base, store) = (server.base.clone(), server.store.clone());
    let http = reqwest::Client::new();
    let scrape = || async {
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body");
        (parse(&text), text)
    };

    store
        .execute(Query::new(
            "CREATE TRIGGER refuse_rollups BEFORE INSERT ON rollups \
             BEGIN SELECT RAISE(FAIL, 'injected: the disk is full'); END",
            Vec::new(),
        ))
        .await
        .expect("trigger");
    let batch = util::batch(
        "pve1",
        vec![util::rollup(
            "pve1/r/1",
            util::LAB_UUID,
            util::oom_at_ms(),
            300 * util::MIB,
        )],
    );
    let answer = http
        .post(format!("{base}/api/v1/ingest"))
        .bearer_auth("blt_pve1")
        .json(&batch)
        .send()
        .await
        .expect("ingest");
    assert_eq!(answer.status().as_u16(), 500);
    let (after, _) = scrape().await;
    assert_eq!(
        after.value("ballast_collector_ingest_requests_total{outcome=\"error\"}"),
        1.0
    );
    assert_eq!(
        after.value("ballast_collector_ingest_requests_total{outcome=\"accepted\"}"),
        0.0
    );
    assert_eq!(after.value("ballast_collector_storage_errors_total"), 1.0);
    assert_eq!(after.value("ballast_collector_events_accepted_total"), 0.0);
    assert!(!after
        .samples
        .contains_key("ballast_collector_last_ingest_timestamp_seconds"));
    assert_eq!(
        after.value("ballast_collector_notify_outbox_rows{state=\"pending\"}"),
        0.0
    );

    store
        .execute(Query::new(
            "ALTER TABLE notify_outbox RENAME TO notify_outbox_gone",
            Vec::new(),
        ))
        .await
        .expect("rename");
    let (broken, text) = scrape().await;
    assert_eq!(broken.value("ballast_collector_storage_errors_total"), 2.0);
    assert!(
        !text.contains("ballast_collector_notify_outbox_rows"),
        "no outbox figures when they cannot be counted:\n{text}"
    );
    promtool_check(&text);
    let _ = server.stop().await;
}
