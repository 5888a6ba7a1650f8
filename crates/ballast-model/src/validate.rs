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

fn fail(path: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        path: path.into(),
        message: message.into(),
    }
}

fn check_len(path: &str, value: &str, max: usize) -> Result<(), FieldError> {
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
fn check_uuid(path: &str, value: &str) -> Result<(), FieldError> {
    check_nonempty(path, value, 64)?;
    if !value.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(fail(path, "must be a UUID (hex digits and dashes)"));
    }
    Ok(())
}

fn check_one_of(path: &str, value: &str, allowed: &[&str]) -> Result<(), FieldError> {
    if !allowed.contains(&value) {
        return Err(fail(path, format!("must be one of {}", allowed.join(", "))));
    }
    Ok(())
}

fn check_kib(path: &str, field: &str, kib: Option<u64>) -> Result<(), FieldError> {
    match kib {
        Some(kib) if kib > MAX_MEMORY_KIB => Err(fail(
            format!("{path}.{field}"),
            format!("{kib} is beyond any machine's memory (at most {MAX_MEMORY_KIB})"),
        )),
        _ => Ok(()),
    }
}

fn check_min_max_last(path: &str, field: &str, value: &MinMaxLast) -> Result<(), FieldError> {
    check_kib(path, &format!("{field}.min"), value.min)?;
    check_kib(path, &format!("{field}.max"), value.max)?;
    check_kib(path, &format!("{field}.last"), value.last)
}

/// Event times must fall in `[now - max_age, now + max_ahead]` of the collector's clock.
struct TimeWindow {
    earliest_ms: i64,
    latest_ms: i64,
}

impl TimeWindow {
    fn check(&self, path: String, at_ms: i64) -> Result<(), FieldError> {
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
        Event::Hello(_) | Event::Inventory(_) | Event::Health(_) => None,
    }
}

fn check_point(path: &str, point: &BalloonPoint, window: &TimeWindow) -> Result<(), FieldError> {
    window.check(format!("{path}.at_ms"), point.at_ms)?;
    check_kib(path, "actual_kib", point.actual_kib)?;
    check_kib(path, "maximum_kib", point.maximum_kib)?;
    check_kib(path, "available_kib", point.available_kib)?;
    check_kib(path, "usable_kib", point.usable_kib)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{BalloonChange, BalloonRollup, Envelope, Inventory, VmInventory, VmRef};
    use crate::PressureSnapshot;

    /// The collector's clock in these tests: a second after the events were captured.
    const NOW: i64 = 1_795_658_494_123;

    fn batch(events: Vec<Envelope>) -> Batch {
        Batch {
            schema_version: SCHEMA_VERSION,
            host_id: "pve1".into(),
            agent_version: "0.1.0".into(),
            events,
        }
    }

    fn change(uuid: &str) -> Envelope {
        Envelope {
            key: "pve1/bc/1".into(),
            captured_at_ms: 1_795_658_493_123,
            event: Event::BalloonChange(BalloonChange {
                vm: VmRef {
                    uuid: uuid.into(),
                    name: "web1".into(),
                },
                actual_kib: 204_800,
                previous_kib: Some(524_288),
            }),
        }
    }

    #[test]
    fn a_good_batch_passes() {
        let good = batch(vec![change("3f2a0c1e-0000-4000-8000-000000000001")]);
        assert_eq!(validate(&good, &Limits::default(), NOW), Ok(()));
    }

    #[test]
    fn bad_fields_are_named_by_path() {
        let bad = batch(vec![
            change("3f2a0c1e-0000-4000-8000-000000000001"),
            change("<script>"),
        ]);
        let error = validate(&bad, &Limits::default(), NOW).expect_err("bad uuid");
        assert_eq!(error.path, "events[1].vm.uuid");
        let mut future = batch(Vec::new());
        future.schema_version = SCHEMA_VERSION + 1;
        assert_eq!(
            validate(&future, &Limits::default(), NOW).map_err(|e| e.path),
            Err("schema_version".into())
        );
        let mut seconds = batch(vec![change("3f2a")]);
        seconds.events[0].captured_at_ms = 1_795_658_493;
        assert_eq!(
            validate(&seconds, &Limits::default(), NOW).map_err(|e| e.path),
            Err("events[0].captured_at_ms".into())
        );
    }

    #[test]
    fn the_wire_form_is_tagged_and_flat() {
        let json = serde_json::to_value(change("3f2a")).expect("serializes");
        assert_eq!(json["type"], "balloon_change");
        assert_eq!(json["vm"]["name"], "web1");
        let back: Envelope = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, change("3f2a"));
    }

    #[test]
    fn unknown_fields_from_newer_agents_are_ignored() {
        let mut json = serde_json::to_value(change("3f2a")).expect("serializes");
        json["added_in_v2"] = serde_json::json!(true);
        assert!(serde_json::from_value::<Envelope>(json).is_ok());
    }

    #[test]
    fn times_outside_the_collectors_window_are_refused_by_field() {
        let limits = Limits::default();
        let mut ahead = batch(vec![change("3f2a")]);
        ahead.events[0].captured_at_ms = NOW + 2 * 86_400_000;
        let error = validate(&ahead, &limits, NOW).expect_err("two days ahead");
        assert_eq!(error.path, "events[0].captured_at_ms");
        assert!(error.message.contains("clock"), "{}", error.message);
        let mut old = batch(vec![change("3f2a")]);
        old.events[0].captured_at_ms = NOW - 500 * 86_400_000;
        assert_eq!(
            validate(&old, &limits, NOW).map_err(|e| e.path),
            Err("events[0].captured_at_ms".into())
        );
        // The same batch is fine on the clock it was captured by: the window moves
        // with the collector's clock, nothing is tied to a date.
        assert_eq!(validate(&old, &limits, NOW - 499 * 86_400_000), Ok(()));
        let mut rollup = batch(vec![Envelope {
            key: "pve1/rollup/1".into(),
            captured_at_ms: NOW,
            event: Event::Rollup(Box::new(BalloonRollup {
                vm: VmRef {
                    uuid: "3f2a".into(),
                    name: "web1".into(),
                },
                period_start_ms: NOW + 3 * 86_400_000,
                period_secs: 60,
                ..BalloonRollup::default()
            })),
        }]);
        assert_eq!(
            validate(&rollup, &limits, NOW).map_err(|e| e.path),
            Err("events[0].period_start_ms".into())
        );
        if let Event::Rollup(inner) = &mut rollup.events[0].event {
            inner.period_start_ms = NOW - 60_000;
            inner.usable_kib.max = Some(u64::MAX);
        }
        let error = validate(&rollup, &limits, NOW).expect_err("beyond memory");
        assert_eq!(error.path, "events[0].usable_kib.max");
    }

    #[test]
    fn sizes_beyond_any_machine_are_refused_by_field() {
        let mut huge = batch(vec![change("3f2a")]);
        if let Event::BalloonChange(inner) = &mut huge.events[0].event {
            inner.previous_kib = Some(MAX_MEMORY_KIB + 1);
        }
        assert_eq!(
            validate(&huge, &Limits::default(), NOW).map_err(|e| e.path),
            Err("events[0].previous_kib".into())
        );
        if let Event::BalloonChange(inner) = &mut huge.events[0].event {
            inner.previous_kib = Some(MAX_MEMORY_KIB);
        }
        assert_eq!(validate(&huge, &Limits::default(), NOW), Ok(()));
    }

    #[test]
    fn a_batch_names_at_most_max_distinct_vms_beside_its_inventory() {
        let limits = Limits::default();
        let uuid = |index: usize| format!("00000000-0000-4000-8000-{index:012}");
        let changes =
            |count: usize| -> Vec<Envelope> { (0..count).map(|i| change(&uuid(i))).collect() };
        assert_eq!(
            validate(&batch(changes(limits.max_distinct_vms)), &limits, NOW),
            Ok(())
        );
        let error = validate(&batch(changes(limits.max_distinct_vms + 1)), &limits, NOW)
            .expect_err("one VM too many");
        assert_eq!(
            error.path,
            format!("events[{}].vm.uuid", limits.max_distinct_vms)
        );
        // Many events about few VMs are fine, and so is a whole host's inventory.
        let mut same_vm = changes(1);
        same_vm.extend((0..limits.max_events_per_batch - 2).map(|_| change(&uuid(0))));
        same_vm.push(Envelope {
            key: "pve1/inventory/1".into(),
            captured_at_ms: NOW,
            event: Event::Inventory(Inventory {
                vms: (0..limits.max_inventory_vms)
                    .map(|i| VmInventory {
                        vm: VmRef {
                            uuid: uuid(i),
                            name: format!("vm{i}"),
                        },
                        state: crate::VmState::Running,
                        config: crate::events::VmConfig::default(),
                        findings: Vec::new(),
                    })
                    .collect(),
            }),
        });
        assert_eq!(validate(&batch(same_vm), &limits, NOW), Ok(()));
    }

    fn episode(at_ms: i64) -> crate::PressureEpisode {
        crate::PressureEpisode {
            vm: VmRef {
                uuid: "3f2a0c1e-0000-4000-8000-000000000001".into(),
                name: "web1".into(),
            },
            phase: EpisodePhase::Peak,
            started_at_ms: at_ms - 30_000,
            at_ms,
            level: RiskLevel::Critical,
            drivers: vec![PressureSignal::AllocStalls, PressureSignal::PsiFull],
            exhaustion_secs: Some(40),
            signals: PressureSnapshot {
                alloc_stalls_per_s: Some(12.5),
                direct_scan_kib_per_s: Some(40_960.0),
                available_slope_kib_per_s: Some(-2_048.0),
                psi_some_avg10: Some(35.0),
                psi_full_avg10: Some(12.0),
                psi_some_total_us: Some(9_000_000),
                ..PressureSnapshot::default()
            },
            actual_kib: Some(524_288),
            maximum_kib: Some(2_097_152),
            balloon_floor_kib: Some(524_288),
            at_balloon_floor: true,
            deficit_kib: Some(131_072),
        }
    }

    fn episode_batch(episode: crate::PressureEpisode) -> Batch {
        batch(vec![Envelope {
            key: "pve1/pressure/1".into(),
            captured_at_ms: NOW - 1_000,
            event: Event::Pressure(Box::new(episode)),
        }])
    }

    /// The path of the first bad field of `episode` edited by `edit`.
    fn episode_error(edit: impl FnOnce(&mut crate::PressureEpisode)) -> String {
        let mut bad = episode(NOW - 1_000);
        edit(&mut bad);
        match validate(&episode_batch(bad), &Limits::default(), NOW) {
            Ok(()) => "accepted".into(),
            Err(error) => error.path,
        }
    }

    #[test]
    fn a_bounded_snapshot_is_always_accepted_and_keeps_what_was_valid() {
        let hostile = PressureSnapshot {
            alloc_stalls_per_s: Some(1e11),
            direct_scan_kib_per_s: Some(f64::INFINITY),
            direct_reclaim_kib_per_s: Some(-1.0),
            async_scan_kib_per_s: Some(f64::NAN),
            async_reclaim_kib_per_s: Some(2.0 * MAX_KIB_PER_S),
            major_faults_per_s: Some(7.0),
            swap_in_kib_per_s: Some(MAX_KIB_PER_S),
            available_slope_kib_per_s: Some(-2.0 * MAX_KIB_PER_S),
            psi_some_avg10: Some(100.5),
            psi_full_avg10: Some(100.0),
            psi_some_total_us: Some(u64::MAX),
            psi_full_total_us: Some(MAX_PSI_TOTAL_US),
        };
        assert_eq!(
            episode_error(|e| e.signals = hostile),
            "events[0].signals.alloc_stalls_per_s"
        );
        assert_eq!(episode_error(|e| e.signals = hostile.bounded()), "accepted");
        let bounded = hostile.bounded();
        assert_eq!(
            bounded,
            PressureSnapshot {
                major_faults_per_s: Some(7.0),
                swap_in_kib_per_s: Some(MAX_KIB_PER_S),
                psi_full_avg10: Some(100.0),
                psi_full_total_us: Some(MAX_PSI_TOTAL_US),
                ..PressureSnapshot::default()
            }
        );
    }

    fn rollup_with(pressure: PressureRollup) -> Batch {
        batch(vec![Envelope {
            key: "pve1/rollup/1".into(),
            captured_at_ms: NOW - 1_000,
            event: Event::Rollup(Box::new(BalloonRollup {
                vm: VmRef {
                    uuid: "3f2a".into(),
                    name: "web1".into(),
                },
                period_start_ms: NOW - 61_000,
                period_secs: 60,
                pressure: Some(pressure),
                ..BalloonRollup::default()
            })),
        }])
    }

    fn rollup_error(edit: impl FnOnce(&mut PressureRollup)) -> String {
        let mut pressure = PressureRollup {
            sources: vec![SignalSource::BalloonCounters, SignalSource::GuestPsi],
            peak: episode(NOW).signals,
            risk: RiskLevel::Elevated,
        };
        edit(&mut pressure);
        match validate(&rollup_with(pressure), &Limits::default(), NOW) {
            Ok(()) => "accepted".into(),
            Err(error) => error.path,
        }
    }

    #[test]
    fn a_whole_pressure_episode_and_rollup_pass() {
        assert_eq!(episode_error(|_| {}), "accepted");
        assert_eq!(rollup_error(|_| {}), "accepted");
        // An episode's phase may fall at its start, and a VM may have no signal source.
        assert_eq!(
            episode_error(|e| {
                e.started_at_ms = e.at_ms;
                e.drivers.clear();
                e.signals = PressureSnapshot::default();
            }),
            "accepted"
        );
        assert_eq!(rollup_error(|p| p.sources.clear()), "accepted");
    }

    #[test]
    fn pressure_rates_must_be_finite() {
        assert_eq!(
            episode_error(|e| e.signals.alloc_stalls_per_s = Some(f64::NAN)),
            "events[0].signals.alloc_stalls_per_s"
        );
        assert_eq!(
            rollup_error(|p| p.peak.swap_in_kib_per_s = Some(f64::INFINITY)),
            "events[0].pressure.peak.swap_in_kib_per_s"
        );
        assert_eq!(
            episode_error(|e| e.signals.available_slope_kib_per_s = Some(f64::NEG_INFINITY)),
            "events[0].signals.available_slope_kib_per_s"
        );
    }

    #[test]
    fn pressure_rates_are_non_negative_except_the_slope() {
        assert_eq!(
            episode_error(|e| e.signals.major_faults_per_s = Some(-1.0)),
            "events[0].signals.major_faults_per_s"
        );
        assert_eq!(
            rollup_error(|p| p.peak.direct_reclaim_kib_per_s = Some(-0.5)),
            "events[0].pressure.peak.direct_reclaim_kib_per_s"
        );
        assert_eq!(
            episode_error(|e| e.signals.available_slope_kib_per_s = Some(-1e6)),
            "accepted",
            "MemAvailable falling is what the slope is for"
        );
    }

    #[test]
    fn pressure_rates_are_bounded() {
        assert_eq!(
            episode_error(|e| e.signals.alloc_stalls_per_s = Some(MAX_EVENTS_PER_S)),
            "accepted"
        );
        assert_eq!(
            episode_error(|e| e.signals.alloc_stalls_per_s = Some(MAX_EVENTS_PER_S * 2.0)),
            "events[0].signals.alloc_stalls_per_s"
        );
        assert_eq!(
            rollup_error(|p| p.peak.async_scan_kib_per_s = Some(MAX_KIB_PER_S * 2.0)),
            "events[0].pressure.peak.async_scan_kib_per_s"
        );
        assert_eq!(
            episode_error(|e| e.signals.available_slope_kib_per_s = Some(-MAX_KIB_PER_S * 2.0)),
            "events[0].signals.available_slope_kib_per_s"
        );
    }

    #[test]
    fn psi_figures_are_percentages_and_bounded_totals() {
        assert_eq!(
            episode_error(|e| e.signals.psi_some_avg10 = Some(100.0)),
            "accepted"
        );
        assert_eq!(
            episode_error(|e| e.signals.psi_some_avg10 = Some(100.5)),
            "events[0].signals.psi_some_avg10"
        );
        assert_eq!(
            rollup_error(|p| p.peak.psi_full_avg10 = Some(-3.0)),
            "events[0].pressure.peak.psi_full_avg10"
        );
        assert_eq!(
            episode_error(|e| e.signals.psi_full_total_us = Some(u64::MAX)),
            "events[0].signals.psi_full_total_us"
        );
    }

    #[test]
    fn episode_times_lie_in_the_window_and_in_order() {
        assert_eq!(
            episode_error(|e| e.at_ms = NOW + 2 * 86_400_000),
            "events[0].at_ms"
        );
        assert_eq!(
            episode_error(|e| e.started_at_ms = NOW - 500 * 86_400_000),
            "events[0].started_at_ms"
        );
        assert_eq!(
            episode_error(|e| e.started_at_ms = e.at_ms + 1),
            "events[0].at_ms"
        );
    }

    #[test]
    fn pressure_vocabularies_accept_only_their_names() {
        assert_eq!(
            episode_error(|e| e.phase = EpisodePhase::Unknown),
            "events[0].phase"
        );
        assert_eq!(
            episode_error(|e| e.level = RiskLevel::Unknown),
            "events[0].level"
        );
        assert_eq!(
            episode_error(|e| e.drivers.push(PressureSignal::Unknown)),
            "events[0].drivers[2]"
        );
        assert_eq!(
            rollup_error(|p| p.risk = RiskLevel::Unknown),
            "events[0].pressure.risk"
        );
        assert_eq!(
            rollup_error(|p| p.sources.push(SignalSource::Unknown)),
            "events[0].pressure.sources[2]"
        );
        // A newer agent's name decodes as unknown and is refused by its path.
        let mut json = serde_json::to_value(episode_batch(episode(NOW - 1_000))).expect("json");
        json["events"][0]["drivers"][0] = serde_json::json!("gpu_stalls");
        let decoded: Batch = serde_json::from_value(json).expect("decodes");
        assert_eq!(
            validate(&decoded, &Limits::default(), NOW).map_err(|e| e.path),
            Err("events[0].drivers[0]".into())
        );
    }

    #[test]
    fn pressure_lists_are_bounded_and_without_repeats() {
        assert_eq!(
            episode_error(|e| e.drivers.push(PressureSignal::AllocStalls)),
            "events[0].drivers[2]"
        );
        assert_eq!(
            episode_error(|e| e.drivers = vec![PressureSignal::SwapIn; 300]),
            "events[0].drivers"
        );
        assert_eq!(
            rollup_error(|p| p.sources.push(SignalSource::GuestPsi)),
            "events[0].pressure.sources[2]"
        );
        assert_eq!(
            rollup_error(|p| p.sources = vec![SignalSource::BalloonStats; 4]),
            "events[0].pressure.sources"
        );
    }

    #[test]
    fn episode_figures_are_bounded() {
        assert_eq!(
            episode_error(|e| e.exhaustion_secs = Some(MAX_EXHAUSTION_SECS)),
            "accepted"
        );
        assert_eq!(
            episode_error(|e| e.exhaustion_secs = Some(u64::MAX)),
            "events[0].exhaustion_secs"
        );
        assert_eq!(
            episode_error(|e| e.actual_kib = Some(MAX_MEMORY_KIB + 1)),
            "events[0].actual_kib"
        );
        assert_eq!(
            episode_error(|e| e.maximum_kib = Some(u64::MAX)),
            "events[0].maximum_kib"
        );
        assert_eq!(
            episode_error(|e| e.balloon_floor_kib = Some(u64::MAX)),
            "events[0].balloon_floor_kib"
        );
        assert_eq!(
            episode_error(|e| e.deficit_kib = Some(u64::MAX)),
            "events[0].deficit_kib"
        );
        assert_eq!(
            episode_error(|e| e.vm.uuid = "<img>".into()),
            "events[0].vm.uuid"
        );
        assert_eq!(
            episode_error(|e| e.vm.name = "x".repeat(600)),
            "events[0].vm.name"
        );
    }

    fn guard_action(at_ms: i64) -> crate::GuardAction {
        let episode = episode(at_ms);
        crate::GuardAction {
            vm: episode.vm,
            mode: GuardMode::Act,
            outcome: GuardOutcome::Deflated,
            at_ms,
            episode_started_at_ms: Some(episode.started_at_ms),
            level: RiskLevel::Critical,
            drivers: episode.drivers,
            signals: episode.signals,
            exhaustion_secs: Some(40),
            deficit_kib: Some(262_144),
            actual_before_kib: Some(524_288),
            target_kib: Some(786_432),
            maximum_kib: Some(2_097_152),
            host_available_kib: Some(8_388_608),
            host_reserve_kib: Some(1_048_576),
            floor_before_kib: Some(524_288),
            floor_after_kib: None,
            detail: "deflated 256 MiB".into(),
        }
    }

    /// The path of the first bad field of a guard action edited by `edit`.
    fn guard_error(edit: impl FnOnce(&mut crate::GuardAction)) -> String {
        let mut action = guard_action(NOW - 1_000);
        edit(&mut action);
        let batch = batch(vec![Envelope {
            key: "pve1/guard/1".into(),
            captured_at_ms: NOW - 1_000,
            event: Event::Guard(Box::new(action)),
        }]);
        match validate(&batch, &Limits::default(), NOW) {
            Ok(()) => "accepted".into(),
            Err(error) => error.path,
        }
    }

    #[test]
    fn a_whole_guard_action_passes_and_its_optional_figures_may_be_missing() {
        assert_eq!(guard_error(|_| {}), "accepted");
        assert_eq!(
            guard_error(|a| {
                a.mode = GuardMode::Observe;
                a.outcome = GuardOutcome::HostHasNothing;
                a.episode_started_at_ms = None;
                a.drivers.clear();
                a.signals = PressureSnapshot::default();
                a.exhaustion_secs = None;
                a.deficit_kib = None;
                a.actual_before_kib = None;
                a.target_kib = None;
                a.maximum_kib = None;
                a.host_available_kib = None;
                a.host_reserve_kib = None;
                a.floor_before_kib = None;
                a.detail.clear();
            }),
            "accepted"
        );
        // The action may be taken at the very poll its episode started.
        assert_eq!(
            guard_error(|a| a.episode_started_at_ms = Some(a.at_ms)),
            "accepted"
        );
    }

    #[test]
    fn guard_vocabularies_accept_only_their_names_and_an_outcome_its_mode() {
        assert_eq!(
            guard_error(|a| a.mode = GuardMode::Unknown),
            "events[0].mode"
        );
        assert_eq!(guard_error(|a| a.mode = GuardMode::Off), "events[0].mode");
        assert_eq!(
            guard_error(|a| a.outcome = GuardOutcome::Unknown),
            "events[0].outcome"
        );
        assert_eq!(
            guard_error(|a| a.level = RiskLevel::Unknown),
            "events[0].level"
        );
        assert_eq!(
            guard_error(|a| a.drivers.push(PressureSignal::Unknown)),
            "events[0].drivers[2]"
        );
        assert_eq!(
            guard_error(|a| a.drivers.push(PressureSignal::AllocStalls)),
            "events[0].drivers[2]"
        );
        assert_eq!(
            guard_error(|a| a.drivers = vec![PressureSignal::SwapIn; 300]),
            "events[0].drivers"
        );
        // observe never changes a balloon; act never merely would.
        assert_eq!(
            guard_error(|a| a.mode = GuardMode::Observe),
            "events[0].outcome"
        );
        assert_eq!(
            guard_error(|a| {
                a.mode = GuardMode::Observe;
                a.outcome = GuardOutcome::FloorRaised;
            }),
            "events[0].outcome"
        );
        assert_eq!(
            guard_error(|a| a.outcome = GuardOutcome::WouldDeflate),
            "events[0].outcome"
        );
        for outcome in [
            GuardOutcome::OverriddenByHost,
            GuardOutcome::HostHasNothing,
            GuardOutcome::BeyondMaximum,
            GuardOutcome::RateLimited,
            GuardOutcome::Failed,
        ] {
            for mode in [GuardMode::Observe, GuardMode::Act] {
                assert_eq!(
                    guard_error(|a| {
                        a.mode = mode;
                        a.outcome = outcome;
                    }),
                    "accepted",
                    "{outcome:?} in {mode:?}"
                );
            }
        }
        assert_eq!(
            guard_error(|a| {
                a.mode = GuardMode::Observe;
                a.outcome = GuardOutcome::WouldDeflate;
            }),
            "accepted"
        );
        // A newer agent's outcome decodes as unknown and is refused by its path.
        let good = batch(vec![Envelope {
            key: "pve1/guard/1".into(),
            captured_at_ms: NOW - 1_000,
            event: Event::Guard(Box::new(guard_action(NOW - 1_000))),
        }]);
        let mut json = serde_json::to_value(good).expect("json");
        json["events"][0]["outcome"] = serde_json::json!("vaporised");
        let decoded: Batch = serde_json::from_value(json).expect("decodes");
        assert_eq!(
            validate(&decoded, &Limits::default(), NOW).map_err(|e| e.path),
            Err("events[0].outcome".into())
        );
    }

    #[test]
    fn guard_times_lie_in_the_window_and_the_episode_before_the_action() {
        assert_eq!(
            guard_error(|a| a.at_ms = NOW + 2 * 86_400_000),
            "events[0].at_ms"
        );
        assert_eq!(
            guard_error(|a| a.at_ms = NOW - 500 * 86_400_000),
            "events[0].at_ms"
        );
        assert_eq!(
            guard_error(|a| a.episode_started_at_ms = Some(NOW - 500 * 86_400_000)),
            "events[0].episode_started_at_ms"
        );
        assert_eq!(
            guard_error(|a| a.episode_started_at_ms = Some(a.at_ms + 1)),
            "events[0].episode_started_at_ms"
        );
    }

    #[test]
    fn guard_figures_are_bounded_by_field() {
        assert_eq!(
            guard_error(|a| a.signals.psi_full_avg10 = Some(f64::NAN)),
            "events[0].signals.psi_full_avg10"
        );
        assert_eq!(
            guard_error(|a| a.signals.direct_scan_kib_per_s = Some(-1.0)),
            "events[0].signals.direct_scan_kib_per_s"
        );
        assert_eq!(
            guard_error(|a| a.exhaustion_secs = Some(MAX_EXHAUSTION_SECS)),
            "accepted"
        );
        assert_eq!(
            guard_error(|a| a.exhaustion_secs = Some(MAX_EXHAUSTION_SECS + 1)),
            "events[0].exhaustion_secs"
        );
        type Slot = fn(&mut crate::GuardAction) -> &mut Option<u64>;
        let fields: [(&str, Slot); 8] = [
            ("deficit_kib", |a| &mut a.deficit_kib),
            ("actual_before_kib", |a| &mut a.actual_before_kib),
            ("target_kib", |a| &mut a.target_kib),
            ("maximum_kib", |a| &mut a.maximum_kib),
            ("host_available_kib", |a| &mut a.host_available_kib),
            ("host_reserve_kib", |a| &mut a.host_reserve_kib),
            ("floor_before_kib", |a| &mut a.floor_before_kib),
            ("floor_after_kib", |a| &mut a.floor_after_kib),
        ];
        for (field, slot) in fields {
            assert_eq!(
                guard_error(|a| *slot(a) = Some(MAX_MEMORY_KIB)),
                "accepted",
                "{field}"
            );
            assert_eq!(
                guard_error(|a| *slot(a) = Some(MAX_MEMORY_KIB + 1)),
                format!("events[0].{field}")
            );
        }
        assert_eq!(
            guard_error(|a| a.detail = "x".repeat(MAX_GUARD_DETAIL_BYTES)),
            "accepted"
        );
        assert_eq!(
            guard_error(|a| a.detail = "x".repeat(MAX_GUARD_DETAIL_BYTES + 1)),
            "events[0].detail"
        );
        assert_eq!(
            guard_error(|a| a.vm.uuid = "<script>".into()),
            "events[0].vm.uuid"
        );
        assert_eq!(
            guard_error(|a| a.vm.name = "x".repeat(600)),
            "events[0].vm.name"
        );
    }

    #[test]
    fn guest_figures_beyond_any_machine_become_missing_on_the_agent() {
        let text = "Out of memory: Killed process 113 (hog) total-vm:9007199254740992kB, \
                    anon-rss:204800kB, file-rss:0kB, shmem-rss:0kB\n";
        let parsed = ballast_oom::parse(text.as_bytes());
        let report = parsed.reports.first().expect("a report");
        let wire = crate::ParsedReport::from(report);
        let killed = wire.killed.expect("the kill line");
        assert_eq!(killed.total_vm_kb, None, "2^53 KiB is no machine's memory");
        assert_eq!(killed.anon_rss_kb, Some(204_800));
    }
}
