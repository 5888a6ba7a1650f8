//! Checks a batch field by field before anything of it is stored: sizes, ranges,
//! enums. The first bad field is reported with its JSON path.

use crate::events::{Batch, Event};
use crate::SCHEMA_VERSION;

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

/// Checks a whole batch.
pub fn validate(batch: &Batch, limits: &Limits) -> Result<(), FieldError> {
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
        validate_event(&path, &envelope.event, limits)?;
    }
    Ok(())
}

fn validate_event(path: &str, event: &Event, limits: &Limits) -> Result<(), FieldError> {
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
                    &vm.state,
                    &["running", "paused", "shut_off", "crashed", "other"],
                )?;
                if vm.findings.len() > limits.max_list_items {
                    return Err(fail(format!("{vm_path}.findings"), "too many items"));
                }
            }
        }
        Event::Rollup(rollup) => {
            check_uuid(&format!("{path}.vm.uuid"), &rollup.vm.uuid)?;
            check_len(&format!("{path}.vm.name"), &rollup.vm.name, name)?;
            if rollup.period_secs == 0 || rollup.period_secs > 86_400 {
                return Err(fail(format!("{path}.period_secs"), "must be 1 to 86400"));
            }
        }
        Event::BalloonChange(change) => {
            check_uuid(&format!("{path}.vm.uuid"), &change.vm.uuid)?;
            check_len(&format!("{path}.vm.name"), &change.vm.name, name)?;
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
                &format!("{path}.analysis.verdict"),
                &oom.analysis.verdict,
                &[
                    "balloon",
                    "kernel_unaccounted",
                    "memcg_limit",
                    "fragmentation",
                    "lowmem_zone",
                    "overcommit",
                    "no_killable",
                    "unknown",
                ],
            )?;
            check_one_of(
                &format!("{path}.report.kind"),
                &oom.report.kind,
                &["global", "memcg", "cpuset", "mempolicy", "panic"],
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
        }
        Event::NearMiss(miss) => {
            check_uuid(&format!("{path}.vm.uuid"), &miss.vm.uuid)?;
            check_one_of(
                &format!("{path}.kind"),
                &miss.kind,
                &["out_of_puff", "silent_deflate", "usable_low"],
            )?;
            check_len(&format!("{path}.detail"), &miss.detail, 4096)?;
        }
        Event::Health(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{BalloonChange, Envelope, VmRef};

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
        assert_eq!(validate(&good, &Limits::default()), Ok(()));
    }

    #[test]
    fn bad_fields_are_named_by_path() {
        let bad = batch(vec![
            change("3f2a0c1e-0000-4000-8000-000000000001"),
            change("<script>"),
        ]);
        let error = validate(&bad, &Limits::default()).expect_err("bad uuid");
        assert_eq!(error.path, "events[1].vm.uuid");
        let mut future = batch(Vec::new());
        future.schema_version = SCHEMA_VERSION + 1;
        assert_eq!(
            validate(&future, &Limits::default()).map_err(|e| e.path),
            Err("schema_version".into())
        );
        let mut seconds = batch(vec![change("3f2a")]);
        seconds.events[0].captured_at_ms = 1_795_658_493;
        assert_eq!(
            validate(&seconds, &Limits::default()).map_err(|e| e.path),
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
}
