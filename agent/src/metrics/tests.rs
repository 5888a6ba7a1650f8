//! Unit tests of `metrics`.

use super::*;
use crate::hypervisor::{BalloonSample, DomainId};
use ballast_model::ReportVerdict;
use std::time::UNIX_EPOCH;

/// The value of the one series `series` (name and labels as written) in `text`.
fn value(text: &str, series: &str) -> f64 {
    let values: Vec<f64> = text
        .lines()
        .filter_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().expect("a number"))
        .collect();
    assert_eq!(values.len(), 1, "{series} once in\n{text}");
    values[0]
}

#[test]
fn pressure_signals_are_per_vm_gauges_in_base_units_and_a_vm_without_signals_has_none() {
    let mut fleet = Fleet::new(10);
    let with = DomainId {
        uuid: "aaaa".into(),
        name: "pressed".into(),
    };
    let without = DomainId {
        uuid: "bbbb".into(),
        name: "quiet".into(),
    };
    let base = 1_800_000_000;
    for poll in 0..3u64 {
        let at = UNIX_EPOCH + Duration::from_secs(base + poll * 10);
        let stats = BalloonSample {
            major_faults: Some(poll * 100),
            swap_in_kib: Some(poll * 10),
            last_update_epoch_secs: Some(base + poll * 10),
            ..BalloonSample::default()
        };
        fleet.apply_poll(
            at,
            vec![
                (with.clone(), stats),
                (without.clone(), BalloonSample::default()),
            ],
        );
        fleet.apply_counters(
            &with,
            crate::hypervisor::GuestCounters {
                alloc_stalls: Some(poll * 50),
                direct_reclaims_bytes: Some(poll * 10 * 4096),
                last_update_epoch_secs: Some(base + poll * 10),
                ..Default::default()
            },
        );
        fleet.apply_psi(
            &with,
            at,
            crate::pressure::psi::parse(
                b"some avg10=12.50 avg60=1 avg300=0 total=2500000\nfull avg10=2.00 avg60=0 avg300=0 total=40\n",
            )
            .expect("psi"),
            Duration::from_secs(90),
        );
        fleet.observe_pressure(at);
    }
    let text = render(&fleet, &AgentCounters::default());
    let series = |name: &str| format!("{name}{{vm_uuid=\"aaaa\",vm_name=\"pressed\"}}");
    assert_eq!(
        value(&text, &series("ballast_vm_alloc_stalls_per_second")),
        5.0
    );
    assert_eq!(
        value(&text, &series("ballast_vm_major_faults_per_second")),
        10.0
    );
    assert_eq!(
        value(&text, &series("ballast_vm_swap_in_bytes_per_second")),
        1024.0
    );
    assert_eq!(
        value(&text, &series("ballast_vm_direct_reclaim_bytes_per_second")),
        4096.0
    );
    assert_eq!(
        value(
            &text,
            &series("ballast_vm_guest_psi_memory_some_avg10_ratio")
        ),
        0.125
    );
    assert_eq!(
        value(
            &text,
            &series("ballast_vm_guest_psi_memory_some_seconds_total")
        ),
        2.5
    );
    assert!(
        text.contains("# TYPE ballast_vm_guest_psi_memory_some_seconds_total counter\n"),
        "{text}"
    );
    assert!(text.contains("# HELP ballast_vm_alloc_stalls_per_second "));
    assert!(
        !text.contains("ballast_vm_async_reclaim_bytes_per_second{"),
        "a counter never reported has no series"
    );
    assert!(
        !text
            .lines()
            .any(|line| line.contains("vm_name=\"quiet\"") && line.contains("per_second")),
        "a VM without signals exports none: {text}"
    );
}

#[test]
fn renders_per_vm_gauges_with_escaped_labels() {
    let mut fleet = Fleet::new(10);
    let id = DomainId {
        uuid: "3f2a".into(),
        name: "web \"1\" C:\\vm\n\r".into(),
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
        .insert(("3f2a".into(), "web".into(), ReportVerdict::Balloon), 2);
    counters.last_poll_seconds = 0.25;
    let text = render(&fleet, &counters);
    assert!(text.contains("ballast_vm_balloon_actual_bytes{vm_uuid=\"3f2a\",vm_name=\"web \\\"1\\\" C:\\\\vm\\n?\"} 209715200\n"), "{text}");
    assert_eq!(
        text.lines()
            .filter(|line| line.starts_with("ballast_vm_"))
            .count(),
        3,
        "one line per series, the newline escaped: {text}"
    );
    assert!(text.contains(
        "ballast_guest_ooms_total{vm_uuid=\"3f2a\",vm_name=\"web\",verdict=\"balloon\"} 2\n"
    ));
    assert!(
        text.contains("# TYPE ballast_guest_ooms_total counter\n"),
        "{text}"
    );
    assert_eq!(value(&text, "ballast_agent_vms"), 1.0);
    assert_eq!(value(&text, "ballast_agent_poll_duration_seconds"), 0.25);
    assert!(
        text.contains("# TYPE ballast_vm_guest_mem_available_bytes gauge\n")
            && !text.contains("ballast_vm_guest_mem_available_bytes{"),
        "missing values are not exported as 0"
    );
}

#[test]
fn pressure_risk_and_exhaustion_are_exported_and_unknown_is_no_series() {
    let mut fleet = Fleet::new(10);
    let vm = |n: u32| DomainId {
        uuid: format!("u{n}"),
        name: format!("vm{n}"),
    };
    // vm1: MemAvailable falls 20 MiB a poll from 200 MiB; vm2 has no guest figures.
    for poll in 0..5u64 {
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000 + poll * 10);
        let squeezed = BalloonSample {
            actual_kib: Some(524_288),
            maximum_kib: Some(524_288),
            available_kib: Some(468 * 1024),
            usable_kib: Some((200 - 20 * poll) * 1024),
            last_update_epoch_secs: Some(1_800_000_000 + poll * 10),
            ..BalloonSample::default()
        };
        let blind = BalloonSample {
            actual_kib: Some(524_288),
            ..BalloonSample::default()
        };
        fleet.apply_poll(at, vec![(vm(1), squeezed), (vm(2), blind)]);
        fleet.observe_pressure(at);
    }
    let mut counters = AgentCounters::default();
    counters
        .pressure_episodes
        .insert(("u1".into(), "vm1".into()), 1);
    counters
        .guard_actions
        .insert(ballast_model::GuardOutcome::Deflated, 2);
    counters.guard_deflated_bytes = 256 * 1024 * 1024;
    let text = render(&fleet, &counters);
    assert_eq!(
        value(&text, "ballast_guard_actions_total{outcome=\"deflated\"}"),
        2.0
    );
    assert_eq!(
        value(
            &text,
            "ballast_guard_actions_total{outcome=\"rate_limited\"}"
        ),
        0.0
    );
    assert_eq!(
        value(&text, "ballast_guard_deflated_bytes_total"),
        268_435_456.0
    );
    // 120 MiB left, falling 2 MiB/s: 60 s.
    assert_eq!(
        value(
            &text,
            "ballast_vm_pressure_risk{vm_uuid=\"u1\",vm_name=\"vm1\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            "ballast_vm_pressure_exhaustion_seconds{vm_uuid=\"u1\",vm_name=\"vm1\"}"
        ),
        60.0
    );
    assert!(
        !text.contains("ballast_vm_pressure_risk{vm_uuid=\"u2\""),
        "a VM without signals is unknown, not ok: {text}"
    );
    assert_eq!(
        value(
            &text,
            "ballast_pressure_episodes_total{vm_uuid=\"u1\",vm_name=\"vm1\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&text, "ballast_agent_pressure_events_suppressed_total"),
        0.0
    );
}

#[test]
fn long_label_values_are_cut_at_256_characters() {
    let mut counters = AgentCounters::default();
    counters
        .ooms
        .insert(("3f2a".into(), "x".repeat(300), ReportVerdict::Unknown), 1);
    let text = render(&Fleet::new(1), &counters);
    let cut = format!(
        "ballast_guest_ooms_total{{vm_uuid=\"3f2a\",vm_name=\"{}\",verdict=\"unknown\"}} 1\n",
        "x".repeat(256)
    );
    assert!(text.contains(&cut), "{text}");
}

#[test]
fn refusals_hold_until_a_success_and_are_exported_by_reason() {
    use crate::sink::BatchSent;
    let stats = SinkStats::default();
    let text = render_sink(&stats, 5_000);
    assert_eq!(
        value(
            &text,
            "ballast_agent_delivery_refusals_total{reason=\"not_found\"}"
        ),
        0.0
    );
    assert_eq!(value(&text, "ballast_agent_delivery_held_seconds"), 0.0);
    stats.refused(Refusal::NotFound, 10_000);
    stats.refused(Refusal::NotFound, 20_000);
    stats.refused(Refusal::Connect, 30_000);
    let text = render_sink(&stats, 70_000);
    assert_eq!(
        value(
            &text,
            "ballast_agent_delivery_refusals_total{reason=\"not_found\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            "ballast_agent_delivery_refusals_total{reason=\"connect\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&text, "ballast_agent_delivery_held_seconds"),
        60.0,
        "held since the first refusal: {text}"
    );
    BatchSent {
        events: 3,
        body_bytes: 100,
        accepted: 3,
        duplicates: 0,
        elapsed: Duration::ZERO,
    }
    .emit(&stats, 80_000);
    let text = render_sink(&stats, 90_000);
    assert_eq!(value(&text, "ballast_agent_delivery_held_seconds"), 0.0);
    assert_eq!(
        value(&text, "ballast_agent_last_delivery_timestamp_seconds"),
        80.0
    );
    assert_eq!(value(&text, "ballast_agent_delivered_events_total"), 3.0);
    assert_eq!(
        text.lines()
            .filter(|line| line.starts_with("ballast_agent_delivery_refusals_total{"))
            .count(),
        Refusal::COUNT,
        "a fixed label set"
    );
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
        ok.contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"),
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

#[test]
fn virtio_mem_devices_are_gauges_per_device_and_a_vm_without_has_no_series() {
    let mut fleet = Fleet::new(10);
    let elastic = DomainId {
        uuid: "5d1c".into(),
        name: "elastic".into(),
    };
    let plain = DomainId {
        uuid: "3f2a".into(),
        name: "plain".into(),
    };
    let sample = |requested_mib: u64| BalloonSample {
        actual_kib: Some(1024 * 1024),
        maximum_kib: Some(1024 * 1024),
        virtio_mem: vec![ballast_model::VirtioMemDevice {
            id: "virtiomem0".into(),
            max_size_kib: Some(4096 * 1024),
            requested_kib: Some(requested_mib * 1024),
            plugged_kib: Some(2048 * 1024),
            ..ballast_model::VirtioMemDevice::default()
        }],
        ..BalloonSample::default()
    };
    let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    // The host asks for 1 GiB; the guest unplugs nothing for two polls: stuck.
    for (n, requested) in [2048, 1024, 1024, 1024].into_iter().enumerate() {
        fleet.apply_poll(
            start + Duration::from_secs(10 * n as u64),
            vec![
                (elastic.clone(), sample(requested)),
                (plain.clone(), BalloonSample::default()),
            ],
        );
    }
    let text = render(&fleet, &AgentCounters::default());
    let labels = "{vm_uuid=\"5d1c\",vm_name=\"elastic\",device=\"virtiomem0\"}";
    let gib = 1024.0 * 1024.0 * 1024.0;
    assert_eq!(
        value(
            &text,
            &format!("ballast_vm_virtio_mem_plugged_bytes{labels}")
        ),
        2.0 * gib
    );
    assert_eq!(
        value(
            &text,
            &format!("ballast_vm_virtio_mem_requested_bytes{labels}")
        ),
        gib
    );
    assert_eq!(
        value(&text, &format!("ballast_vm_virtio_mem_max_bytes{labels}")),
        4.0 * gib
    );
    assert_eq!(
        value(&text, &format!("ballast_vm_virtio_mem_stuck{labels}")),
        1.0
    );
    assert!(!text.contains("ballast_vm_virtio_mem_plugged_bytes{vm_uuid=\"3f2a\""));
    // Per VM, not per device: nothing is known to be left offline (the guest sent no
    // MemTotal), and the VM without virtio-mem has no series.
    assert_eq!(
        value(
            &text,
            "ballast_vm_virtio_mem_not_onlined_bytes{vm_uuid=\"5d1c\",vm_name=\"elastic\"}"
        ),
        0.0
    );
    assert!(!text.contains("ballast_vm_virtio_mem_not_onlined_bytes{vm_uuid=\"3f2a\""));
    assert_eq!(
        value(&text, "ballast_agent_memory_device_events_suppressed_total"),
        0.0
    );
}
