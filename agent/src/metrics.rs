//! Prometheus metrics of the agent: per-VM balloon gauges, OOM counters by kind,
//! and the agent's own health, served as text on `GET /metrics`.
//!
//! Names follow Prometheus conventions: base units (bytes, seconds), `_total` for
//! counters. Example:
//! ```text
//! # TYPE ballast_vm_balloon_actual_bytes gauge
//! ballast_vm_balloon_actual_bytes{vm_uuid="3f2a...",vm_name="web1"} 209715200
//! # TYPE ballast_guest_ooms_total counter
//! ballast_guest_ooms_total{vm_uuid="3f2a...",vm_name="web1",verdict="balloon"} 1
//! ```
//!
//! The listener is hyper's HTTP/1 server with bounds, meant for a loopback or
//! management-network scraper: `GET /metrics` only, one request per connection, at
//! most 64 connections at once, 5 s to send the request head, 10 s per connection.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::fleet::Fleet;
use crate::shared::SharedLock;

/// Counters the run loop bumps.
#[derive(Debug, Clone, Default)]
pub struct AgentCounters {
    pub polls: u64,
    pub poll_errors: u64,
    pub last_poll_seconds: f64,
    /// (vm uuid, vm name, verdict) -> OOMs captured.
    pub ooms: BTreeMap<(String, String, String), u64>,
    /// near-miss kind -> count.
    pub near_misses: BTreeMap<String, u64>,
    pub flood_suppressed: u64,
    pub spool_bytes: u64,
    pub spool_events: u64,
    pub dropped_rollups: u64,
}

/// What the exporter reads: the fleet and the counters, shared with the run loop, and
/// the sender's counters (lock-free atomics) when a collector is configured.
#[derive(Debug, Clone)]
pub struct Shared {
    pub fleet: SharedLock<Fleet>,
    pub counters: SharedLock<AgentCounters>,
    /// The sender's delivery counters, when the agent delivers to a collector.
    pub sink: Option<Arc<crate::sink::SinkStats>>,
}

impl Shared {
    /// The exposition text of the current state. One shared lock at a time
    /// ([`crate::shared`]): the counters are copied out, then the fleet is rendered
    /// under its own lock. Blocking: async code calls it on a blocking thread.
    pub fn render(&self) -> String {
        let counters = self.counters.lock().clone();
        let body = {
            let fleet = self.fleet.lock();
            render(&fleet, &counters)
        };
        match &self.sink {
            Some(sink) => body + &sink.render_metrics(now_ms()),
            None => body,
        }
    }
}

/// Renders the exposition text.
pub fn render(fleet: &Fleet, counters: &AgentCounters) -> String {
    let mut out = String::new();
    let kib = |value: Option<u64>| value.map(|kib| kib.saturating_mul(1024));
    gauge_family(
        &mut out,
        "ballast_vm_balloon_actual_bytes",
        "Memory the balloon leaves the guest (libvirt balloon.current).",
        fleet,
        |vm| kib(vm.history.last().and_then(|p| p.actual_kib)),
    );
    gauge_family(
        &mut out,
        "ballast_vm_balloon_maximum_bytes",
        "The VM's maximum memory.",
        fleet,
        |vm| kib(vm.last_sample.as_ref().and_then(|s| s.maximum_kib)),
    );
    gauge_family(
        &mut out,
        "ballast_vm_guest_mem_total_bytes",
        "Guest MemTotal (libvirt balloon.available), guest-reported.",
        fleet,
        |vm| kib(vm.last_sample.as_ref().and_then(|s| s.available_kib)),
    );
    gauge_family(
        &mut out,
        "ballast_vm_guest_mem_available_bytes",
        "Guest MemAvailable (libvirt balloon.usable), guest-reported.",
        fleet,
        |vm| kib(vm.last_sample.as_ref().and_then(|s| s.usable_kib)),
    );
    gauge_family(
        &mut out,
        "ballast_vm_guest_mem_free_bytes",
        "Guest MemFree (libvirt balloon.unused), guest-reported.",
        fleet,
        |vm| kib(vm.last_sample.as_ref().and_then(|s| s.unused_kib)),
    );
    gauge_family(
        &mut out,
        "ballast_vm_qemu_rss_bytes",
        "QEMU's resident memory on the host.",
        fleet,
        |vm| kib(vm.last_sample.as_ref().and_then(|s| s.rss_kib)),
    );
    gauge_family(
        &mut out,
        "ballast_vm_balloon_stats_stale",
        "1 when the guest's balloon stats stopped updating.",
        fleet,
        |vm| Some(u64::from(vm.stale)),
    );
    gauge_family(
        &mut out,
        "ballast_vm_guest_oom_kills",
        "QEMU's stat-oom-kills counter of the guest (Linux >= 6.12), guest-reported.",
        fleet,
        |vm| vm.counters.as_ref().and_then(|c| c.oom_kills),
    );

    let _ = writeln!(
        out,
        "# HELP ballast_guest_ooms_total Guest OOM reports captured, by verdict."
    );
    let _ = writeln!(out, "# TYPE ballast_guest_ooms_total counter");
    for ((uuid, name, verdict), count) in &counters.ooms {
        let _ = writeln!(
            out,
            "ballast_guest_ooms_total{{vm_uuid=\"{}\",vm_name=\"{}\",verdict=\"{}\"}} {count}",
            label(uuid),
            label(name),
            label(verdict)
        );
    }
    let _ = writeln!(out, "# HELP ballast_near_misses_total Balloon near misses (out_of_puff, silent_deflate, usable_low).");
    let _ = writeln!(out, "# TYPE ballast_near_misses_total counter");
    for (kind, count) in &counters.near_misses {
        let _ = writeln!(
            out,
            "ballast_near_misses_total{{kind=\"{}\"}} {count}",
            label(kind)
        );
    }
    let scalars: [(&str, &str, &str, String); 8] = [
        (
            "ballast_agent_vms",
            "gauge",
            "VMs the agent watches.",
            fleet.len().to_string(),
        ),
        (
            "ballast_agent_polls_total",
            "counter",
            "Balloon polls done.",
            counters.polls.to_string(),
        ),
        (
            "ballast_agent_poll_errors_total",
            "counter",
            "Balloon polls that failed.",
            counters.poll_errors.to_string(),
        ),
        (
            "ballast_agent_poll_duration_seconds",
            "gauge",
            "Duration of the last poll.",
            format!("{:.6}", counters.last_poll_seconds),
        ),
        (
            "ballast_agent_flood_suppressed_total",
            "counter",
            "Guest reports dropped by flood control.",
            counters.flood_suppressed.to_string(),
        ),
        (
            "ballast_agent_spool_bytes",
            "gauge",
            "Bytes waiting in the spool.",
            counters.spool_bytes.to_string(),
        ),
        (
            "ballast_agent_spool_events",
            "gauge",
            "Events waiting in the spool.",
            counters.spool_events.to_string(),
        ),
        (
            "ballast_agent_dropped_rollups_total",
            "counter",
            "Rollups dropped because the spool was full.",
            counters.dropped_rollups.to_string(),
        ),
    ];
    for (name, kind, help, value) in scalars {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    out
}

fn gauge_family(
    out: &mut String,
    name: &str,
    help: &str,
    fleet: &Fleet,
    value: impl Fn(&crate::fleet::VmState) -> Option<u64>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for vm in fleet.vms() {
        if let Some(value) = value(vm) {
            let _ = writeln!(
                out,
                "{name}{{vm_uuid=\"{}\",vm_name=\"{}\"}} {value}",
                label(&vm.id.uuid),
                label(&vm.id.name)
            );
        }
    }
}

fn now_ms() -> i64 {
    crate::enrich::epoch_ms(std::time::SystemTime::now())
}

/// Escapes a label value (`\`, `"`, newline) per the exposition format.
fn label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars().take(256) {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c if c.is_control() => escaped.push('?'),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Connections served at once; more wait in the kernel's accept queue (no file
/// descriptor of ours) until one ends.
pub const MAX_CONNECTIONS: usize = 64;
/// A client has this long to send its request head (slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection ends after this long, whatever it is doing.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// Bytes of request head buffered at most (hyper's minimum is 8 KiB).
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Serves `GET /metrics` on `listen` until the task is dropped.
pub async fn serve(listen: SocketAddr, shared: Shared) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    tracing::info!(%listen, "Serving Prometheus metrics.");
    serve_on(listener, shared).await
}

/// Serves `GET /metrics` on a bound listener (tests bind 127.0.0.1:0): hyper's
/// HTTP/1 server, one request per connection, at most [`MAX_CONNECTIONS`] at once,
/// [`HEADER_READ_TIMEOUT`] for the request head, [`CONNECTION_DEADLINE`] in all.
pub async fn serve_on(listener: TcpListener, shared: Shared) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A free slot first: beyond the cap, connections wait in the accept queue.
        let slot = Arc::clone(&slots)
            .acquire_owned()
            .await
            .map_err(std::io::Error::other)?;
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, or a connection reset before accept: the
                // listener stays; a short pause so that a persistent error does not spin.
                tracing::warn!(%error, "Metrics listener failed to accept a connection.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request| answer(request, shared.clone()));
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .max_buf_size(MAX_REQUEST_HEAD)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_DEADLINE, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "Metrics request failed."),
                Err(_) => tracing::debug!("Metrics connection closed at its deadline."),
            }
        });
    }
}

/// `GET /metrics`: the exposition text; any other path 404, another method 405.
async fn answer(
    request: Request<Incoming>,
    shared: Shared,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |status: StatusCode| {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != "/metrics" {
        return Ok(reply(StatusCode::NOT_FOUND));
    }
    if request.method() != Method::GET {
        let mut response = reply(StatusCode::METHOD_NOT_ALLOWED);
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return Ok(response);
    }
    // The locks are std mutexes the monitor thread also takes: not on a runtime thread.
    match tokio::task::spawn_blocking(move || shared.render()).await {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            Ok(response)
        }
        Err(error) => {
            tracing::warn!(%error, "Rendering the metrics failed.");
            Ok(reply(StatusCode::INTERNAL_SERVER_ERROR))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::{BalloonSample, DomainId};
    use std::time::{SystemTime, UNIX_EPOCH};

    #[test]
    fn renders_per_vm_gauges_with_escaped_labels() {
        let mut fleet = Fleet::new(10);
        let id = DomainId {
            uuid: "3f2a".into(),
            name: "web \"1\"\n".into(),
        };
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        fleet.apply_poll(
            at,
            vec![(
                id,
                BalloonSample {
                    actual_kib: Some(204_800),
                    maximum_kib: Some(524_288),
                    ..BalloonSample::default()
                },
            )],
        );
        let mut counters = AgentCounters::default();
        counters
            .ooms
            .insert(("3f2a".into(), "web".into(), "balloon".into()), 2);
        let text = render(&fleet, &counters);
        assert!(text.contains("ballast_vm_balloon_actual_bytes{vm_uuid=\"3f2a\",vm_name=\"web \\\"1\\\"\\n\"} 209715200"), "{text}");
        assert!(text.contains(
            "ballast_guest_ooms_total{vm_uuid=\"3f2a\",vm_name=\"web\",verdict=\"balloon\"} 2"
        ));
        assert!(text.contains("ballast_agent_vms 1"));
        assert!(
            !text.contains("ballast_vm_guest_mem_available_bytes{"),
            "missing values are not exported as 0"
        );
        let _ = SystemTime::now();
    }

    /// A listener on 127.0.0.1 serving an empty fleet, in its own runtime.
    fn listening() -> (tokio::runtime::Runtime, SocketAddr) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let shared = Shared {
            fleet: SharedLock::new("fleet", Fleet::new(10)),
            counters: SharedLock::new("counters", AgentCounters::default()),
            sink: None,
        };
        runtime.spawn(serve_on(listener, shared));
        (runtime, addr)
    }

    /// Sends `request` on a new connection; the whole answer.
    fn exchange(addr: SocketAddr, request: &str) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(request.as_bytes()).expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        answer
    }

    #[test]
    fn only_get_metrics_is_served() {
        let (_runtime, addr) = listening();
        let ok = exchange(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n",
        );
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("content-type: text/plain; version=0.0.4\r\n"),
            "{ok}"
        );
        assert!(
            ok.contains("\r\n\r\n# HELP ballast_vm_balloon_actual_bytes"),
            "{ok}"
        );
        assert!(ok.contains("\nballast_agent_vms 0\n"), "{ok}");
        let other = exchange(addr, "GET /other HTTP/1.1\r\nHost: agent\r\n\r\n");
        assert!(other.starts_with("HTTP/1.1 404 "), "{other}");
        let post = exchange(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: agent\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        assert!(post.contains("allow: GET\r\n"), "{post}");
        let garbage = exchange(addr, "\x16\x03\x01 not http\r\n\r\n");
        assert!(!garbage.contains("ballast_"), "{garbage}");
    }

    #[test]
    fn slow_clients_sending_half_a_request_head_do_not_block_a_scrape() {
        use std::io::{Read, Write};
        let (_runtime, addr) = listening();
        let slow: Vec<std::net::TcpStream> = (0..16)
            .map(|_| {
                let mut stream = std::net::TcpStream::connect(addr).expect("connect");
                stream.write_all(b"GET /metr").expect("write");
                stream
            })
            .collect();
        let started = std::time::Instant::now();
        let answer = exchange(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the scrape waited {:?} behind slow clients",
            started.elapsed()
        );
        // A slow client is cut off once its head took longer than the header timeout.
        let mut first = slow.into_iter().next().expect("a slow client");
        first
            .set_read_timeout(Some(HEADER_READ_TIMEOUT + Duration::from_secs(5)))
            .expect("timeout");
        let mut rest = Vec::new();
        let closed = first.read_to_end(&mut rest);
        assert!(
            closed.is_ok(),
            "still open {:?} after the slow head began: {closed:?}",
            started.elapsed()
        );
        assert!(
            started.elapsed() < HEADER_READ_TIMEOUT + Duration::from_secs(3),
            "closed only after {:?}",
            started.elapsed()
        );
    }
}
