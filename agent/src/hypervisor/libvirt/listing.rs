//! Which domains a bulk stats call left out that the previous one listed.
//!
//! `virConnectGetAllDomainStats` is the agent's only view of which VMs run; a VM
//! missing from it is taken for gone (its capture state forgotten). Once, under heavy
//! load right after a `virsh reset`, libvirt stopped listing a running domain (see
//! RELIABILITY.md), so the backend asks about each one that went missing before
//! letting it go: a domain that is still active stays, without figures.

use super::DomainId;
use crate::hypervisor::BalloonSample;

/// The domains of `previous` that `listed` does not have (by uuid), in `previous`'s order.
pub fn missing_from(previous: &[DomainId], listed: &[(DomainId, BalloonSample)]) -> Vec<DomainId> {
    if previous.is_empty() {
        return Vec::new();
    }
    let listed: std::collections::BTreeSet<&str> =
        listed.iter().map(|(id, _)| id.uuid.as_str()).collect();
    previous
        .iter()
        .filter(|id| !listed.contains(id.uuid.as_str()))
        .cloned()
        .collect()
}

/// `listed` plus each of `missing` that `still_active` confirms, with an empty sample
/// (every figure unknown, which the fleet shows as stale, never as 0).
pub fn keep_active(
    mut listed: Vec<(DomainId, BalloonSample)>,
    missing: Vec<DomainId>,
    mut still_active: impl FnMut(&DomainId) -> bool,
) -> Vec<(DomainId, BalloonSample)> {
    for id in missing {
        if still_active(&id) {
            tracing::debug!(domain = %id.uuid, name = %id.name, "Active but left out of libvirt's bulk stats: kept without figures.");
            listed.push((id, BalloonSample::default()));
        }
    }
    listed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> DomainId {
        DomainId {
            uuid: format!("00000000-0000-4000-8000-0000000000{n:02}"),
            name: format!("vm{n}"),
        }
    }

    fn sample(actual_kib: u64) -> BalloonSample {
        BalloonSample {
            actual_kib: Some(actual_kib),
            ..BalloonSample::default()
        }
    }

    #[test]
    fn only_domains_listed_before_and_not_now_are_missing() {
        let previous = [id(1), id(2), id(3)];
        let listed = vec![(id(3), sample(1)), (id(4), sample(2))];
        assert_eq!(missing_from(&previous, &listed), vec![id(1), id(2)]);
        assert!(missing_from(&[], &listed).is_empty());
        assert!(missing_from(&previous[2..], &listed).is_empty());
    }

    #[test]
    fn a_missing_domain_that_still_runs_stays_without_figures_and_a_gone_one_goes() {
        let listed = vec![(id(1), sample(1024))];
        let mut asked = Vec::new();
        let kept = keep_active(listed, vec![id(2), id(3)], |domain| {
            asked.push(domain.name.clone());
            domain.name == "vm2"
        });
        assert_eq!(asked, ["vm2", "vm3"]);
        assert_eq!(
            kept,
            vec![(id(1), sample(1024)), (id(2), BalloonSample::default())]
        );
    }
}
