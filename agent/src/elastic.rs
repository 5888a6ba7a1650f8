//! Pure: one VM's virtio-mem devices across polls (issue 20, docs/elastic.md).
//!
//! Each poll's devices in ([`VmElastic::observe`]), resize events out
//! ([`ballast_model::MemoryDeviceChange`]): `requested` when the host changed a
//! device's request, `resized` when the guest's plugged size moved, `stuck` when a
//! request is not being met, `converged` when a stuck request is met at last. The
//! stuck rule: plugged != requested and plugged made no progress towards the request
//! for [`NO_PROGRESS_POLLS`] polls in a row once the request is at least
//! [`MIN_REQUEST_AGE_POLLS`] polls old, or plugged has differed from requested for
//! longer than `elastic.converge_timeout_secs`. `resized`, `stuck` and `converged`
//! share a per-VM token bucket (a guest flapping its plugged size must not flood the
//! spool); `requested` comes from the host and is never held back.
//!
//! It also keeps the per-poll sums for the OOM history ([`VmElastic::totals_at`]) in a
//! ring as long as the balloon history, and the minute rollup of each device. Only VMs
//! with a device have any of this (the fleet's `VmState::elastic` is None otherwise).

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ballast_model::{
    MemoryDeviceChange, ResizePhase, VirtioMemDevice, VirtioMemRollup, VirtioMemTotals, VmRef,
};

use crate::history::epoch_secs;
use crate::hypervisor::virtio_mem::{plausible, MAX_DEVICES};
use crate::hypervisor::BalloonSample;
use crate::wire::epoch_ms;

pub mod onlined;
pub use onlined::{GuestView, OnlineChange};

/// `elastic.converge_timeout_secs`' default.
pub const DEFAULT_CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Polls in a row without progress that make an unmet request stuck.
pub const NO_PROGRESS_POLLS: u32 = 2;
/// ... once the request is at least this many polls old.
pub const MIN_REQUEST_AGE_POLLS: u32 = 2;
/// The per-VM event bucket: this many `resized`/`stuck`/`converged` events at once,
const EVENT_BURST: u32 = 10;
/// ... and one more every this long.
const EVENT_REFILL: Duration = Duration::from_secs(60);

/// One device's state across polls.
#[derive(Debug, Clone)]
struct DeviceState {
    device: VirtioMemDevice,
    /// Polls since the request last changed (0 at the poll that saw it change).
    request_age: u32,
    /// |plugged - requested| at the last poll; None when either is unknown.
    distance: Option<u64>,
    no_progress: u32,
    unconverged_since: Option<SystemTime>,
    stuck: bool,
    rollup: Option<VirtioMemRollup>,
}

impl DeviceState {
    fn new(device: VirtioMemDevice, at: SystemTime) -> Self {
        let distance = distance(&device);
        Self {
            unconverged_since: distance.filter(|d| *d > 0).map(|_| at),
            device,
            request_age: 0,
            distance,
            no_progress: 0,
            stuck: false,
            rollup: None,
        }
    }

    fn fold_into_rollup(&mut self) {
        let device = &self.device;
        let rollup = self.rollup.get_or_insert_with(|| VirtioMemRollup {
            id: device.id.clone(),
            ..VirtioMemRollup::default()
        });
        rollup.node = device.node.or(rollup.node);
        rollup.block_size_kib = device.block_size_kib.or(rollup.block_size_kib);
        rollup.max_size_kib = device.max_size_kib.or(rollup.max_size_kib);
        rollup.requested_kib.add(device.requested_kib);
        rollup.plugged_kib.add(device.plugged_kib);
    }
}

fn distance(device: &VirtioMemDevice) -> Option<u64> {
    Some(device.plugged_kib?.abs_diff(device.requested_kib?))
}

/// One device as [`VmElastic::devices`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceView<'a> {
    pub device: &'a VirtioMemDevice,
    pub stuck: bool,
    pub unconverged_since: Option<SystemTime>,
}

/// One poll's sums in 16 bytes: its time (seconds after the ring's base, never going
/// back, as the balloon history keeps it) and plugged, requested and maximum as u32
/// KiB (up to 4 TiB; `u32::MAX` = missing), like the balloon history's points.
#[derive(Debug, Clone, Copy)]
struct RingPoint {
    secs: u32,
    plugged: u32,
    requested: u32,
    max: u32,
}

const MISSING: u32 = u32::MAX;

fn pack(kib: Option<u64>) -> u32 {
    kib.map_or(MISSING, |kib| {
        u32::try_from(kib).unwrap_or(MISSING - 1).min(MISSING - 1)
    })
}

fn unpack(value: u32) -> Option<u64> {
    (value != MISSING).then_some(u64::from(value))
}

impl RingPoint {
    fn totals(&self) -> VirtioMemTotals {
        VirtioMemTotals {
            plugged_kib: unpack(self.plugged),
            requested_kib: unpack(self.requested),
            max_size_kib: unpack(self.max),
            sampled_at_ms: None,
        }
    }
}

/// A VM's virtio-mem state.
#[derive(Debug, Clone)]
pub struct VmElastic {
    devices: Vec<DeviceState>,
    /// Per poll, oldest first, at most `capacity` (grown as needed, never past it).
    ring: VecDeque<RingPoint>,
    /// Unix seconds of the ring's first point ever: a point's time is relative to it.
    base_secs: u64,
    capacity: usize,
    tokens: u32,
    refilled_at: Option<SystemTime>,
    suppressed: u64,
    /// Plugged but not onlined ([`onlined`]).
    online: onlined::OnlineWatch,
}

impl VmElastic {
    /// `capacity`: the polls the history ring keeps (as the balloon's).
    pub fn new(capacity: usize) -> Self {
        Self {
            devices: Vec::new(),
            ring: VecDeque::new(),
            base_secs: 0,
            capacity: capacity.max(1),
            tokens: EVENT_BURST,
            refilled_at: None,
            suppressed: 0,
            online: onlined::OnlineWatch::default(),
        }
    }

    /// The guest's side of the poll just observed ([`onlined`]): its MemTotal and what
    /// the balloon holds out of it (nothing with `deflate_on_oom`: its pages stay in
    /// MemTotal). Nothing is told from a sample without MemTotal, a guest report time
    /// or, without deflate-on-oom, the balloon's figures.
    pub fn observe_sample(
        &mut self,
        at: SystemTime,
        sample: &BalloonSample,
        deflate_on_oom: bool,
        converge_timeout: Duration,
    ) -> Option<OnlineChange> {
        let balloon_held_kib = if deflate_on_oom {
            0
        } else {
            sample.maximum_kib?.saturating_sub(sample.actual_kib?)
        };
        let view = GuestView {
            plugged_kib: self.totals().plugged_kib?,
            mem_total_kib: sample.available_kib.filter(|kib| *kib > 0)?,
            balloon_held_kib,
            reported_at: UNIX_EPOCH
                + Duration::from_secs(sample.last_update_epoch_secs.filter(|s| *s > 0)?),
        };
        self.online.observe(at, view, converge_timeout)
    }

    /// KiB of plugged memory the guest has not onlined past the timeout; None when
    /// all of it is onlined (or nothing could be told).
    pub fn not_onlined_kib(&self) -> Option<u64> {
        self.online.not_onlined_kib()
    }

    /// The devices at the last poll or event, with their stuck state.
    pub fn devices(&self) -> impl Iterator<Item = DeviceView<'_>> {
        self.devices.iter().map(|state| DeviceView {
            device: &state.device,
            stuck: state.stuck,
            unconverged_since: state.unconverged_since,
        })
    }

    /// The devices' sums now.
    pub fn totals(&self) -> VirtioMemTotals {
        let devices: Vec<VirtioMemDevice> = self.devices.iter().map(|s| s.device.clone()).collect();
        VirtioMemTotals::of(&devices)
    }

    /// `resized`, `stuck` and `converged` events held back by the rate limit.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }

    /// The sums of the poll taken at `at` (to the second: a history point's time).
    pub fn totals_at(&self, at: SystemTime) -> Option<VirtioMemTotals> {
        let at = epoch_secs(at);
        self.ring
            .iter()
            .rev()
            .find(|point| self.absolute(point) == at)
            .map(RingPoint::totals)
    }

    /// The newest poll's sums at or before `bound`, with the poll's time in them.
    pub fn totals_until(&self, bound: SystemTime) -> Option<VirtioMemTotals> {
        let bound = epoch_secs(bound);
        self.ring
            .iter()
            .rev()
            .find(|point| self.absolute(point) <= bound)
            .map(|point| VirtioMemTotals {
                sampled_at_ms: i64::try_from(self.absolute(point).saturating_mul(1000)).ok(),
                ..point.totals()
            })
    }

    /// One poll's devices (non-empty: a poll that read none leaves the state as it
    /// was). Devices no longer listed are forgotten (hot-unplugged); the events it
    /// makes, oldest first.
    pub fn observe(
        &mut self,
        vm: &VmRef,
        at: SystemTime,
        devices: Vec<VirtioMemDevice>,
        converge_timeout: Duration,
    ) -> Vec<MemoryDeviceChange> {
        let devices = plausible(devices);
        let mut changes = Vec::new();
        self.devices
            .retain(|state| devices.iter().any(|d| d.id == state.device.id));
        for device in devices {
            let Some(index) = self.devices.iter().position(|s| s.device.id == device.id) else {
                if self.devices.len() < MAX_DEVICES {
                    let mut state = DeviceState::new(device, at);
                    state.fold_into_rollup();
                    self.devices.push(state);
                }
                continue;
            };
            let mut state = self.devices[index].clone();
            self.observe_device(vm, at, &mut state, device, converge_timeout, &mut changes);
            state.fold_into_rollup();
            self.devices[index] = state;
        }
        let totals = self.totals();
        // Time never goes back in the ring (a wall clock step back keeps the order),
        // as in the balloon history.
        let epoch = epoch_secs(at);
        if self.ring.is_empty() && self.base_secs == 0 {
            self.base_secs = epoch;
        }
        let relative = u32::try_from(epoch.saturating_sub(self.base_secs)).unwrap_or(u32::MAX);
        let secs = self
            .ring
            .back()
            .map_or(relative, |last| relative.max(last.secs));
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        } else if self.ring.len() == self.ring.capacity() {
            let len = self.ring.len();
            self.ring.reserve_exact(len.max(8).min(self.capacity - len));
        }
        self.ring.push_back(RingPoint {
            secs,
            plugged: pack(totals.plugged_kib),
            requested: pack(totals.requested_kib),
            max: pack(totals.max_size_kib),
        });
        changes
    }

    fn observe_device(
        &mut self,
        vm: &VmRef,
        at: SystemTime,
        state: &mut DeviceState,
        device: VirtioMemDevice,
        converge_timeout: Duration,
        changes: &mut Vec<MemoryDeviceChange>,
    ) {
        let previous = std::mem::replace(&mut state.device, device);
        let new_distance = distance(&state.device);
        let old_distance = std::mem::replace(&mut state.distance, new_distance);
        match new_distance {
            Some(0) | None => state.unconverged_since = None,
            Some(_) => {
                state.unconverged_since.get_or_insert(at);
            }
        }
        let request_changed = previous.requested_kib != state.device.requested_kib;
        if request_changed {
            changes.push(change(vm, state, &previous, ResizePhase::Requested));
            state.request_age = 0;
            state.no_progress = 0;
        } else {
            state.request_age = state.request_age.saturating_add(1);
            match (old_distance, new_distance) {
                (Some(before), Some(now)) if now > 0 && now >= before => {
                    state.no_progress = state.no_progress.saturating_add(1);
                }
                _ => state.no_progress = 0,
            }
        }
        if previous.plugged_kib != state.device.plugged_kib && self.take_token(at) {
            changes.push(change(vm, state, &previous, ResizePhase::Resized));
        }
        if state.stuck && new_distance == Some(0) {
            state.stuck = false;
            if self.take_token(at) {
                changes.push(change(vm, state, &previous, ResizePhase::Converged));
            }
        } else if request_changed {
            // A new request starts over.
            state.stuck = false;
        }
        let too_long = state
            .unconverged_since
            .is_some_and(|since| at.duration_since(since).unwrap_or_default() >= converge_timeout);
        let no_progress =
            state.request_age >= MIN_REQUEST_AGE_POLLS && state.no_progress >= NO_PROGRESS_POLLS;
        if !state.stuck && new_distance.is_some_and(|d| d > 0) && (no_progress || too_long) {
            state.stuck = true;
            if self.take_token(at) {
                changes.push(change(vm, state, &previous, ResizePhase::Stuck));
            }
        }
    }

    /// A pushed plugged size (libvirt's memory-device-size-change event) between
    /// polls: the device's `resized` event, if the rate limit lets it out. Unknown
    /// devices and implausible sizes are ignored (the next poll reads them).
    pub fn apply_size_event(
        &mut self,
        vm: &VmRef,
        at: SystemTime,
        device: &str,
        plugged_kib: u64,
    ) -> Option<MemoryDeviceChange> {
        let plugged = ballast_model::plausible_kib(Some(plugged_kib))?;
        let index = self.devices.iter().position(|s| s.device.id == device)?;
        if self.devices[index].device.plugged_kib == Some(plugged) {
            return None;
        }
        let previous = self.devices[index].device.clone();
        self.devices[index].device.plugged_kib = Some(plugged);
        // A pushed size is an observation of the minute, too.
        self.devices[index].fold_into_rollup();
        if !self.take_token(at) {
            return None;
        }
        Some(change(
            vm,
            &self.devices[index],
            &previous,
            ResizePhase::Resized,
        ))
    }

    /// The devices' rollups of the period that ended at `end` (each device sampled in
    /// it), with how long each had been unconverged then; the next period starts empty.
    pub fn finish_period(&mut self, end: SystemTime) -> Vec<VirtioMemRollup> {
        self.devices
            .iter_mut()
            .filter_map(|state| {
                let mut rollup = state.rollup.take()?;
                rollup.unconverged_secs = state.unconverged_since.map(|since| {
                    let secs = end.duration_since(since).unwrap_or_default().as_secs();
                    u32::try_from(secs).unwrap_or(u32::MAX)
                });
                Some(rollup)
            })
            .collect()
    }

    fn absolute(&self, point: &RingPoint) -> u64 {
        self.base_secs.saturating_add(u64::from(point.secs))
    }

    fn take_token(&mut self, at: SystemTime) -> bool {
        let refilled_at = *self.refilled_at.get_or_insert(at);
        let elapsed = at.duration_since(refilled_at).unwrap_or_default();
        let earned = u32::try_from(elapsed.as_secs() / EVENT_REFILL.as_secs()).unwrap_or(u32::MAX);
        if earned > 0 {
            self.tokens = self.tokens.saturating_add(earned).min(EVENT_BURST);
            self.refilled_at = Some(refilled_at + EVENT_REFILL * earned);
        }
        if self.tokens == 0 {
            self.suppressed = self.suppressed.saturating_add(1);
            return false;
        }
        self.tokens -= 1;
        true
    }
}

fn change(
    vm: &VmRef,
    state: &DeviceState,
    previous: &VirtioMemDevice,
    phase: ResizePhase,
) -> MemoryDeviceChange {
    let device = &state.device;
    MemoryDeviceChange {
        vm: vm.clone(),
        device: device.id.clone(),
        phase,
        requested_kib: device.requested_kib,
        plugged_kib: device.plugged_kib,
        previous_requested_kib: previous.requested_kib,
        previous_plugged_kib: previous.plugged_kib,
        block_size_kib: device.block_size_kib,
        max_size_kib: device.max_size_kib,
        unconverged_since_ms: state.unconverged_since.map(epoch_ms),
    }
}

#[cfg(test)]
mod tests;
