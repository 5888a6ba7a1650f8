//! A replay of Proxmox VE's automatic ballooning over recorded series: an
//! APPROXIMATION of what `pvestatd` would have done, to show which inflations the
//! algorithm makes on this fleet's real load and which of them came before OOMs.
//!
//! The algorithm (pve-manager `PVE/AutoBalloon.pm` `compute_alg1`, driven by
//! `pvestatd` every 10 s), in KiB here:
//! 1. goal = host total × target (default 80 %) − host used. A goal inside the
//!    dead-band (±10 MiB) changes nothing.
//! 2. goal > 0 (the host has room): grow balloons, VMs under memory pressure first
//!    (free memory ≤ 5 % of used, or the balloon below its floor); goal < 0: shrink,
//!    VMs with free memory first; when the first group makes no progress, all VMs.
//! 3. The goal is split by `shares` (default 1000): each VM's desired size is
//!    floor + (Σ(balloon − floor) + goal) / Σshares × shares, clamped to
//!    [floor, maximum], and each VM moves at most 100 MiB per cycle towards it.
//!
//! What makes it an approximation: our series are rollups (normally one minute;
//! we run `period / 10 s` cycles per period on the same recorded figures); host
//! "used" is total − MemAvailable where Proxmox uses its own meminfo sum; when the
//! replay's balloon differs from the recorded one, host used and the guest's free
//! memory are shifted by the difference, as if nothing else had changed.
//! VMs without a floor (`balloon:` unset or 0), without balloon figures, or with
//! `shares: 0` take no part, as in Proxmox.

use std::collections::BTreeMap;

use serde::Serialize;

/// The replay's tunables.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplaySettings {
    /// Proxmox's ballooning target, percent of host memory.
    pub target_pct: f64,
    /// Largest change of one balloon per cycle.
    pub max_step_kib: i64,
    /// Goals smaller than this do nothing.
    pub dead_band_kib: i64,
    /// `pvestatd`'s cycle.
    pub cycle_secs: i64,
    /// An inflation "precedes" an OOM that comes at most this long after it ended.
    pub oom_window_ms: i64,
}

impl Default for ReplaySettings {
    fn default() -> Self {
        Self {
            target_pct: 80.0,
            max_step_kib: 100 * 1024,
            dead_band_kib: 10 * 1024,
            cycle_secs: 10,
            oom_window_ms: 3_600_000,
        }
    }
}

/// One VM's state as the algorithm sees it in one cycle (KiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalloonState {
    /// The balloon's current size (QEMU `actual`).
    pub balloon_kib: i64,
    /// The configured floor (Proxmox `balloon:`).
    pub floor_kib: i64,
    /// The configured memory (Proxmox `memory:`).
    pub maximum_kib: i64,
    /// Guest free memory (MemFree).
    pub free_kib: i64,
    pub shares: i64,
}

/// One cycle of `compute_alg1`: the new balloon size of each VM (same order).
pub fn compute_cycle(vms: &[BalloonState], goal_kib: i64, settings: &ReplaySettings) -> Vec<i64> {
    let mut result: Vec<Option<i64>> = vec![None; vms.len()];
    let all: Vec<usize> = (0..vms.len())
        .filter(|&i| {
            let vm = &vms[i];
            vm.balloon_kib > 0 && vm.floor_kib > 0 && vm.free_kib <= vm.maximum_kib
        })
        .collect();
    let (pressure, roomy): (Vec<usize>, Vec<usize>) = all.iter().partition(|&&i| {
        let vm = &vms[i];
        let used = vm.balloon_kib - vm.free_kib;
        !(vm.free_kib > 0 && vm.free_kib * 20 > used && vm.balloon_kib >= vm.floor_kib)
    });
    if goal_kib > settings.dead_band_kib {
        let rest = change(vms, &mut result, &pressure, goal_kib, settings.max_step_kib);
        if rest >= goal_kib {
            change(vms, &mut result, &all, rest, settings.max_step_kib);
        }
    } else if goal_kib < -settings.dead_band_kib {
        let rest = change(vms, &mut result, &roomy, goal_kib, settings.max_step_kib);
        if rest <= goal_kib {
            change(vms, &mut result, &all, rest, settings.max_step_kib);
        }
    }
    vms.iter()
        .zip(result)
        .map(|(vm, new)| new.unwrap_or(vm.balloon_kib))
        .collect()
}

/// `$change_func`: spreads `bytes` over `ids` by shares; returns what is left.
fn change(
    vms: &[BalloonState],
    result: &mut [Option<i64>],
    ids: &[usize],
    amount: i64,
    max_step: i64,
) -> i64 {
    let mut rest = amount;
    let mut done = vec![false; vms.len()];
    let mut repeat = true;
    let mut progress = 1;
    while rest != 0 && repeat && progress != 0 {
        repeat = false;
        progress = 0;
        let mut shares_total = 0i64;
        let mut alloc_old = 0i64;
        for &i in ids.iter().filter(|&&i| !done[i]) {
            let vm = &vms[i];
            alloc_old += result[i].unwrap_or(vm.balloon_kib) - vm.floor_kib;
            shares_total += shares(vm);
        }
        if shares_total == 0 {
            break;
        }
        let alloc_new = alloc_old + rest;
        let mut changes = 0i64;
        for &i in ids {
            if done[i] {
                continue;
            }
            let vm = &vms[i];
            let mut desired = vm.floor_kib
                + ((alloc_new as f64 / shares_total as f64) * shares(vm) as f64) as i64;
            if desired > vm.maximum_kib {
                desired = vm.maximum_kib;
                repeat = true;
            } else if desired < vm.floor_kib {
                desired = vm.floor_kib;
                repeat = true;
            }
            let balloon = if amount > 0 && desired > vm.balloon_kib {
                (vm.balloon_kib + max_step).min(desired)
            } else if desired < vm.balloon_kib {
                (vm.balloon_kib - max_step).max(desired)
            } else {
                done[i] = true;
                continue;
            };
            let diff = balloon - vm.balloon_kib;
            if diff != 0 {
                let old = result[i].unwrap_or(vm.balloon_kib);
                result[i] = Some(balloon);
                let delta = balloon - old;
                if delta != 0 {
                    changes += delta;
                    progress += diff.abs();
                    repeat = true;
                }
            }
        }
        rest -= changes;
    }
    rest
}

/// An agent-sent memory figure as the replay computes with it: bounded to a machine's
/// memory ([`ballast_model::MAX_MEMORY_KIB`], 2^42 KiB), so differences and sums over
/// up to 2^20 VMs stay far inside i64 whatever a store holds.
fn bounded_kib(kib: u64) -> i64 {
    i64::try_from(kib.min(ballast_model::MAX_MEMORY_KIB)).unwrap_or(0)
}

fn shares(vm: &BalloonState) -> i64 {
    if vm.shares > 0 {
        vm.shares
    } else {
        1000
    }
}

/// A recorded VM for the replay.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayVm {
    pub uuid: String,
    pub name: String,
    pub floor_kib: u64,
    pub maximum_kib: u64,
    /// Proxmox `shares`; 0 excludes the VM (Proxmox: no auto-ballooning).
    pub shares: u32,
    /// Recorded points, oldest first.
    pub series: Vec<ReplayPoint>,
    /// This VM's OOMs (Unix ms).
    pub oom_times_ms: Vec<i64>,
}

/// One recorded period of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayPoint {
    pub at_ms: i64,
    pub period_secs: i64,
    pub actual_kib: u64,
    /// Guest MemFree, when the guest reports it.
    pub free_kib: Option<u64>,
}

/// One recorded period of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPoint {
    pub at_ms: i64,
    pub total_kib: u64,
    pub available_kib: u64,
}

/// An inflation the replayed algorithm made: one run of consecutive shrinking cycles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inflation {
    pub vm_uuid: String,
    pub vm_name: String,
    pub started_ms: i64,
    pub ended_ms: i64,
    pub from_kib: u64,
    pub to_kib: u64,
    /// OOMs of this VM from the start of the inflation to `oom_window` after its end.
    pub ooms_after_ms: Vec<i64>,
}

/// The replay of one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostReplay {
    pub host: String,
    pub cycles: usize,
    pub vms: usize,
    pub inflations: Vec<Inflation>,
}

/// Replays the algorithm over one host's recorded series.
pub fn replay(
    host: &str,
    host_series: &[HostPoint],
    vms: &[ReplayVm],
    settings: &ReplaySettings,
) -> HostReplay {
    let vms: Vec<&ReplayVm> = vms
        .iter()
        .filter(|vm| vm.floor_kib > 0 && vm.shares > 0 && !vm.series.is_empty())
        .collect();
    let mut report = HostReplay {
        host: host.to_string(),
        vms: vms.len(),
        ..HostReplay::default()
    };
    if vms.is_empty() {
        return report;
    }
    let indexed: Vec<BTreeMap<i64, ReplayPoint>> = vms
        .iter()
        .map(|vm| vm.series.iter().map(|p| (p.at_ms, *p)).collect())
        .collect();
    let mut simulated: Vec<Option<i64>> = vec![None; vms.len()];
    let mut open: Vec<Option<Inflation>> = vec![None; vms.len()];
    let mut finished: Vec<Inflation> = Vec::new();
    let cycle_ms = settings.cycle_secs.max(1).saturating_mul(1000);
    for host_point in host_series {
        // Each VM's newest recorded point at or before this host point.
        let recorded: Vec<Option<ReplayPoint>> = indexed
            .iter()
            .map(|series| {
                series
                    .range(..=host_point.at_ms)
                    .next_back()
                    .map(|(_, p)| *p)
            })
            .collect();
        let period_secs = recorded
            .iter()
            .flatten()
            .map(|p| p.period_secs)
            .max()
            .unwrap_or(60)
            .max(settings.cycle_secs);
        let n_cycles = (period_secs / settings.cycle_secs.max(1)).clamp(1, 60);
        for cycle in 0..n_cycles {
            let at_ms = host_point
                .at_ms
                .saturating_add(cycle.saturating_mul(cycle_ms));
            let mut states = Vec::with_capacity(vms.len());
            let mut shift_total = 0i64;
            for (i, vm) in vms.iter().enumerate() {
                let Some(point) = recorded[i] else {
                    states.push(BalloonState {
                        balloon_kib: 0,
                        floor_kib: 0,
                        maximum_kib: 0,
                        free_kib: 0,
                        shares: 0,
                    });
                    continue;
                };
                let recorded_actual = bounded_kib(point.actual_kib);
                let balloon = *simulated[i].get_or_insert(recorded_actual);
                // The replay holds `recorded - balloon` more (or less) than reality did.
                let shift = recorded_actual - balloon;
                shift_total += shift;
                let free = point
                    .free_kib
                    .map(|free| bounded_kib(free) - shift)
                    .unwrap_or(0)
                    .max(0);
                states.push(BalloonState {
                    balloon_kib: balloon,
                    floor_kib: bounded_kib(vm.floor_kib),
                    maximum_kib: bounded_kib(vm.maximum_kib),
                    free_kib: free,
                    shares: i64::from(vm.shares),
                });
            }
            let total = bounded_kib(host_point.total_kib);
            let used = total - bounded_kib(host_point.available_kib) - shift_total;
            let goal = (total as f64 * settings.target_pct / 100.0) as i64 - used;
            let new = compute_cycle(&states, goal, settings);
            report.cycles += 1;
            for (i, vm) in vms.iter().enumerate() {
                let Some(old) = simulated[i] else {
                    continue;
                };
                let next = new[i];
                simulated[i] = Some(next);
                if next < old {
                    let entry = open[i].get_or_insert_with(|| Inflation {
                        vm_uuid: vm.uuid.clone(),
                        vm_name: vm.name.clone(),
                        started_ms: at_ms,
                        ended_ms: at_ms,
                        from_kib: u64::try_from(old).unwrap_or(0),
                        to_kib: 0,
                        ooms_after_ms: Vec::new(),
                    });
                    entry.ended_ms = at_ms;
                    entry.to_kib = u64::try_from(next).unwrap_or(0);
                } else if let Some(done) = open[i].take() {
                    finished.push(done);
                }
            }
        }
    }
    finished.extend(open.into_iter().flatten());
    for inflation in &mut finished {
        if let Some(vm) = vms.iter().find(|vm| vm.uuid == inflation.vm_uuid) {
            inflation.ooms_after_ms = vm
                .oom_times_ms
                .iter()
                .copied()
                .filter(|&t| {
                    t >= inflation.started_ms
                        && t <= inflation.ended_ms.saturating_add(settings.oom_window_ms)
                })
                .collect();
        }
    }
    finished.sort_by(|a, b| (a.started_ms, &a.vm_uuid).cmp(&(b.started_ms, &b.vm_uuid)));
    report.inflations = finished;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: i64 = 1024;

    fn vm(balloon: i64, floor: i64, maximum: i64, free: i64, shares: i64) -> BalloonState {
        BalloonState {
            balloon_kib: balloon * MIB,
            floor_kib: floor * MIB,
            maximum_kib: maximum * MIB,
            free_kib: free * MIB,
            shares,
        }
    }

    #[test]
    fn a_small_goal_is_inside_the_dead_band() {
        let vms = [vm(4096, 1024, 4096, 2048, 1000)];
        let settings = ReplaySettings::default();
        assert_eq!(compute_cycle(&vms, -10 * MIB, &settings), vec![4096 * MIB]);
        assert_eq!(compute_cycle(&vms, 10 * MIB, &settings), vec![4096 * MIB]);
    }

    #[test]
    fn shrinking_takes_at_most_100_mib_per_cycle_from_vms_with_free_memory_first() {
        // A has plenty free; B is under pressure (100 MiB free of ~4 GiB used).
        let vms = [
            vm(4096, 1024, 4096, 2048, 1000),
            vm(4096, 1024, 4096, 100, 1000),
        ];
        let settings = ReplaySettings::default();
        assert_eq!(
            compute_cycle(&vms, -150 * MIB, &settings),
            vec![3996 * MIB, 4096 * MIB]
        );
        // A goal the free VM alone cannot meet in one step goes to everyone.
        assert_eq!(
            compute_cycle(&vms, -1000 * MIB, &settings),
            vec![3996 * MIB, 4096 * MIB],
            "A moved, so B is not asked (rest > goal)"
        );
    }

    #[test]
    fn the_goal_is_split_by_shares_and_clamped_to_the_floor() {
        // Both roomy; 2000 shares vs 1000; 90 MiB to take back.
        let vms = [
            vm(2048, 1024, 2048, 1024, 2000),
            vm(2048, 1024, 2048, 1024, 1000),
        ];
        let settings = ReplaySettings::default();
        // Round 1: alloc_new = 2048 - 90 = 1958 MiB; A's desired 1024 + 1305 is
        // clamped to its maximum (no change), B's 1024 + 652 is 100 MiB away, so B
        // takes one full step (1948). Round 2 (B alone, 10 MiB over-taken): B's
        // desired is 1958 and it settles there, exactly 90 MiB down.
        let new = compute_cycle(&vms, -90 * MIB, &settings);
        assert_eq!(new, vec![2048 * MIB, 1958 * MIB]);
        // The floor holds.
        let low = [vm(1050, 1024, 2048, 900, 1000)];
        assert_eq!(compute_cycle(&low, -500 * MIB, &settings), vec![1024 * MIB]);
    }

    #[test]
    fn growing_gives_memory_back_to_vms_under_pressure_first() {
        let vms = [
            vm(1024, 1024, 4096, 10, 1000),
            vm(2048, 1024, 4096, 1500, 1000),
        ];
        let settings = ReplaySettings::default();
        assert_eq!(
            compute_cycle(&vms, 500 * MIB, &settings),
            vec![1124 * MIB, 2048 * MIB]
        );
    }

    #[test]
    fn the_replay_inflates_under_host_pressure_and_links_the_oom_after_it() {
        const GIB_KIB: u64 = 1024 * 1024;
        let t0 = 1_795_672_800_000i64;
        // Host 16 GiB with 2 GiB available (87.5 % used) for 3 minutes, then room.
        let host: Vec<HostPoint> = (0..5)
            .map(|minute| HostPoint {
                at_ms: t0 + minute * 60_000,
                total_kib: 16 * GIB_KIB,
                available_kib: if minute < 3 { 2 * GIB_KIB } else { 8 * GIB_KIB },
            })
            .collect();
        let series = (0..5)
            .map(|minute| ReplayPoint {
                at_ms: t0 + minute * 60_000,
                period_secs: 60,
                actual_kib: 4 * GIB_KIB,
                free_kib: Some(3 * GIB_KIB),
            })
            .collect();
        let vms = [ReplayVm {
            uuid: "u1".into(),
            name: "web".into(),
            floor_kib: GIB_KIB,
            maximum_kib: 4 * GIB_KIB,
            shares: 1000,
            series,
            oom_times_ms: vec![t0 + 200_000, t0 + 9_000_000],
        }];
        let result = replay("pve1", &host, &vms, &ReplaySettings::default());
        assert_eq!(result.cycles, 30);
        // Goal: 80 % of 16 GiB (13421772 KiB, truncated) - 14 GiB used = -1258292 KiB.
        // 12 full 100 MiB cycles, then a 13th of the remaining 29492 KiB; minute 2
        // holds cycle 13 (cycles run every 10 s from each minute's start).
        assert_eq!(result.inflations.len(), 1, "{result:?}");
        let inflation = &result.inflations[0];
        assert_eq!(inflation.started_ms, t0);
        assert_eq!(inflation.from_kib, 4 * GIB_KIB);
        assert_eq!(inflation.to_kib, 4 * GIB_KIB - 1_258_292);
        assert_eq!(inflation.ended_ms, t0 + 120_000);
        assert_eq!(inflation.ooms_after_ms, vec![t0 + 200_000]);
    }

    #[test]
    fn extreme_agent_sent_figures_and_times_replay_without_overflow() {
        // Stored figures come from agents: a store written before sizes were bounded
        // (or a forged batch) may hold u64::MAX KiB and times at the ends of i64.
        let extremes_kib = [0, 1, u64::MAX / 2, u64::MAX];
        let extremes_ms = [i64::MIN, -1, 0, i64::MAX - 1, i64::MAX];
        for &kib in &extremes_kib {
            for &at_ms in &extremes_ms {
                let host = [
                    HostPoint {
                        at_ms,
                        total_kib: kib,
                        available_kib: u64::MAX - kib,
                    },
                    HostPoint {
                        at_ms: i64::MAX,
                        total_kib: u64::MAX,
                        available_kib: 0,
                    },
                ];
                let vms: Vec<ReplayVm> = (0..3)
                    .map(|n| ReplayVm {
                        uuid: format!("u{n}"),
                        name: "vm".into(),
                        floor_kib: kib,
                        maximum_kib: u64::MAX,
                        shares: 1000,
                        series: vec![ReplayPoint {
                            at_ms,
                            period_secs: i64::MAX,
                            actual_kib: u64::MAX - kib,
                            free_kib: Some(kib),
                        }],
                        oom_times_ms: vec![at_ms, i64::MAX],
                    })
                    .collect();
                let result = replay("pve1", &host, &vms, &ReplaySettings::default());
                // No overflow panic (tests build with overflow checks), and what comes
                // out still reads as inflations: shrinking, forward in time.
                for inflation in &result.inflations {
                    assert!(inflation.to_kib <= inflation.from_kib, "{result:?}");
                    assert!(inflation.started_ms <= inflation.ended_ms, "{result:?}");
                }
            }
        }
    }
}
