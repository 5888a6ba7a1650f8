//! Pressure episodes of one VM, pure: from risk leaving `ok` until it is back and
//! stays, as start, peak and end events ([`ballast_model::PressureEpisode`]).
//!
//! Hysteresis: an episode starts on the first poll assessed above `ok` (the risk model
//! already asks two polls in a row), ends after [`END_AFTER_CALM_POLLS`] calm polls in a
//! row (its time is the first of them) or when the VM goes away. A peak is reported
//! when the level rises above the episode's worst so far, or when the predicted
//! exhaustion comes at least twice as near as last reported, at most once per
//! [`PEAK_EVERY_POLLS`] polls and [`PEAKS_PER_EPISODE`] times per episode. A hostile
//! guest flapping its figures gets at most [`EVENTS_PER_HOUR`] events per hour: an
//! episode starting beyond that is followed silently, its events counted as suppressed;
//! an episode whose start was sent always gets its end.

use std::time::{Duration, SystemTime};

use ballast_model::{
    EpisodePhase, PressureEpisode, PressureSignal, PressureSnapshot, RiskLevel, VmRef,
};

use super::risk::{rank, Assessment};
use crate::wire::epoch_ms;

/// Calm polls in a row that end an episode.
pub const END_AFTER_CALM_POLLS: u32 = 3;
/// Polls between two peaks of nearer exhaustion.
pub const PEAK_EVERY_POLLS: u32 = 6;
/// Peaks one episode reports at most.
pub const PEAKS_PER_EPISODE: u32 = 8;
/// Events one VM sends per hour at most (ends of started episodes excepted).
pub const EVENTS_PER_HOUR: u32 = 24;
/// Proxmox's auto-ballooning moves a balloon at most this much per cycle: a balloon
/// within one step of its floor sits at it.
pub const AUTO_BALLOON_STEP_KIB: u64 = 100 * 1024;
/// A new exhaustion prediction is a peak when it is at most this share of the last.
const NEARER_SHARE: f64 = 0.5;
const HOUR: Duration = Duration::from_secs(3600);

/// One poll of one VM, as the tracker reads it.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub at: SystemTime,
    pub assessment: &'a Assessment,
    pub signals: &'a PressureSnapshot,
    pub actual_kib: Option<u64>,
    pub maximum_kib: Option<u64>,
    /// The lowest the host's balloon policy may take the VM (its configuration).
    pub floor_kib: Option<u64>,
}

impl Observation<'_> {
    fn at_floor(&self) -> bool {
        match (self.actual_kib, self.floor_kib) {
            (Some(actual), Some(floor)) => actual <= floor.saturating_add(AUTO_BALLOON_STEP_KIB),
            _ => false,
        }
    }
}

/// The episode under way.
#[derive(Debug, Clone)]
struct Open {
    started_at_ms: i64,
    worst: RiskLevel,
    worst_drivers: Vec<PressureSignal>,
    /// The nearest exhaustion reported so far.
    reported_exhaustion: Option<u64>,
    largest_deficit: Option<u64>,
    peaks: u32,
    polls_since_event: u32,
    calm_polls: u32,
    /// The first calm poll of the current calm run: the end's moment and figures.
    first_calm: Option<CalmPoll>,
    /// Its start was over the hourly budget: nothing of it is sent.
    muted: bool,
}

#[derive(Debug, Clone, Copy)]
struct CalmPoll {
    at_ms: i64,
    signals: PressureSnapshot,
    actual_kib: Option<u64>,
    maximum_kib: Option<u64>,
    floor_kib: Option<u64>,
    at_floor: bool,
}

/// One VM's episodes.
#[derive(Debug, Clone, Default)]
pub struct EpisodeTracker {
    open: Option<Open>,
    hour_start: Option<SystemTime>,
    hour_events: u32,
    started: u64,
    suppressed: u64,
}

impl EpisodeTracker {
    /// Reads one poll; the event it makes, if any.
    pub fn observe(&mut self, vm: &VmRef, obs: &Observation<'_>) -> Option<PressureEpisode> {
        let level = obs.assessment.level;
        let Some(open) = self.open.as_mut() else {
            if level == RiskLevel::Ok {
                return None;
            }
            let muted = !self.take_budget(obs.at);
            self.open = Some(Open {
                started_at_ms: epoch_ms(obs.at),
                worst: level,
                worst_drivers: obs.assessment.drivers.clone(),
                reported_exhaustion: obs.assessment.exhaustion_secs,
                largest_deficit: obs.assessment.deficit_kib,
                peaks: 0,
                polls_since_event: 0,
                calm_polls: 0,
                first_calm: None,
                muted,
            });
            if muted {
                self.suppressed += 1;
                return None;
            }
            self.started += 1;
            return self.event(vm, EpisodePhase::Start, obs);
        };
        open.polls_since_event = open.polls_since_event.saturating_add(1);
        if level == RiskLevel::Ok {
            open.calm_polls += 1;
            if open.first_calm.is_none() {
                open.first_calm = Some(CalmPoll {
                    at_ms: epoch_ms(obs.at).max(open.started_at_ms),
                    signals: obs.signals.bounded(),
                    actual_kib: obs.actual_kib,
                    maximum_kib: obs.maximum_kib,
                    floor_kib: obs.floor_kib,
                    at_floor: obs.at_floor(),
                });
            }
            if open.calm_polls >= END_AFTER_CALM_POLLS {
                return self.end(vm, obs.at);
            }
            return None;
        }
        open.calm_polls = 0;
        open.first_calm = None;
        open.largest_deficit = open.largest_deficit.max(obs.assessment.deficit_kib);
        let rose = rank(level) > rank(open.worst);
        if rose {
            open.worst = level;
            open.worst_drivers.clone_from(&obs.assessment.drivers);
        }
        let nearer = match (obs.assessment.exhaustion_secs, open.reported_exhaustion) {
            (Some(now), Some(reported)) => (now as f64) <= reported as f64 * NEARER_SHARE,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let spaced = open.polls_since_event >= PEAK_EVERY_POLLS;
        if !(rose || (nearer && spaced)) || open.peaks >= PEAKS_PER_EPISODE {
            return None;
        }
        let muted = open.muted;
        open.peaks += 1;
        open.polls_since_event = 0;
        open.reported_exhaustion = obs.assessment.exhaustion_secs.or(open.reported_exhaustion);
        if muted || !self.take_budget(obs.at) {
            self.suppressed += 1;
            return None;
        }
        self.event(vm, EpisodePhase::Peak, obs)
    }

    /// The VM went away (shut down, migrated, destroyed): the episode under way ends.
    pub fn vm_gone(&mut self, vm: &VmRef, at: SystemTime) -> Option<PressureEpisode> {
        self.end(vm, at)
    }

    /// The level of the episode under way (its worst), or None.
    pub fn current(&self) -> Option<RiskLevel> {
        self.open.as_ref().map(|open| open.worst)
    }

    /// When the episode under way started (Unix ms), or None.
    pub fn open_started_at_ms(&self) -> Option<i64> {
        self.open.as_ref().map(|open| open.started_at_ms)
    }

    /// Episodes whose start was sent.
    pub fn started(&self) -> u64 {
        self.started
    }

    /// Events not sent because the VM used up its hourly budget.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }

    /// Spends one event of the hour's budget; false when none is left.
    fn take_budget(&mut self, at: SystemTime) -> bool {
        let new_hour = self
            .hour_start
            .is_none_or(|start| at.duration_since(start).unwrap_or_default() >= HOUR || at < start);
        if new_hour {
            self.hour_start = Some(at);
            self.hour_events = 0;
        }
        if self.hour_events >= EVENTS_PER_HOUR {
            return false;
        }
        self.hour_events += 1;
        true
    }

    fn end(&mut self, vm: &VmRef, at: SystemTime) -> Option<PressureEpisode> {
        let open = self.open.take()?;
        if open.muted {
            self.suppressed += 1;
            return None;
        }
        // The end of a started episode is always sent (it counts against the budget).
        self.hour_events = self.hour_events.saturating_add(1);
        let calm = open.first_calm;
        Some(PressureEpisode {
            vm: vm.clone(),
            phase: EpisodePhase::End,
            started_at_ms: open.started_at_ms,
            at_ms: calm
                .map_or_else(|| epoch_ms(at), |c| c.at_ms)
                .max(open.started_at_ms),
            level: open.worst,
            drivers: open.worst_drivers,
            exhaustion_secs: None,
            signals: calm.map(|c| c.signals).unwrap_or_default(),
            actual_kib: calm.and_then(|c| c.actual_kib),
            maximum_kib: calm.and_then(|c| c.maximum_kib),
            balloon_floor_kib: calm.and_then(|c| c.floor_kib),
            at_balloon_floor: calm.is_some_and(|c| c.at_floor),
            deficit_kib: open.largest_deficit,
        })
    }

    fn event(
        &self,
        vm: &VmRef,
        phase: EpisodePhase,
        obs: &Observation<'_>,
    ) -> Option<PressureEpisode> {
        let open = self.open.as_ref()?;
        Some(PressureEpisode {
            vm: vm.clone(),
            phase,
            started_at_ms: open.started_at_ms,
            // A host clock stepping back never puts a phase before its start.
            at_ms: epoch_ms(obs.at).max(open.started_at_ms),
            level: obs.assessment.level,
            drivers: obs.assessment.drivers.clone(),
            exhaustion_secs: obs.assessment.exhaustion_secs,
            // What the collector accepts: a hostile figure is missing, not the event.
            signals: obs.signals.bounded(),
            actual_kib: obs.actual_kib,
            maximum_kib: obs.maximum_kib,
            balloon_floor_kib: obs.floor_kib,
            at_balloon_floor: obs.at_floor(),
            deficit_kib: obs.assessment.deficit_kib,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const MIB: u64 = 1024;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn vm() -> VmRef {
        VmRef {
            uuid: "00000000-0000-4000-8000-000000000001".into(),
            name: "vm1".into(),
        }
    }

    fn assessment(level: RiskLevel, exhaustion_secs: Option<u64>) -> Assessment {
        Assessment {
            level,
            raw_level: level,
            drivers: if level == RiskLevel::Ok {
                Vec::new()
            } else {
                vec![PressureSignal::AvailableFalling]
            },
            exhaustion_secs,
            deficit_kib: (level != RiskLevel::Ok).then_some(64 * MIB),
            shortfall_kib: None,
            sources: vec![ballast_model::SignalSource::BalloonStats],
        }
    }

    /// Feeds one level per 10 s poll; the events with the poll number they came at.
    fn feed(
        tracker: &mut EpisodeTracker,
        from: u64,
        polls: &[(RiskLevel, Option<u64>)],
    ) -> Vec<(u64, PressureEpisode)> {
        let signals = PressureSnapshot::default();
        let mut events = Vec::new();
        for (i, (level, exhaustion)) in polls.iter().enumerate() {
            let poll = from + i as u64;
            let assessment = assessment(*level, *exhaustion);
            let obs = Observation {
                at: at(poll * 10),
                assessment: &assessment,
                signals: &signals,
                actual_kib: Some(1024 * MIB),
                maximum_kib: Some(2048 * MIB),
                floor_kib: Some(950 * MIB),
            };
            if let Some(event) = tracker.observe(&vm(), &obs) {
                events.push((poll, event));
            }
        }
        events
    }

    use RiskLevel::{Critical as C, Elevated as E, Ok as O};

    #[test]
    fn an_episode_starts_peaks_when_it_worsens_and_ends_after_calm_polls() {
        let mut tracker = EpisodeTracker::default();
        let polls = [
            (O, None),
            (E, Some(500)),
            (E, Some(400)),
            (C, Some(50)),
            (E, Some(100)),
            (O, None),
            (E, None), // back before three calm polls: the same episode
            (O, None),
            (O, None),
            (O, None),
            (O, None),
        ];
        let events = feed(&mut tracker, 0, &polls);
        let phases: Vec<(u64, EpisodePhase, RiskLevel)> =
            events.iter().map(|(p, e)| (*p, e.phase, e.level)).collect();
        assert_eq!(
            phases,
            [
                (1, EpisodePhase::Start, E),
                (3, EpisodePhase::Peak, C),
                (9, EpisodePhase::End, C),
            ]
        );
        let start = &events[0].1;
        assert!(events
            .iter()
            .all(|(_, e)| e.started_at_ms == start.started_at_ms));
        assert_eq!(start.started_at_ms, epoch_ms(at(10)));
        let end = &events[2].1;
        assert_eq!(
            end.at_ms,
            epoch_ms(at(70)),
            "the first calm poll of the run"
        );
        assert_eq!(end.deficit_kib, Some(64 * MIB));
        assert_eq!(end.exhaustion_secs, None);
        assert_eq!(events[1].1.exhaustion_secs, Some(50));
        // 1024 MiB is within one 100 MiB step of the 950 MiB floor.
        assert!(start.at_balloon_floor);
        assert_eq!(start.balloon_floor_kib, Some(950 * MIB));
        assert_eq!(start.maximum_kib, Some(2048 * MIB));
        assert_eq!(tracker.current(), None);
        assert_eq!(tracker.started(), 1);
    }

    #[test]
    fn nearer_exhaustion_peaks_are_spaced_and_capped() {
        let mut tracker = EpisodeTracker::default();
        // Elevated for 200 polls, exhaustion halving every poll: a peak at most every
        // PEAK_EVERY_POLLS polls and PEAKS_PER_EPISODE in all.
        let polls: Vec<_> = (0..200u32)
            .map(|i| (E, Some(u64::MAX >> (i % 60))))
            .collect();
        let events = feed(&mut tracker, 0, &polls);
        let peaks: Vec<u64> = events
            .iter()
            .filter(|(_, e)| e.phase == EpisodePhase::Peak)
            .map(|(p, _)| *p)
            .collect();
        assert_eq!(peaks.len(), PEAKS_PER_EPISODE as usize, "{peaks:?}");
        assert!(peaks
            .windows(2)
            .all(|w| w[1] - w[0] >= u64::from(PEAK_EVERY_POLLS)));
        // Exhaustion not coming nearer (steady) makes no peak.
        let mut tracker = EpisodeTracker::default();
        let steady: Vec<_> = (0..50).map(|_| (E, Some(300))).collect();
        assert_eq!(feed(&mut tracker, 0, &steady).len(), 1);
    }

    #[test]
    fn at_the_floor_means_within_one_auto_ballooning_step_of_it() {
        let assessment = assessment(E, None);
        let signals = PressureSnapshot::default();
        let obs = |actual: Option<u64>, floor: Option<u64>| Observation {
            at: at(0),
            assessment: &assessment,
            signals: &signals,
            actual_kib: actual,
            maximum_kib: Some(2048 * MIB),
            floor_kib: floor,
        };
        assert!(obs(Some(1050 * MIB), Some(950 * MIB)).at_floor());
        assert!(!obs(Some(1051 * MIB), Some(950 * MIB)).at_floor());
        assert!(obs(Some(900 * MIB), Some(950 * MIB)).at_floor());
        assert!(!obs(Some(900 * MIB), None).at_floor(), "no floor known");
        assert!(!obs(None, Some(950 * MIB)).at_floor());
        // A hostile floor does not overflow.
        assert!(obs(Some(0), Some(u64::MAX)).at_floor());
    }

    #[test]
    fn events_carry_only_figures_the_collector_accepts_and_never_go_back_in_time() {
        let mut tracker = EpisodeTracker::default();
        let hostile = PressureSnapshot {
            alloc_stalls_per_s: Some(1e11),
            psi_full_avg10: Some(f64::NAN),
            major_faults_per_s: Some(3.0),
            ..PressureSnapshot::default()
        };
        let elevated = assessment(E, None);
        let calm = assessment(O, None);
        let obs = |secs: u64, assessment| Observation {
            at: at(secs),
            assessment,
            signals: &hostile,
            actual_kib: None,
            maximum_kib: None,
            floor_kib: None,
        };
        let start = tracker.observe(&vm(), &obs(100, &elevated)).expect("start");
        assert_eq!(start.signals, hostile.bounded());
        assert_eq!(start.signals.major_faults_per_s, Some(3.0));
        assert_eq!(start.signals.alloc_stalls_per_s, None);
        // The host clock steps back 50 s: the end is not before the start.
        for secs in [50, 60, 70] {
            if let Some(end) = tracker.observe(&vm(), &obs(secs, &calm)) {
                assert_eq!(end.phase, EpisodePhase::End);
                assert!(end.at_ms >= end.started_at_ms, "{end:?}");
                assert_eq!(end.signals, hostile.bounded());
            }
        }
        assert_eq!(tracker.current(), None, "ended");
    }

    #[test]
    fn a_vm_that_goes_away_ends_its_episode() {
        let mut tracker = EpisodeTracker::default();
        feed(&mut tracker, 0, &[(E, None), (C, Some(20))]);
        let end = tracker.vm_gone(&vm(), at(30)).expect("an end");
        assert_eq!(end.phase, EpisodePhase::End);
        assert_eq!(end.level, C, "the episode's worst");
        assert_eq!(end.at_ms, epoch_ms(at(30)));
        assert!(tracker.vm_gone(&vm(), at(40)).is_none());
        assert!(EpisodeTracker::default().vm_gone(&vm(), at(0)).is_none());
    }

    #[test]
    fn a_flapping_guest_is_held_to_its_hourly_budget() {
        let mut tracker = EpisodeTracker::default();
        // Four polls per cycle (one bad, three calm): 90 cycles in one hour of 10 s polls.
        let cycle = [(C, Some(1)), (O, None), (O, None), (O, None)];
        let polls: Vec<_> = cycle.iter().copied().cycle().take(4 * 90).collect();
        let events = feed(&mut tracker, 0, &polls);
        let starts = events
            .iter()
            .filter(|(_, e)| e.phase == EpisodePhase::Start)
            .count();
        let ends = events
            .iter()
            .filter(|(_, e)| e.phase == EpisodePhase::End)
            .count();
        assert_eq!(starts, ends, "every sent start gets its end");
        assert!(
            events.len() <= 2 * EVENTS_PER_HOUR as usize,
            "{}",
            events.len()
        );
        assert!(starts >= 10, "{starts}");
        assert_eq!(tracker.suppressed(), 2 * (90 - starts as u64));
        // The next hour has a budget again.
        let later = feed(&mut tracker, 400, &cycle);
        assert_eq!(later.len(), 2, "{later:?}");
    }
}
