//! Checks a batch field by field before anything of it is stored: sizes, ranges,
//! enums, memory figures within physical bounds, times within a window of the
//! collector's clock. The first bad field is reported with its JSON path.

use std::collections::HashSet;

use crate::events::{BalloonPoint, Batch, Event, MinMaxLast};
use crate::kinds::{
    EpisodePhase, GuardMode, GuardOutcome, PressureSignal, RiskLevel, SignalSource,
};
use crate::pressure::{GuardAction, PressureEpisode, PressureRollup, PressureSnapshot};
use crate::SCHEMA_VERSION;

/// The largest memory figure any field may carry, in KiB: 4 PiB, what x86-64's 52-bit
/// physical addresses (5-level paging) can reach. A larger figure is a forgery, a
/// corrupted value or a unit mistake, never a machine.
pub const MAX_MEMORY_KIB: u64 = 1 << 42;

/// `kib` when it is within [`MAX_MEMORY_KIB`], else None: what the agent does with
/// a guest-reported figure before it is shipped (missing is not zero).
pub fn plausible_kib(kib: Option<u64>) -> Option<u64> {
    kib.filter(|kib| *kib <= MAX_MEMORY_KIB)
}

/// The bounds a collector enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_events_per_batch: usize,
    pub max_key_bytes: usize,
    pub max_name_bytes: usize,
    pub max_raw_report_bytes: usize,
    pub max_explanation_bytes: usize,
    pub max_history_points: usize,
    pub max_inventory_vms: usize,
    pub max_list_items: usize,
    /// Distinct VMs the events of one batch may name (an inventory's list aside): each
    /// VM with an OOM costs the collector history reads. The agent sends at most 500
    /// events per batch, so it never reaches the default.
    pub max_distinct_vms: usize,
    /// How far before the collector's clock an event time may lie (spooled events
    /// older than the longest retention would be deleted on arrival anyway).
    pub max_age_ms: i64,
    /// How far ahead of the collector's clock an event time may lie (clock skew).
    pub max_ahead_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_events_per_batch: 5_000,
            max_key_bytes: 200,
            max_name_bytes: 512,
            max_raw_report_bytes: 256 * 1024,
            max_explanation_bytes: 8 * 1024,
            max_history_points: 2_000,
            max_inventory_vms: 10_000,
            max_list_items: 256,
            max_distinct_vms: 500,
            max_age_ms: 400 * 86_400_000,
            max_ahead_ms: 86_400_000,
        }
    }
}

/// A field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// JSON path, e.g. `events[3].vm.uuid`.
    pub path: String,
    pub message: String,
}

pub(crate) fn fail(path: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        path: path.into(),
        message: message.into(),
    }
}

pub(crate) fn check_len(path: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.len() > max {
        return Err(fail(
            path,
            format!("longer than {max} bytes ({})", value.len()),
        ));
    }
    Ok(())
}

fn check_nonempty(path: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(fail(path, "must not be empty"));
    }
    check_len(path, value, max)
}

/// A UUID or Proxmox vmid: hex digits, dashes, digits; no spaces or markup.
pub(crate) fn check_uuid(path: &str, value: &str) -> Result<(), FieldError> {
    check_nonempty(path, value, 64)?;
    if !value.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(fail(path, "must be a UUID (hex digits and dashes)"));
    }
    Ok(())
}

pub(crate) fn check_one_of(path: &str, value: &str, allowed: &[&str]) -> Result<(), FieldError> {
    if !allowed.contains(&value) {
        return Err(fail(path, format!("must be one of {}", allowed.join(", "))));
    }
    Ok(())
}

pub(crate) fn check_kib(path: &str, field: &str, kib: Option<u64>) -> Result<(), FieldError> {
    match kib {
        Some(kib) if kib > MAX_MEMORY_KIB => Err(fail(
            format!("{path}.{field}"),
            format!("{kib} is beyond any machine's memory (at most {MAX_MEMORY_KIB})"),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn check_min_max_last(
    path: &str,
    field: &str,
    value: &MinMaxLast,
) -> Result<(), FieldError> {
    check_kib(path, &format!("{field}.min"), value.min)?;
    check_kib(path, &format!("{field}.max"), value.max)?;
    check_kib(path, &format!("{field}.last"), value.last)
}

/// Event times must fall in `[now - max_age, now + max_ahead]` of the collector's clock.
pub(crate) struct TimeWindow {
    earliest_ms: i64,
    latest_ms: i64,
}

impl TimeWindow {
    pub(crate) fn check(&self, path: String, at_ms: i64) -> Result<(), FieldError> {
        if at_ms < self.earliest_ms {
            return Err(fail(
                path,
                format!(
                    "{at_ms} lies more than the accepted age before the collector's clock \
                     (earliest {})",
                    self.earliest_ms
                ),
            ));
        }
        if at_ms > self.latest_ms {
            return Err(fail(
                path,
                format!(
                    "{at_ms} lies ahead of the collector's clock by more than the accepted \
                     skew (latest {}); check the host's clock",
                    self.latest_ms
                ),
            ));
        }
        Ok(())
    }
}

/// Checks a whole batch; `now_ms` is the collector's clock (Unix ms).
pub fn validate(batch: &Batch, limits: &Limits, now_ms: i64) -> Result<(), FieldError> {
    if batch.schema_version == 0 || batch.schema_version > SCHEMA_VERSION {
        return Err(fail(
            "schema_version",
            format!("unsupported (this collector speaks 1 to {SCHEMA_VERSION})"),
        ));
    }
    check_nonempty("host_id", &batch.host_id, 253)?;
    check_len("agent_version", &batch.agent_version, 64)?;
    if batch.events.len() > limits.max_events_per_batch {
        return Err(fail(
            "events",
            format!("more than {} events", limits.max_events_per_batch),
        ));
    }
    let window = TimeWindow {
        earliest_ms: now_ms.saturating_sub(limits.max_age_ms),
        latest_ms: now_ms.saturating_add(limits.max_ahead_ms),
    };
    let mut vms: HashSet<&str> = HashSet::new();
    for (index, envelope) in batch.events.iter().enumerate() {
        let path = format!("events[{index}]");
        check_nonempty(&format!("{path}.key"), &envelope.key, limits.max_key_bytes)?;
        // 2001-09-09 .. 2286-11-20: a millisecond epoch outside that is a unit mistake.
        if !(1_000_000_000_000..=9_999_999_999_999).contains(&envelope.captured_at_ms) {
            return Err(fail(
                format!("{path}.captured_at_ms"),
                "not a Unix time in milliseconds",
            ));
        }
        window.check(format!("{path}.captured_at_ms"), envelope.captured_at_ms)?;
        validate_event(&path, &envelope.event, limits, &window)?;
        if let Some(uuid) = event_vm(&envelope.event) {
            vms.insert(uuid);
            if vms.len() > limits.max_distinct_vms {
                return Err(fail(
                    format!("{path}.vm.uuid"),
                    format!(
                        "the batch names more than {} distinct VMs",
                        limits.max_distinct_vms
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The VM an event is about (an inventory lists many and counts apart).
fn event_vm(event: &Event) -> Option<&str> {
    match event {
        Event::Rollup(rollup) => Some(&rollup.vm.uuid),
        Event::BalloonChange(change) => Some(&change.vm.uuid),
        Event::Oom(oom) => Some(&oom.vm.uuid),
        Event::NearMiss(miss) => Some(&miss.vm.uuid),
        Event::Pressure(episode) => Some(&episode.vm.uuid),
        Event::Guard(action) => Some(&action.vm.uuid),
        Event::MemoryDevice(change) => Some(&change.vm.uuid),
        Event::Hello(_) | Event::Inventory(_) | Event::Health(_) => None,
    }
}

fn check_point(path: &str, point: &BalloonPoint, window: &TimeWindow) -> Result<(), FieldError> {
    window.check(format!("{path}.at_ms"), point.at_ms)?;
    check_kib(path, "actual_kib", point.actual_kib)?;
    check_kib(path, "maximum_kib", point.maximum_kib)?;
    check_kib(path, "available_kib", point.available_kib)?;
    check_kib(path, "usable_kib", point.usable_kib)?;
    if let Some(totals) = &point.virtio_mem {
        elastic::check_totals(&format!("{path}.virtio_mem"), totals, window)?;
    }
    Ok(())
}

fn validate_event(
    path: &str,
    event: &Event,
    limits: &Limits,
    window: &TimeWindow,
) -> Result<(), FieldError> {
    let name = limits.max_name_bytes;
    match event {
        Event::Hello(hello) => {
            check_one_of(
                &format!("{path}.backend"),
                &hello.backend,
                &["libvirt", "proxmox", "fake"],
            )?;
            if hello.capabilities.len() > limits.max_list_items {
                return Err(fail(format!("{path}.capabilities"), "too many items"));
            }
            check_kib(path, "host_memory_kib", hello.host_memory_kib)?;
        }
        Event::Inventory(inventory) => {
            if inventory.vms.len() > limits.max_inventory_vms {
                return Err(fail(format!("{path}.vms"), "too many VMs"));
            }
            for (index, vm) in inventory.vms.iter().enumerate() {
                let vm_path = format!("{path}.vms[{index}]");
                check_uuid(&format!("{vm_path}.vm.uuid"), &vm.vm.uuid)?;
                check_len(&format!("{vm_path}.vm.name"), &vm.vm.name, name)?;
                check_one_of(
                    &format!("{vm_path}.state"),
                    vm.state.as_str(),
                    crate::VmState::NAMES,
                )?;
                if vm.findings.len() > limits.max_list_items {
                    return Err(fail(format!("{vm_path}.findings"), "too many items"));
                }
                let config_path = format!("{vm_path}.config");
                check_kib(&config_path, "memory_kib", vm.config.memory_kib)?;
                check_kib(
                    &config_path,
                    "balloon_floor_kib",
                    vm.config.balloon_floor_kib,
                )?;
                elastic::check_devices(&config_path, &vm.config.virtio_mem, limits)?;
                if let Some(nova) = &vm.openstack {
                    elastic::check_nova(&format!("{vm_path}.openstack"), nova, limits)?;
                }
            }
        }
        Event::Rollup(rollup) => {
            check_uuid(&format!("{path}.vm.uuid"), &rollup.vm.uuid)?;
            check_len(&format!("{path}.vm.name"), &rollup.vm.name, name)?;
            if rollup.period_secs == 0 || rollup.period_secs > 86_400 {
                return Err(fail(format!("{path}.period_secs"), "must be 1 to 86400"));
            }
            window.check(format!("{path}.period_start_ms"), rollup.period_start_ms)?;
            check_kib(path, "maximum_kib", rollup.maximum_kib)?;
            check_min_max_last(path, "actual_kib", &rollup.actual_kib)?;
            check_min_max_last(path, "available_kib", &rollup.available_kib)?;
            check_min_max_last(path, "usable_kib", &rollup.usable_kib)?;
            check_min_max_last(path, "unused_kib", &rollup.unused_kib)?;
            check_min_max_last(path, "rss_kib", &rollup.rss_kib)?;
            if let Some(pressure) = &rollup.pressure {
                validate_pressure_rollup(&format!("{path}.pressure"), pressure, limits)?;
            }
            elastic::check_rollups(path, &rollup.virtio_mem, limits)?;
        }
        Event::BalloonChange(change) => {
            check_uuid(&format!("{path}.vm.uuid"), &change.vm.uuid)?;
            check_len(&format!("{path}.vm.name"), &change.vm.name, name)?;
            check_kib(path, "actual_kib", Some(change.actual_kib))?;
            check_kib(path, "previous_kib", change.previous_kib)?;
        }
        Event::Oom(oom) => {
            check_uuid(&format!("{path}.vm.uuid"), &oom.vm.uuid)?;
            check_len(&format!("{path}.vm.name"), &oom.vm.name, name)?;
            check_len(
                &format!("{path}.raw_report"),
                &oom.raw_report,
                limits.max_raw_report_bytes,
            )?;
            check_len(
                &format!("{path}.analysis.explanation"),
                &oom.analysis.explanation,
                limits.max_explanation_bytes,
            )?;
            check_one_of(
                &format!("{path}.kind"),
                oom.kind.as_str(),
                &crate::OomKind::NAMES,
            )?;
            check_one_of(
                &format!("{path}.analysis.verdict"),
                oom.analysis.verdict.as_str(),
                crate::ReportVerdict::NAMES,
            )?;
            check_one_of(
                &format!("{path}.report.kind"),
                oom.report.kind.as_str(),
                crate::ReportKind::NAMES,
            )?;
            if oom.balloon_history.len() > limits.max_history_points {
                return Err(fail(format!("{path}.balloon_history"), "too many points"));
            }
            if oom.report.top_tasks.len() > limits.max_list_items
                || oom.report.zones.len() > limits.max_list_items
            {
                return Err(fail(format!("{path}.report"), "too many tasks or zones"));
            }
            if let Some(killed) = &oom.report.killed {
                check_len(&format!("{path}.report.killed.comm"), &killed.comm, name)?;
            }
            if let Some(trigger) = &oom.report.trigger {
                check_len(&format!("{path}.report.trigger.comm"), &trigger.comm, name)?;
            }
            validate_oom_figures(path, oom, window)?;
        }
        Event::NearMiss(miss) => {
            check_uuid(&format!("{path}.vm.uuid"), &miss.vm.uuid)?;
            check_one_of(
                &format!("{path}.kind"),
                miss.kind.as_str(),
                crate::NearMissKind::NAMES,
            )?;
            check_len(&format!("{path}.detail"), &miss.detail, 4096)?;
            check_kib(path, "actual_kib", miss.actual_kib)?;
            check_kib(path, "usable_kib", miss.usable_kib)?;
        }
        Event::Health(_) => {}
        Event::Pressure(episode) => {
            check_uuid(&format!("{path}.vm.uuid"), &episode.vm.uuid)?;
            check_len(&format!("{path}.vm.name"), &episode.vm.name, name)?;
            validate_episode(path, episode, limits, window)?;
        }
        Event::Guard(action) => {
            check_uuid(&format!("{path}.vm.uuid"), &action.vm.uuid)?;
            check_len(&format!("{path}.vm.name"), &action.vm.name, name)?;
            validate_guard_action(path, action, limits, window)?;
        }
        Event::MemoryDevice(change) => {
            check_uuid(&format!("{path}.vm.uuid"), &change.vm.uuid)?;
            check_len(&format!("{path}.vm.name"), &change.vm.name, name)?;
            elastic::check_device_change(path, change, window)?;
        }
    }
    Ok(())
}

/// The highest rate of events per second a pressure signal may carry (allocation
/// stalls, major faults): far beyond what any guest's allocator or disk can do.
pub const MAX_EVENTS_PER_S: f64 = 1e9;

/// The highest memory rate a pressure signal may carry, KiB per second (scanned,
/// reclaimed, swapped in, MemAvailable's slope either way): all the memory any machine
/// can have ([`MAX_MEMORY_KIB`]) every second.
pub const MAX_KIB_PER_S: f64 = MAX_MEMORY_KIB as f64;

/// The longest PSI total a guest may report, microseconds: 100 years of uptime.
pub const MAX_PSI_TOTAL_US: u64 = 100 * 366 * 86_400 * 1_000_000;

/// The longest predicted time to exhaustion, seconds (10 years); a slope that slow
/// should be sent as no prediction.
pub const MAX_EXHAUSTION_SECS: u64 = 10 * 366 * 86_400;

/// A rate: finite, within `[min, max]`.
fn check_rate(
    path: &str,
    field: &str,
    value: Option<f64>,
    min: f64,
    max: f64,
) -> Result<(), FieldError> {
    let Some(value) = value else {
        return Ok(());
    };
    let path = format!("{path}.{field}");
    if !value.is_finite() {
        return Err(fail(path, "must be a finite number"));
    }
    if value < min || value > max {
        return Err(fail(path, format!("{value} is outside {min} to {max}")));
    }
    Ok(())
}

/// Every figure of one pressure snapshot (a rollup's peak, an episode's signals).
fn check_snapshot(path: &str, snapshot: &PressureSnapshot) -> Result<(), FieldError> {
    let counts = [
        ("alloc_stalls_per_s", snapshot.alloc_stalls_per_s),
        ("major_faults_per_s", snapshot.major_faults_per_s),
    ];
    for (field, value) in counts {
        check_rate(path, field, value, 0.0, MAX_EVENTS_PER_S)?;
    }
    let kib_rates = [
        ("direct_scan_kib_per_s", snapshot.direct_scan_kib_per_s),
        (
            "direct_reclaim_kib_per_s",
            snapshot.direct_reclaim_kib_per_s,
        ),
        ("async_scan_kib_per_s", snapshot.async_scan_kib_per_s),
        ("async_reclaim_kib_per_s", snapshot.async_reclaim_kib_per_s),
        ("swap_in_kib_per_s", snapshot.swap_in_kib_per_s),
    ];
    for (field, value) in kib_rates {
        check_rate(path, field, value, 0.0, MAX_KIB_PER_S)?;
    }
    check_rate(
        path,
        "available_slope_kib_per_s",
        snapshot.available_slope_kib_per_s,
        -MAX_KIB_PER_S,
        MAX_KIB_PER_S,
    )?;
    check_rate(path, "psi_some_avg10", snapshot.psi_some_avg10, 0.0, 100.0)?;
    check_rate(path, "psi_full_avg10", snapshot.psi_full_avg10, 0.0, 100.0)?;
    let totals = [
        ("psi_some_total_us", snapshot.psi_some_total_us),
        ("psi_full_total_us", snapshot.psi_full_total_us),
    ];
    for (field, value) in totals {
        if let Some(value) = value.filter(|value| *value > MAX_PSI_TOTAL_US) {
            return Err(fail(
                format!("{path}.{field}"),
                format!("{value} is more than 100 years of stall (at most {MAX_PSI_TOTAL_US})"),
            ));
        }
    }
    Ok(())
}

/// A list of vocabulary names: bounded, each a known name, none twice.
fn check_names<T: Copy + PartialEq>(
    path: &str,
    values: &[T],
    max_items: usize,
    name_of: fn(T) -> &'static str,
    allowed: &[&str],
) -> Result<(), FieldError> {
    if values.len() > max_items.min(allowed.len()) {
        return Err(fail(
            path,
            format!("more than {} items", max_items.min(allowed.len())),
        ));
    }
    for (index, value) in values.iter().enumerate() {
        check_one_of(&format!("{path}[{index}]"), name_of(*value), allowed)?;
        if values[..index].contains(value) {
            return Err(fail(
                format!("{path}[{index}]"),
                format!("{} is listed twice", name_of(*value)),
            ));
        }
    }
    Ok(())
}

/// A rollup's pressure: its sources, its peak signals, its risk.
fn validate_pressure_rollup(
    path: &str,
    pressure: &PressureRollup,
    limits: &Limits,
) -> Result<(), FieldError> {
    check_names(
        &format!("{path}.sources"),
        &pressure.sources,
        limits.max_list_items,
        SignalSource::as_str,
        SignalSource::NAMES,
    )?;
    check_one_of(
        &format!("{path}.risk"),
        pressure.risk.as_str(),
        RiskLevel::NAMES,
    )?;
    check_snapshot(&format!("{path}.peak"), &pressure.peak)
}

/// A pressure episode's phase: its times, vocabularies, signals and balloon figures.
fn validate_episode(
    path: &str,
    episode: &PressureEpisode,
    limits: &Limits,
    window: &TimeWindow,
) -> Result<(), FieldError> {
    check_one_of(
        &format!("{path}.phase"),
        episode.phase.as_str(),
        EpisodePhase::NAMES,
    )?;
    window.check(format!("{path}.started_at_ms"), episode.started_at_ms)?;
    window.check(format!("{path}.at_ms"), episode.at_ms)?;
    if episode.at_ms < episode.started_at_ms {
        return Err(fail(
            format!("{path}.at_ms"),
            format!(
                "{} lies before the episode's start ({})",
                episode.at_ms, episode.started_at_ms
            ),
        ));
    }
    check_one_of(
        &format!("{path}.level"),
        episode.level.as_str(),
        RiskLevel::NAMES,
    )?;
    check_names(
        &format!("{path}.drivers"),
        &episode.drivers,
        limits.max_list_items,
        PressureSignal::as_str,
        PressureSignal::NAMES,
    )?;
    check_exhaustion(path, episode.exhaustion_secs)?;
    check_snapshot(&format!("{path}.signals"), &episode.signals)?;
    check_kib(path, "actual_kib", episode.actual_kib)?;
    check_kib(path, "maximum_kib", episode.maximum_kib)?;
    check_kib(path, "balloon_floor_kib", episode.balloon_floor_kib)?;
    check_kib(path, "deficit_kib", episode.deficit_kib)
}

/// The longest explanation a guard action may carry, bytes.
pub const MAX_GUARD_DETAIL_BYTES: usize = 4096;

/// A predicted time to exhaustion within [`MAX_EXHAUSTION_SECS`].
fn check_exhaustion(path: &str, secs: Option<u64>) -> Result<(), FieldError> {
    match secs.filter(|secs| *secs > MAX_EXHAUSTION_SECS) {
        Some(secs) => Err(fail(
            format!("{path}.exhaustion_secs"),
            format!("{secs} is more than 10 years (at most {MAX_EXHAUSTION_SECS})"),
        )),
        None => Ok(()),
    }
}

/// One guard decision: its mode and outcome (and that they go together), its times,
/// the risk and signals that triggered it, every size it names, its explanation.
fn validate_guard_action(
    path: &str,
    action: &GuardAction,
    limits: &Limits,
    window: &TimeWindow,
) -> Result<(), FieldError> {
    let mode_path = format!("{path}.mode");
    check_one_of(&mode_path, action.mode.as_str(), GuardMode::NAMES)?;
    if action.mode == GuardMode::Off {
        return Err(fail(mode_path, "a guard that is off decides nothing"));
    }
    let outcome_path = format!("{path}.outcome");
    check_one_of(&outcome_path, action.outcome.as_str(), GuardOutcome::NAMES)?;
    // Only `act` changes a balloon or a floor; only `observe` reports what it would do.
    let needs = match action.outcome {
        GuardOutcome::Deflated | GuardOutcome::FloorRaised => Some(GuardMode::Act),
        GuardOutcome::WouldDeflate => Some(GuardMode::Observe),
        _ => None,
    };
    if let Some(mode) = needs.filter(|mode| *mode != action.mode) {
        return Err(fail(
            outcome_path,
            format!(
                "{} is an outcome of mode {}, not {}",
                action.outcome.as_str(),
                mode.as_str(),
                action.mode.as_str()
            ),
        ));
    }
    window.check(format!("{path}.at_ms"), action.at_ms)?;
    if let Some(started) = action.episode_started_at_ms {
        window.check(format!("{path}.episode_started_at_ms"), started)?;
        if started > action.at_ms {
            return Err(fail(
                format!("{path}.episode_started_at_ms"),
                format!(
                    "{started} lies after the action it led to ({})",
                    action.at_ms
                ),
            ));
        }
    }
    check_one_of(
        &format!("{path}.level"),
        action.level.as_str(),
        RiskLevel::NAMES,
    )?;
    check_names(
        &format!("{path}.drivers"),
        &action.drivers,
        limits.max_list_items,
        PressureSignal::as_str,
        PressureSignal::NAMES,
    )?;
    check_snapshot(&format!("{path}.signals"), &action.signals)?;
    check_exhaustion(path, action.exhaustion_secs)?;
    let sizes = [
        ("deficit_kib", action.deficit_kib),
        ("actual_before_kib", action.actual_before_kib),
        ("target_kib", action.target_kib),
        ("maximum_kib", action.maximum_kib),
        ("host_available_kib", action.host_available_kib),
        ("host_reserve_kib", action.host_reserve_kib),
        ("floor_before_kib", action.floor_before_kib),
        ("floor_after_kib", action.floor_after_kib),
    ];
    for (field, kib) in sizes {
        check_kib(path, field, kib)?;
    }
    check_len(
        &format!("{path}.detail"),
        &action.detail,
        MAX_GUARD_DETAIL_BYTES,
    )
}

/// Every memory figure and time of an OOM event: the host's balloon and history, the
/// host's memory, and the figures parsed from the guest's report.
fn validate_oom_figures(
    path: &str,
    oom: &crate::events::OomEvent,
    window: &TimeWindow,
) -> Result<(), FieldError> {
    let at_oom = format!("{path}.balloon_at_oom");
    check_kib(&at_oom, "maximum_kib", oom.balloon_at_oom.maximum_kib)?;
    check_kib(&at_oom, "actual_kib", oom.balloon_at_oom.actual_kib)?;
    if let Some(totals) = &oom.balloon_at_oom.virtio_mem {
        elastic::check_totals(&format!("{at_oom}.virtio_mem"), totals, window)?;
    }
    for (index, point) in oom.balloon_history.iter().enumerate() {
        check_point(&format!("{path}.balloon_history[{index}]"), point, window)?;
    }
    if let Some(host) = &oom.host {
        let host_path = format!("{path}.host");
        check_kib(&host_path, "total_kib", host.total_kib)?;
        check_kib(&host_path, "available_kib", host.available_kib)?;
        check_kib(&host_path, "ksm_sharing_kib", host.ksm_sharing_kib)?;
    }
    let report = &oom.report;
    let report_path = format!("{path}.report");
    check_kib(&report_path, "ram_pages", report.ram_pages)?;
    check_kib(&report_path, "reserved_pages", report.reserved_pages)?;
    if let Some(killed) = &report.killed {
        let killed_path = format!("{report_path}.killed");
        check_kib(&killed_path, "total_vm_kb", killed.total_vm_kb)?;
        check_kib(&killed_path, "anon_rss_kb", killed.anon_rss_kb)?;
        check_kib(&killed_path, "file_rss_kb", killed.file_rss_kb)?;
        check_kib(&killed_path, "shmem_rss_kb", killed.shmem_rss_kb)?;
    }
    if let Some(memcg) = &report.memcg {
        check_kib(&format!("{report_path}.memcg"), "usage_kb", memcg.usage_kb)?;
        check_kib(&format!("{report_path}.memcg"), "limit_kb", memcg.limit_kb)?;
    }
    for (index, zone) in report.zones.iter().enumerate() {
        let zone_path = format!("{report_path}.zones[{index}]");
        check_kib(&zone_path, "free_kb", zone.free_kb)?;
        check_kib(&zone_path, "min_kb", zone.min_kb)?;
        check_kib(&zone_path, "managed_kb", zone.managed_kb)?;
        check_kib(&zone_path, "present_kb", zone.present_kb)?;
    }
    for (index, task) in report.top_tasks.iter().enumerate() {
        let task_path = format!("{report_path}.top_tasks[{index}]");
        check_kib(&task_path, "rss_kb", Some(task.rss_kb))?;
    }
    let analysis = &oom.analysis;
    let analysis_path = format!("{path}.analysis");
    check_kib(&analysis_path, "managed_kb", analysis.managed_kb)?;
    check_kib(&analysis_path, "reserved_kb", analysis.reserved_kb)?;
    check_kib(&analysis_path, "accounted_kb", analysis.accounted_kb)?;
    check_kib(&analysis_path, "unaccounted_kb", analysis.unaccounted_kb)?;
    check_kib(&analysis_path, "balloon_held_kb", analysis.balloon_held_kb)
}

mod elastic;
pub use elastic::MAX_NOVA_TEXT_BYTES;
#[cfg(test)]
mod tests;
