//! The VM page's virtio-mem pieces (issue 20 item 1): the plugged, requested and
//! maximum lines beside the balloon on the memory chart (only for a VM that has
//! virtio-mem, so a VM without looks as before), its resize events as markers (a stuck
//! one in the warning colour), and the list of resizes. Device ids and VM names are
//! guest-side text: they reach the page only through maud, escaped.

use maud::{html, Markup};

use ballast_model::ResizePhase;

use crate::dashboard::layout::kib;
use crate::dashboard::svg::{GuardMark, Line};
use crate::records::MemoryDeviceRecord;
use crate::reports::format;
use crate::storage::aggregates::SeriesPoint;

/// The VM's virtio-mem devices as its configuration says (nothing for a VM without):
/// the memory they can add beyond "Memory / floor", which counts the boot memory only.
pub fn config_facts(devices: &[ballast_model::VirtioMemDevice]) -> Markup {
    let max_kib: Option<u64> = devices
        .iter()
        .map(|d| d.max_size_kib)
        .try_fold(0u64, |sum, max| Some(sum.saturating_add(max?)));
    html! {
        @if !devices.is_empty() {
            dt { "virtio-mem" } dd {
                "up to " (kib(max_kib)) " more than the memory above, in "
                (devices.len()) (if devices.len() == 1 { " device" } else { " devices" }) ": "
                @for (i, device) in devices.iter().enumerate() {
                    @if i > 0 { ", " }
                    code { (device.id) } " (node " (device.node.map_or("-".to_string(), |n| n.to_string()))
                    ", block " (kib(device.block_size_kib)) ", up to " (kib(device.max_size_kib)) ")"
                }
            }
        }
    }
}

/// The most resizes the VM page reads, marks and lists.
pub const VM_LISTED: i64 = 200;

fn points(series: &[SeriesPoint], value: fn(&SeriesPoint) -> Option<u64>) -> Vec<(i64, u64)> {
    series
        .iter()
        .filter_map(|p| Some((p.at_ms, value(p)?)))
        .collect()
}

/// The virtio-mem lines of a VM's series: plugged, requested, the devices' maximum;
/// a line with no point is left out (no legend entry either).
pub fn lines(series: &[SeriesPoint]) -> Vec<Line<'static>> {
    [
        Line {
            label: "virtio-mem maximum",
            class: "s-vmem-max",
            points: points(series, |p| p.vmem_max_kib),
        },
        Line {
            label: "virtio-mem requested",
            class: "s-requested",
            points: points(series, |p| p.requested_kib),
        },
        Line {
            label: "virtio-mem plugged",
            class: "s-plugged",
            points: points(series, |p| p.plugged_kib),
        },
    ]
    .into_iter()
    .filter(|line| !line.points.is_empty())
    .collect()
}

/// A resize's marker class ([`crate::dashboard::svg::RESIZE_KINDS`]).
pub fn mark_class(phase: ResizePhase) -> &'static str {
    match phase {
        ResizePhase::Stuck => "resize-stuck",
        _ => "resize-changed",
    }
}

fn sizes(event: &MemoryDeviceRecord) -> String {
    format!(
        "requested {} -> {}, plugged {} -> {}",
        kib(event.previous_requested_kib),
        kib(event.requested_kib),
        kib(event.previous_plugged_kib),
        kib(event.plugged_kib)
    )
}

/// The resizes as chart markers.
pub fn marks(events: &[MemoryDeviceRecord]) -> Vec<GuardMark> {
    events
        .iter()
        .map(|event| GuardMark {
            at_ms: event.at_ms,
            class: mark_class(event.phase),
            label: format!(
                "virtio-mem {} {} at {}: {}",
                event.device,
                event.phase.as_str(),
                format::date_time(event.at_ms),
                sizes(event)
            ),
        })
        .collect()
}

/// A VM's resizes, newest first (as read); nothing at all for a VM that has none.
pub fn table(events: &[MemoryDeviceRecord]) -> Markup {
    html! {
        @if !events.is_empty() {
            section #memory-devices {
                h2 { "virtio-mem resizes" }
                table #resizes {
                    thead { tr {
                        th { "Time" } th { "Device" } th { "Phase" } th.num { "Requested" }
                        th.num { "Plugged" } th.num { "Before (requested / plugged)" }
                        th.num { "Block" } th.num { "Maximum" } th { "Unconverged since" }
                    } }
                    tbody {
                        @for event in events {
                            tr class=[(event.phase == ResizePhase::Stuck).then_some("stuck")] {
                                td { (format::date_time(event.at_ms)) }
                                td { code { (event.device) } }
                                td { (event.phase.as_str()) }
                                td.num { (kib(event.requested_kib)) }
                                td.num { (kib(event.plugged_kib)) }
                                td.num { (kib(event.previous_requested_kib)) " / " (kib(event.previous_plugged_kib)) }
                                td.num { (kib(event.block_size_kib)) }
                                td.num { (kib(event.max_size_kib)) }
                                td { (event.unconverged_since_ms.map(format::date_time).unwrap_or_default()) }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(device: &str, phase: ResizePhase) -> MemoryDeviceRecord {
        MemoryDeviceRecord {
            id: 1,
            host: "pve1".into(),
            uuid: "u".into(),
            name: "vm".into(),
            device: device.into(),
            at_ms: 1_000,
            phase,
            requested_kib: Some(262_144),
            plugged_kib: Some(786_432),
            previous_requested_kib: Some(1_048_576),
            previous_plugged_kib: Some(1_048_576),
            block_size_kib: Some(2048),
            max_size_kib: Some(1_048_576),
            unconverged_since_ms: Some(500),
        }
    }

    #[test]
    fn a_vm_without_virtio_mem_gets_no_line_and_no_table() {
        let series = vec![SeriesPoint {
            at_ms: 1,
            actual_kib: Some(1024),
            ..SeriesPoint::default()
        }];
        assert!(lines(&series).is_empty());
        assert!(table(&[]).into_string().is_empty());
    }

    #[test]
    fn lines_follow_the_series_and_a_stuck_resize_is_marked_apart() {
        let series = vec![SeriesPoint {
            at_ms: 1,
            plugged_kib: Some(786_432),
            requested_kib: Some(262_144),
            vmem_max_kib: Some(1_048_576),
            ..SeriesPoint::default()
        }];
        let drawn: Vec<&str> = lines(&series).iter().map(|l| l.class).collect();
        assert_eq!(drawn, ["s-vmem-max", "s-requested", "s-plugged"]);
        let marks = marks(&[
            event("dimm0", ResizePhase::Requested),
            event("dimm0", ResizePhase::Stuck),
        ]);
        let classes: Vec<&str> = marks.iter().map(|m| m.class).collect();
        assert_eq!(classes, ["resize-changed", "resize-stuck"]);
        assert!(marks[1].label.contains("dimm0 stuck"), "{}", marks[1].label);
    }

    #[test]
    fn device_ids_are_escaped_in_the_table() {
        let html = table(&[event("<script>alert(1)</script>", ResizePhase::Stuck)]).into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("class=\"stuck\""), "{html}");
    }

    #[test]
    fn the_config_facts_say_what_virtio_mem_adds_and_escape_the_device_id() {
        assert!(config_facts(&[]).into_string().is_empty());
        let device = |id: &str, max_mib: u64| ballast_model::VirtioMemDevice {
            id: id.into(),
            node: Some(0),
            block_size_kib: Some(2048),
            max_size_kib: Some(max_mib * 1024),
            ..ballast_model::VirtioMemDevice::default()
        };
        let html =
            config_facts(&[device("virtiomem0", 512), device("<b>x</b>", 256)]).into_string();
        assert!(html.contains("up to 768 MiB more"), "{html}");
        assert!(html.contains("2 devices"), "{html}");
        assert!(
            html.contains("&lt;b&gt;x&lt;/b&gt;") && !html.contains("<b>x"),
            "{html}"
        );
    }
}
