//! `host_took` on fixtures: a real 6.11 report of an 8 GiB guest (2 GiB of boot memory
//! plus virtio-mem) whose analysis reads `overcommit`, with host figures around it.

use ballast_model::{
    BalloonAtOom, ElasticMechanism, HostTookVerdict, OomEvent, ReportVerdict, VirtioMemTotals,
};

use crate::correlation::outcome::{Correlation, HostTook};
use crate::correlation::{correlate, CorrelationInput, CorrelationSettings, CorrelationVerdict};
use crate::elastic_fixtures::{
    virtio_mem_totals as totals, virtio_unplugged as virtio_guest, ELASTIC_BOOT as BOOT,
};
use crate::test_fixtures::{lab_inflated, oom_at_ms, tor_flat, MIB};

fn run(event: &OomEvent) -> Correlation {
    correlate(
        &CorrelationInput {
            oom_at_ms: oom_at_ms(),
            event,
            vm_config: None,
            rollups: &[],
        },
        &CorrelationSettings::default(),
    )
}

/// DMA 12 + DMA32 3236 + Normal 19916 kB below their high watermarks, plus the page.
const NEEDED: u64 = 12 + 3236 + 19_916 + 4;

#[test]
fn an_oom_after_a_virtio_mem_unplug_is_the_hosts_though_the_report_reads_overcommit() {
    let event = virtio_guest(512 * MIB);
    assert_eq!(event.analysis.verdict, ReportVerdict::Overcommit);
    let c = run(&event);
    // The balloon's verdict keeps its meaning: it held nothing.
    assert_eq!(
        c.verdict,
        CorrelationVerdict::NotBalloon,
        "{:#?}",
        c.reasons
    );
    assert_eq!(c.needed_kb, Some(NEEDED));
    let took = c.host_took.clone().expect("host_took");
    assert_eq!(took.verdict, HostTookVerdict::HostTookMemory, "{took:#?}");
    assert_eq!(took.mechanisms, vec![ElasticMechanism::VirtioMem]);
    assert_eq!(took.balloon_kib, Some(0));
    assert_eq!(took.unplugged_kib, Some(512 * MIB));
    assert_eq!(took.total_kib, Some(512 * MIB));
    assert_eq!(took.would_have_survived, Some(true));
    assert_eq!(took.requested_lowered_kib, Some(512 * MIB));
    // The first host sample showing the lower request: 40 s before the capture.
    assert_eq!(took.requested_lowered_at_ms, Some(oom_at_ms() - 40_000));
    // virtio-mem's story comes first, in plain language.
    let first = c.reasons.first().cloned().unwrap_or_default();
    assert_eq!(
        first,
        "The host lowered the virtio-mem request by 512 MiB 40 s before the OOM (to 6144 MiB of the devices' 6656 MiB).",
        "{:#?}",
        c.reasons
    );
    let text = c.reasons.join("\n");
    assert!(text.contains("held back 512 MiB of virtio-mem"), "{text}");
    let spare = 512 * MIB - NEEDED;
    assert!(
        text.contains(&format!(
            "would have had 512 MiB more, {} MiB to spare",
            spare / 1024
        )),
        "{text}"
    );
    // The stored JSON names it as docs/api.md says.
    let json = serde_json::to_value(&c).expect("json");
    assert_eq!(json["verdict"], "not_balloon");
    assert_eq!(json["host_took"]["verdict"], "host_took_memory");
    assert_eq!(
        json["host_took"]["mechanisms"],
        serde_json::json!(["virtio_mem"])
    );
}

#[test]
fn the_balloon_and_virtio_mem_together_cover_what_neither_would_alone() {
    let mut event = virtio_guest(200 * MIB);
    // The guest lacked ~303 MiB; the balloon held 200 MiB, virtio-mem 200 MiB more.
    for zone in &mut event.report.zones {
        if zone.name == "Normal" {
            zone.high_kb = Some(300 * MIB);
        }
    }
    event.balloon_at_oom.actual_kib = Some(BOOT - 200 * MIB);
    let c = run(&event);
    let needed = c.needed_kb.expect("needed");
    assert!(needed > 200 * MIB && needed < 400 * MIB, "{needed}");
    assert_eq!(c.balloon_held_kb, Some(200 * MIB));
    assert_eq!(
        c.verdict,
        CorrelationVerdict::NotBalloon,
        "{:#?}",
        c.reasons
    );
    let took = c.host_took.clone().expect("host_took");
    assert_eq!(took.verdict, HostTookVerdict::HostTookMemory, "{took:#?}");
    assert_eq!(
        took.mechanisms,
        vec![ElasticMechanism::Balloon, ElasticMechanism::VirtioMem]
    );
    assert_eq!(took.total_kib, Some(400 * MIB));
    let text = c.reasons.join("\n");
    assert!(
        text.contains("With the unplugged blocks back and the balloon deflated the guest would have had 400 MiB more"),
        "{text}"
    );
    // The balloon's own counterfactual no longer blames the VM's maximum.
    assert!(
        text.contains("the balloon alone could not give it back"),
        "{text}"
    );
}

#[test]
fn an_unplug_too_small_to_cover_the_shortfall_is_not_the_hosts() {
    let c = run(&virtio_guest(8 * MIB));
    let took = c.host_took.clone().expect("host_took");
    assert_eq!(took.verdict, HostTookVerdict::NotHost, "{took:#?}");
    // It did unplug: the mechanism is named, its part did not matter.
    assert_eq!(took.mechanisms, vec![ElasticMechanism::VirtioMem]);
    assert_eq!(took.unplugged_kib, Some(8 * MIB));
    assert_eq!(took.would_have_survived, Some(false));
    let text = c.reasons.join("\n");
    assert!(
        text.contains("Even with the unplugged blocks back (8.0 MiB) the guest would have lacked"),
        "{text}"
    );
    // ... and it does not lead the reasons.
    assert!(c.reasons[0].starts_with("The balloon held"), "{text}");
}

#[test]
fn without_a_sample_at_the_oom_only_history_before_the_kill_stands() {
    // No virtio-mem in the agent's pick; the guest finished unplugging after the kill
    // (the kill freed the memory): the sample before it shows the devices full.
    let mut event = virtio_guest(512 * MIB);
    event.balloon_at_oom.virtio_mem = None;
    event.balloon_at_oom.kill_after_ms = Some(oom_at_ms() - 35_000);
    let took = run(&event).host_took.expect("host_took");
    assert_eq!(took.unplugged_kib, Some(0));
    assert_eq!(took.verdict, HostTookVerdict::NotHost);
    // The request had come down (40 s before), the plugged size not yet.
    assert_eq!(took.requested_lowered_kib, Some(512 * MIB));
    // No bound on the kill's time: no history sample is known to predate it.
    event.balloon_at_oom.kill_after_ms = None;
    let took = run(&event).host_took.expect("host_took");
    assert_eq!(took.virtio_mem, None);
    assert_eq!(took, HostTook::from_balloon(&run(&event)));
}

#[test]
fn a_kill_the_blocks_would_not_have_prevented_is_never_the_hosts() {
    let mut event = virtio_guest(512 * MIB);
    event.kind = ballast_model::OomKind::VmCgroup;
    let c = run(&event);
    let text = c.reasons.join("\n");
    let took = c.host_took.expect("host_took");
    assert_eq!(took.verdict, HostTookVerdict::NotHost);
    assert_eq!(took.would_have_survived, Some(false));
    assert!(
        text.contains("would not have prevented this kill either"),
        "{text}"
    );
}

/// Without virtio-mem the output is the balloon's alone: `host_took` mirrors the
/// balloon's verdict, the reasons say nothing of virtio-mem, and an OOM with no host
/// figure at all stores the older collectors' JSON (no `host_took` key).
#[test]
fn without_virtio_mem_host_took_is_the_balloons_part_and_nothing_else_changes() {
    for (event, expected) in [
        (tor_flat(), HostTookVerdict::NotHost),
        (lab_inflated(), HostTookVerdict::HostTookMemory),
    ] {
        let c = run(&event);
        let took = c.host_took.clone().expect("host_took");
        assert_eq!(took.verdict, expected, "{:#?}", c.reasons);
        assert_eq!(took, HostTook::from_balloon(&c));
        assert_eq!(took.balloon_kib, c.balloon_held_kb);
        assert_eq!(took.would_have_survived, c.would_have_survived);
        assert_eq!(took.unplugged_kib, None);
        assert!(
            !c.reasons.join(" ").contains("virtio-mem"),
            "{:#?}",
            c.reasons
        );
        let json = serde_json::to_string(&c).expect("json");
        assert!(!json.contains("requested_lowered_kib"), "{json}");
    }
    assert_eq!(
        run(&lab_inflated()).host_took.map(|t| t.mechanisms),
        Some(vec![ElasticMechanism::Balloon])
    );
    let mut event = tor_flat();
    event.balloon_at_oom = BalloonAtOom::default();
    event.balloon_history.clear();
    event.analysis.balloon_held_kb = None;
    let c = run(&event);
    assert_eq!(c.verdict, CorrelationVerdict::Unknown);
    assert_eq!(c.host_took, None);
    let json = serde_json::to_string(&c).expect("json");
    assert!(!json.contains("host_took"), "{json}");
    // Read back, the API still gives the host's side: unknown, nothing named.
    let back: Correlation = serde_json::from_str(&json).expect("decodes");
    let took = back.host_took_or_balloon();
    assert_eq!(took.verdict, HostTookVerdict::Unknown);
    assert!(took.mechanisms.is_empty());
}

#[test]
fn a_correlation_stored_before_host_took_reads_it_from_the_balloon() {
    let stored = r#"{"verdict":"balloon","balloon_held_kb":319488,"maximum_kib":524288,
        "actual_kib":204800,"held_source":"host_at_oom","deflate_on_oom":false,
        "floor_kib":null,"inflated_kb_before":null,"inflation_started_at_ms":null,
        "seconds_from_inflation":null,"inflation_kib_per_sec":null,"usable_kib_before":null,
        "alloc_stalls_in_window":null,"host_used_pct":null,"host_above_target":null,
        "unaccounted_kb":null,"held_explains_unaccounted":null,"needed_kb":1340,
        "in_use_kb":null,"not_preventable":null,"would_have_survived":true}"#;
    let c: Correlation = serde_json::from_str(stored).expect("an older row decodes");
    assert_eq!(c.host_took, None);
    let took = c.host_took_or_balloon();
    assert_eq!(took.verdict, HostTookVerdict::HostTookMemory);
    assert_eq!(took.mechanisms, vec![ElasticMechanism::Balloon]);
    assert_eq!(took.total_kib, Some(319_488));
    assert_eq!(took.would_have_survived, Some(true));
}

#[test]
fn hostile_virtio_mem_figures_do_not_panic() {
    let mut event = virtio_guest(512 * MIB);
    event.balloon_at_oom.maximum_kib = Some(u64::MAX);
    event.balloon_at_oom.actual_kib = Some(0);
    event.balloon_at_oom.virtio_mem = Some(VirtioMemTotals {
        plugged_kib: Some(u64::MAX),
        requested_kib: Some(u64::MAX),
        max_size_kib: Some(0),
        sampled_at_ms: Some(i64::MIN),
    });
    event.balloon_history[0].at_ms = i64::MIN;
    event.balloon_history[1].virtio_mem = Some(totals(0, u64::MAX));
    let took = run(&event).host_took.expect("host_took");
    // plugged above the size: nothing unplugged, never an underflow.
    assert_eq!(took.unplugged_kib, Some(0));
    assert_eq!(took.total_kib, Some(u64::MAX));
}
