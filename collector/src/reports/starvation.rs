//! The starvation finding of the balloon-policy report (issue 19): a VM held at its
//! balloon floor with sustained allocation stalls or memory PSI but no OOM in that
//! time. Host-driven auto-ballooning never leaves that state (it steps every VM
//! towards its floor while the host is busy and reads no guest distress), so the
//! guest thrashes instead of being killed, and no OOM report ever names it.
//!
//! Pure: [`find`] takes a VM's pressure episodes (`reports::load` reads them from
//! `pressure_episodes`) and OOM times, and returns the finding with its evidence and
//! the floor that would have ended it: the floor the balloon sat at plus the
//! deficit the agent estimated, rounded up to the report's step, capped at the VM's
//! memory.

use serde::Serialize;

use crate::reports::format::round_up;

/// What counts as starvation.
#[derive(Debug, Clone, PartialEq)]
pub struct StarvationSettings {
    /// An episode lasts at least this long (host time; an open episode until its
    /// last phase) ...
    pub min_secs: u64,
    /// ... with allocation stalls at least this high (per second) ...
    pub min_alloc_stalls_per_s: f64,
    /// ... or memory PSI `some avg10` at least this high (percent).
    pub min_psi_some: f64,
}

impl Default for StarvationSettings {
    fn default() -> Self {
        Self {
            min_secs: 180,
            min_alloc_stalls_per_s: 1.0,
            min_psi_some: 10.0,
        }
    }
}

/// One stored pressure episode of a VM, as the report reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeFact {
    pub started_at_ms: i64,
    pub last_at_ms: i64,
    /// None while the episode is open.
    pub ended_at_ms: Option<i64>,
    /// Some phase found the balloon at its floor.
    pub at_balloon_floor: bool,
    pub balloon_floor_kib: Option<u64>,
    /// The largest deficit any phase estimated.
    pub deficit_kib: Option<u64>,
    pub peak_alloc_stalls_per_s: Option<f64>,
    pub peak_psi_some_avg10: Option<f64>,
    pub peak_psi_full_avg10: Option<f64>,
}

impl EpisodeFact {
    fn end_ms(&self) -> i64 {
        self.ended_at_ms.unwrap_or(self.last_at_ms)
    }

    fn secs(&self) -> u64 {
        u64::try_from(self.end_ms().saturating_sub(self.started_at_ms) / 1000).unwrap_or(0)
    }
}

/// One episode that counts as starvation: the evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StarvedEpisode {
    pub started_at_ms: i64,
    /// How long it lasted (or has lasted so far, when `open`).
    pub secs: u64,
    pub open: bool,
    pub floor_kib: Option<u64>,
    pub deficit_kib: Option<u64>,
    pub peak_alloc_stalls_per_s: Option<f64>,
    pub peak_psi_some_avg10: Option<f64>,
    pub peak_psi_full_avg10: Option<f64>,
}

/// A VM starved at its balloon floor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Starvation {
    /// The episodes that count, oldest first.
    pub episodes: Vec<StarvedEpisode>,
    /// Their total and longest duration (seconds).
    pub total_secs: u64,
    pub longest_secs: u64,
    /// The highest signals of any of them.
    pub peak_alloc_stalls_per_s: Option<f64>,
    pub peak_psi_some_avg10: Option<f64>,
    pub peak_psi_full_avg10: Option<f64>,
    /// The floor the balloon was held at (the episodes' highest, else the VM's
    /// configured floor).
    pub floor_kib: Option<u64>,
    /// The floor that would have ended them: the largest floor + deficit of any
    /// episode, rounded up, capped at the VM's memory; None without a deficit
    /// estimate or a floor.
    pub floor_to_end_kib: Option<u64>,
    /// That floor is the VM's whole memory: only no ballooning would have ended it.
    pub needs_all_memory: bool,
}

fn max_f64(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    values.flatten().fold(None, |kept, value| {
        Some(kept.map_or(value, |kept: f64| kept.max(value)))
    })
}

/// The starvation finding of one VM: its episodes at the balloon floor that lasted at
/// least `min_secs` with stalls or PSI over the thresholds and no OOM of the VM
/// between their start and end; None when there is none. `configured_floor_kib` is
/// the VM's floor from its inventory, used when an episode did not carry one.
pub fn find(
    episodes: &[EpisodeFact],
    oom_times_ms: &[i64],
    configured_floor_kib: Option<u64>,
    memory_kib: Option<u64>,
    round_kib: u64,
    settings: &StarvationSettings,
) -> Option<Starvation> {
    let mut starved: Vec<&EpisodeFact> = episodes
        .iter()
        .filter(|episode| episode.at_balloon_floor)
        .filter(|episode| episode.secs() >= settings.min_secs)
        .filter(|episode| {
            episode
                .peak_alloc_stalls_per_s
                .is_some_and(|stalls| stalls >= settings.min_alloc_stalls_per_s)
                || episode
                    .peak_psi_some_avg10
                    .is_some_and(|psi| psi >= settings.min_psi_some)
        })
        .filter(|episode| {
            !oom_times_ms
                .iter()
                .any(|at| (episode.started_at_ms..=episode.end_ms()).contains(at))
        })
        .collect();
    if starved.is_empty() {
        return None;
    }
    starved.sort_by_key(|episode| episode.started_at_ms);
    let floor_of = |episode: &EpisodeFact| episode.balloon_floor_kib.or(configured_floor_kib);
    let wanted = starved
        .iter()
        .filter_map(|episode| Some(floor_of(episode)?.saturating_add(episode.deficit_kib?)))
        .max();
    let floor_to_end_kib = wanted.map(|wanted| {
        let rounded = round_up(wanted, round_kib);
        memory_kib.map_or(rounded, |memory| rounded.min(memory))
    });
    let needs_all_memory = matches!(
        (floor_to_end_kib, memory_kib),
        (Some(floor), Some(memory)) if floor >= memory
    );
    Some(Starvation {
        total_secs: starved.iter().map(|episode| episode.secs()).sum(),
        longest_secs: starved
            .iter()
            .map(|episode| episode.secs())
            .max()
            .unwrap_or(0),
        peak_alloc_stalls_per_s: max_f64(starved.iter().map(|e| e.peak_alloc_stalls_per_s)),
        peak_psi_some_avg10: max_f64(starved.iter().map(|e| e.peak_psi_some_avg10)),
        peak_psi_full_avg10: max_f64(starved.iter().map(|e| e.peak_psi_full_avg10)),
        floor_kib: starved.iter().filter_map(|episode| floor_of(episode)).max(),
        floor_to_end_kib,
        needs_all_memory,
        episodes: starved
            .iter()
            .map(|episode| StarvedEpisode {
                started_at_ms: episode.started_at_ms,
                secs: episode.secs(),
                open: episode.ended_at_ms.is_none(),
                floor_kib: floor_of(episode),
                deficit_kib: episode.deficit_kib,
                peak_alloc_stalls_per_s: episode.peak_alloc_stalls_per_s,
                peak_psi_some_avg10: episode.peak_psi_some_avg10,
                peak_psi_full_avg10: episode.peak_psi_full_avg10,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024;
    const MINUTE: i64 = 60_000;

    /// An episode at the 1 GiB floor from `start` lasting `minutes`, stalling at
    /// `stalls`/s, short of `deficit` MiB.
    fn at_floor(start: i64, minutes: i64, stalls: f64, deficit: u64) -> EpisodeFact {
        EpisodeFact {
            started_at_ms: start,
            last_at_ms: start + minutes * MINUTE,
            ended_at_ms: Some(start + minutes * MINUTE),
            at_balloon_floor: true,
            balloon_floor_kib: Some(1024 * MIB),
            deficit_kib: Some(deficit * MIB),
            peak_alloc_stalls_per_s: Some(stalls),
            peak_psi_some_avg10: None,
            peak_psi_full_avg10: None,
        }
    }

    fn find_default(episodes: &[EpisodeFact], ooms: &[i64]) -> Option<Starvation> {
        find(
            episodes,
            ooms,
            Some(512 * MIB),
            Some(4096 * MIB),
            64 * MIB,
            &StarvationSettings::default(),
        )
    }

    #[test]
    fn a_vm_stalling_at_its_floor_without_an_oom_is_starved_with_the_floor_that_ends_it() {
        let episodes = [
            at_floor(0, 10, 25.0, 100),
            at_floor(30 * MINUTE, 45, 8.0, 300),
        ];
        let found = find_default(&episodes, &[]).expect("starvation");
        assert_eq!(found.episodes.len(), 2);
        assert_eq!((found.total_secs, found.longest_secs), (55 * 60, 45 * 60));
        assert_eq!(found.peak_alloc_stalls_per_s, Some(25.0));
        assert_eq!(found.floor_kib, Some(1024 * MIB));
        // 1024 + 300 MiB = 1324 MiB, rounded up to 64 MiB: 1344 MiB.
        assert_eq!(found.floor_to_end_kib, Some(1344 * MIB));
        assert!(!found.needs_all_memory);
    }

    #[test]
    fn an_episode_with_an_oom_short_weak_or_above_the_floor_is_not_starvation() {
        let with_oom = at_floor(0, 10, 25.0, 100);
        assert_eq!(
            find_default(&[with_oom], &[5 * MINUTE]),
            None,
            "an OOM ended it"
        );
        assert!(
            find_default(&[at_floor(0, 10, 25.0, 100)], &[11 * MINUTE]).is_some(),
            "an OOM after the episode does not"
        );
        assert_eq!(
            find_default(&[at_floor(0, 2, 25.0, 100)], &[]),
            None,
            "2 min is not sustained"
        );
        assert_eq!(
            find_default(&[at_floor(0, 10, 0.2, 100)], &[]),
            None,
            "no real stalls"
        );
        let mut free = at_floor(0, 10, 25.0, 100);
        free.at_balloon_floor = false;
        assert_eq!(find_default(&[free], &[]), None, "not held at the floor");
        let mut psi = at_floor(0, 10, 0.0, 100);
        psi.peak_psi_some_avg10 = Some(42.0);
        assert!(find_default(&[psi], &[]).is_some(), "PSI alone suffices");
    }

    #[test]
    fn an_open_episode_counts_until_its_last_phase_and_the_floor_falls_back_to_the_config() {
        let mut open = at_floor(0, 10, 25.0, 4000);
        open.ended_at_ms = None;
        open.last_at_ms = 20 * MINUTE;
        open.balloon_floor_kib = None;
        let found = find_default(&[open], &[]).expect("starvation");
        assert!(found.episodes[0].open);
        assert_eq!(found.longest_secs, 20 * 60);
        assert_eq!(found.floor_kib, Some(512 * MIB), "the configured floor");
        assert_eq!(found.floor_to_end_kib, Some(4096 * MIB), "capped at memory");
        assert!(found.needs_all_memory);
        let mut unknown = at_floor(0, 10, 25.0, 1);
        unknown.deficit_kib = None;
        assert_eq!(
            find_default(&[unknown], &[]).map(|found| found.floor_to_end_kib),
            Some(None),
            "no deficit estimate: no floor claimed"
        );
    }
}
