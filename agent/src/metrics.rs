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
//! The listener is deliberately small (one request per connection, 8 KiB request
//! cap, 5 s deadline): it is meant for a loopback or management-network scraper.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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

/// What the exporter reads: the fleet and the counters, shared with the run loop.
#[derive(Debug, Clone)]
pub struct Shared {
    pub fleet: SharedLock<Fleet>,
    pub counters: SharedLock<AgentCounters>,
}

impl Shared {
    /// The exposition text of the current state. One shared lock at a time
    /// ([`crate::shared`]): the counters are copied out, then the fleet is rendered
    /// under its own lock. Blocking: async code calls it on a blocking thread.
    pub fn render(&self) -> String {
        let counters = self.counters.lock().clone();
        let fleet = self.fleet.lock();
        render(&fleet, &counters)
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

/// Serves `GET /metrics` on `listen` until the task is dropped.
pub async fn serve(listen: SocketAddr, shared: Shared) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    tracing::info!(%listen, "Serving Prometheus metrics.");
    serve_on(listener, shared).await
}

/// Serves `GET /metrics` on a bound listener (tests bind 127.0.0.1:0).
pub async fn serve_on(listener: TcpListener, shared: Shared) -> std::io::Result<()> {
    loop {
        let (mut stream, _) = listener.accept().await?;
        let shared = shared.clone();
        tokio::spawn(async move {
            let handled = tokio::time::timeout(Duration::from_secs(5), async {
                let mut request = vec![0u8; 8192];
                let mut read = 0;
                while read < request.len() {
                    let n = stream.read(&mut request[read..]).await?;
                    if n == 0 {
                        break;
                    }
                    read += n;
                    if request[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let head = &request[..read];
                let response = if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?") {
                    let shared = shared.clone();
                    let body = tokio::task::spawn_blocking(move || shared.render())
                        .await
                        .map_err(std::io::Error::other)?;
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                };
                stream.write_all(response.as_bytes()).await?;
                stream.shutdown().await
            })
            .await;
            if let Ok(Err(error)) = handled {
                tracing::debug!(%error, "Metrics request failed.");
            }
        });
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
}
