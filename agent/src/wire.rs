//! The agent's own values as the wire (`ballast_model`) names them: a VM's identity,
//! a host time and the host's memory. Pure conversions, shared by `fleet`, `enrich`,
//! `run`, `spool` and `sink`, so none of them imports another for them.

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

/// The host's memory reading as the wire names it.
pub fn wire_host(host: &crate::hostmem::HostMemory) -> ballast_model::HostMemory {
    ballast_model::HostMemory {
        total_kib: host.total_kib,
        available_kib: host.available_kib,
        psi_some_avg10: host.psi_some_avg10,
        ksm_sharing_kib: host.ksm_sharing_kib,
    }
}
