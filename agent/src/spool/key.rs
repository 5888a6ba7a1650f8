//! Idempotency keys and the priority lane of each event kind.
//!
//! A key is fixed when the event is captured and never changes on resend:
//! `<host>/<kind>/<vm uuid>/<discriminator>`, e.g.
//! `pve1/oom/3f2a0c1e-.../7.409881` or `pve1/rollup/3f2a0c1e-.../1795658460000`.
//! Host-level events (hello, inventory, health) use `-` for the VM.
//! The collector stores each key once, so the discriminator must tell two
//! different events of one VM and kind apart (a guest time stamp, a period start),
//! and the same event captured twice must get the same one.

use ballast_model::Event;

/// Longest key the collector accepts (`ballast_model::Limits::max_key_bytes`).
pub const MAX_KEY_BYTES: usize = 200;

/// The VM placeholder in keys of host-level events.
pub const HOST_LEVEL_VM: &str = "-";

/// Builds `<host>/<kind>/<vm uuid>/<discriminator>`. A key longer than
/// [`MAX_KEY_BYTES`] keeps its first bytes and ends in a hash of the whole key, so
/// it stays stable and distinct.
pub fn event_key(host_id: &str, kind: &str, vm_uuid: &str, discriminator: &str) -> String {
    let key = format!("{host_id}/{kind}/{vm_uuid}/{discriminator}");
    if key.len() <= MAX_KEY_BYTES {
        return key;
    }
    let hash = format!("~{:016x}", fnv1a64(key.as_bytes()));
    let mut cut = MAX_KEY_BYTES - hash.len();
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{hash}", &key[..cut])
}

/// [`event_key`] with the kind and VM taken from the event.
pub fn key_for(host_id: &str, event: &Event, discriminator: &str) -> String {
    let vm_uuid = match event {
        Event::Rollup(rollup) => rollup.vm.uuid.as_str(),
        Event::BalloonChange(change) => change.vm.uuid.as_str(),
        Event::Oom(oom) => oom.vm.uuid.as_str(),
        Event::NearMiss(near_miss) => near_miss.vm.uuid.as_str(),
        Event::Pressure(episode) => episode.vm.uuid.as_str(),
        Event::Guard(action) => action.vm.uuid.as_str(),
        Event::MemoryDevice(change) => change.vm.uuid.as_str(),
        Event::Hello(_) | Event::Inventory(_) | Event::Health(_) => HOST_LEVEL_VM,
    };
    event_key(host_id, event.kind_name(), vm_uuid, discriminator)
}

/// Priority classes: each lane is its own queue of segment files; batches take
/// from [`Lane::Critical`] first, rollups last, and only rollups are ever
/// downsampled or dropped to stay under the size cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// OOM events, near misses and guard actions.
    Critical,
    /// Hello, inventory, balloon changes, health, pressure episodes, virtio-mem resizes.
    Normal,
    /// Per-minute balloon rollups (samples).
    Rollup,
}

impl Lane {
    pub const COUNT: usize = 3;
    /// In the order batches take from them.
    pub const ALL: [Lane; Lane::COUNT] = [Lane::Critical, Lane::Normal, Lane::Rollup];

    pub fn of(event: &Event) -> Self {
        match event {
            Event::Oom(_) | Event::NearMiss(_) | Event::Guard(_) => Lane::Critical,
            Event::Rollup(_) => Lane::Rollup,
            Event::Hello(_)
            | Event::Inventory(_)
            | Event::BalloonChange(_)
            | Event::Health(_)
            | Event::Pressure(_)
            | Event::MemoryDevice(_) => Lane::Normal,
        }
    }

    pub fn index(self) -> usize {
        match self {
            Lane::Critical => 0,
            Lane::Normal => 1,
            Lane::Rollup => 2,
        }
    }

    /// The segment file name prefix.
    pub fn name(self) -> &'static str {
        match self {
            Lane::Critical => "critical",
            Lane::Normal => "normal",
            Lane::Rollup => "rollup",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Lane::ALL.into_iter().find(|lane| lane.name() == name)
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use ballast_model::{AgentHealth, BalloonChange, VmRef};

    use super::*;

    #[test]
    fn keys_name_host_kind_vm_and_discriminator() {
        let change = Event::BalloonChange(BalloonChange {
            vm: VmRef {
                uuid: "3f2a".into(),
                name: "web1".into(),
            },
            actual_kib: 1,
            previous_kib: None,
        });
        assert_eq!(
            key_for("pve1", &change, "17"),
            "pve1/balloon_change/3f2a/17"
        );
        let health = Event::Health(AgentHealth::default());
        assert_eq!(key_for("pve1", &health, "17"), "pve1/health/-/17");
        assert_eq!(Lane::of(&change), Lane::Normal);
    }

    #[test]
    fn long_keys_are_cut_with_a_stable_distinct_hash() {
        let long_a = event_key("h", "oom", &"é".repeat(150), "a");
        let long_b = event_key("h", "oom", &"é".repeat(150), "b");
        assert!(long_a.len() <= MAX_KEY_BYTES, "{}", long_a.len());
        assert_ne!(long_a, long_b);
        assert_eq!(long_a, event_key("h", "oom", &"é".repeat(150), "a"));
    }
}
