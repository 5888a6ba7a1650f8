//! Test fixtures of an elastic guest (issue 20): a real report with virtio-mem figures
//! around it. Unit tests only (the integration tests' copy of `test_fixtures` has no
//! use for them).

use ballast_model::{BalloonAtOom, OomEvent};

use crate::test_fixtures::{history, oom_at_ms, oom_from_fixture, MIB};

/// The elastic guest's boot memory (its balloon's maximum) and virtio-mem devices' size.
pub const ELASTIC_BOOT: u64 = 2048 * MIB;
pub const ELASTIC_DEVICES: u64 = 6656 * MIB;

/// virtio-mem totals of the elastic guest's devices.
pub fn virtio_mem_totals(plugged: u64, requested: u64) -> ballast_model::VirtioMemTotals {
    ballast_model::VirtioMemTotals {
        plugged_kib: Some(plugged),
        requested_kib: Some(requested),
        max_size_kib: Some(ELASTIC_DEVICES),
        sampled_at_ms: None,
    }
}

/// A real 6.11 report of an 8 GiB guest (its analysis reads `overcommit`), as an
/// elastic guest: 2 GiB of boot memory, balloon empty, virtio-mem fully plugged
/// (6.5 GiB) until the host lowered the request by `lowered` 40 s before the capture,
/// the guest unplugging it 10 s later; the kill was printed after a read 5 s before.
pub fn virtio_unplugged(lowered: u64) -> OomEvent {
    let mut event = oom_from_fixture(
        "6.11-qemu-global-rss-anon-uid-cpu.log",
        "5e1a57c0-0000-4000-8000-000000008192",
        "elastic-8g",
    );
    event.balloon_history = history(ELASTIC_BOOT, |_| ELASTIC_BOOT);
    for point in &mut event.balloon_history {
        let before = (oom_at_ms() - point.at_ms) / 1000;
        let requested = if before > 40 {
            ELASTIC_DEVICES
        } else {
            ELASTIC_DEVICES - lowered
        };
        let plugged = if before > 30 {
            ELASTIC_DEVICES
        } else {
            ELASTIC_DEVICES - lowered
        };
        point.virtio_mem = Some(virtio_mem_totals(plugged, requested));
    }
    let after = ELASTIC_DEVICES - lowered;
    event.balloon_at_oom = BalloonAtOom {
        maximum_kib: Some(ELASTIC_BOOT),
        actual_kib: Some(ELASTIC_BOOT),
        deflate_on_oom: Some(false),
        sampled_at_ms: Some(oom_at_ms() - 6_000),
        kill_after_ms: Some(oom_at_ms() - 5_000),
        virtio_mem: Some(ballast_model::VirtioMemTotals {
            sampled_at_ms: Some(oom_at_ms() - 6_000),
            ..virtio_mem_totals(after, after)
        }),
    };
    event
}
