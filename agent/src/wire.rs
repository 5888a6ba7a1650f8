//! The agent's own values as the wire (`ballast_model`) names them: a VM's identity
//! and a host time. Pure conversions, shared by `fleet`, `enrich`, `run`, `spool` and
//! `sink`, so none of them imports another for them.

use std::time::{SystemTime, UNIX_EPOCH};

use ballast_model::VmRef;

use crate::hypervisor::DomainId;

/// A VM's identity as the wire names it.
pub fn vm_ref(id: &DomainId) -> VmRef {
    VmRef {
        uuid: id.uuid.clone(),
        name: id.name.clone(),
    }
}

/// Unix epoch milliseconds of a host time.
pub fn epoch_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
