//! One VM's risk state across polls: the window of recent points the model reads
//! ([`super::risk`]), the VM's calm-time baseline, its latest assessment and its
//! episodes ([`super::episode`]). Pure; the fleet feeds it every poll.

use std::collections::VecDeque;
use std::time::SystemTime;

use ballast_model::{PressureEpisode, PressureSnapshot, RiskLevel, VmRef};

use super::episode::{EpisodeTracker, Observation};
use super::risk::{assess, Assessment, Baseline, RiskInput, RiskPoint, RiskSettings, SLOPE_POINTS};
use crate::hypervisor::{BalloonSample, DomainConfig};

/// Points kept per VM (304 bytes each): twice the model's slope span, so that a guest
/// whose reports each reach two polls still leaves a full span to the reading of the
/// report before the newest (the model's persistence).
pub const WINDOW_POINTS: usize = 2 * SLOPE_POINTS;

/// One VM's risk state.
#[derive(Debug, Clone, Default)]
pub struct VmRisk {
    window: VecDeque<RiskPoint>,
    baseline: Baseline,
    assessment: Option<Assessment>,
    episodes: EpisodeTracker,
}

impl VmRisk {
    /// Reads one poll: the VM's pressure signals (all `None` where it has none), its
    /// balloon sample (MemAvailable, MemTotal, the balloon) and its configuration (the
    /// balloon floor). The episode event it makes, if any.
    pub fn observe(
        &mut self,
        vm: &VmRef,
        at: SystemTime,
        snapshot: &PressureSnapshot,
        sample: &BalloonSample,
        config: Option<&DomainConfig>,
    ) -> Option<PressureEpisode> {
        let floor_kib = ballast_model::plausible_kib(config.and_then(|c| c.current_memory_kib));
        let point = RiskPoint {
            at,
            snapshot: *snapshot,
            usable_kib: sample.usable_kib,
            total_kib: sample.available_kib,
            actual_kib: sample.actual_kib,
            maximum_kib: sample.maximum_kib,
            floor_kib,
            report_epoch_secs: sample.last_update_epoch_secs.filter(|secs| *secs > 0),
        };
        if self.window.len() >= WINDOW_POINTS {
            self.window.pop_front();
        }
        // Exactly the window, not the next power of two (about 1.8 KiB per VM).
        self.window
            .reserve_exact(WINDOW_POINTS.saturating_sub(self.window.len()));
        self.window.push_back(point);
        let assessment = assess(RiskInput {
            window: self.window.make_contiguous(),
            baseline: &self.baseline,
            settings: &RiskSettings::default(),
        });
        if assessment.raw_level == RiskLevel::Ok {
            self.baseline.learn(snapshot);
        }
        let event = self.episodes.observe(
            vm,
            &Observation {
                at,
                assessment: &assessment,
                signals: snapshot,
                actual_kib: sample.actual_kib,
                maximum_kib: sample.maximum_kib,
                floor_kib,
            },
        );
        self.assessment = Some(assessment);
        event
    }

    /// The VM went away: the end of its episode, if one was under way.
    pub fn vm_gone(&mut self, vm: &VmRef, at: SystemTime) -> Option<PressureEpisode> {
        self.episodes.vm_gone(vm, at)
    }

    /// The latest assessment (None before the first poll).
    pub fn assessment(&self) -> Option<&Assessment> {
        self.assessment.as_ref()
    }

    /// The latest level, when the model had signals to read (None: unknown).
    pub fn level(&self) -> Option<RiskLevel> {
        self.assessment
            .as_ref()
            .filter(|a| a.has_signals())
            .map(|a| a.level)
    }

    pub fn episodes(&self) -> &EpisodeTracker {
        &self.episodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_model::EpisodePhase;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn balloon_stats_alone_make_an_episode_of_a_balloon_squeezing_a_guest() {
        let vm = VmRef {
            uuid: "u1".into(),
            name: "vm1".into(),
        };
        let config = DomainConfig {
            current_memory_kib: Some(400 * 1024),
            ..DomainConfig::default()
        };
        let mut risk = VmRisk::default();
        let mut events = Vec::new();
        // The balloon inflates 24 MiB a poll down to its 400 MiB floor while a hog
        // takes MemAvailable down 24 MiB a poll.
        for poll in 0..12u64 {
            let actual = (512 - 24 * poll).max(400);
            let sample = BalloonSample {
                actual_kib: Some(actual * 1024),
                maximum_kib: Some(512 * 1024),
                available_kib: Some((actual - 44) * 1024),
                usable_kib: Some(240u64.saturating_sub(24 * poll).max(8) * 1024),
                last_update_epoch_secs: Some(1_800_000_000 + poll * 10),
                ..BalloonSample::default()
            };
            events.extend(risk.observe(
                &vm,
                at(poll * 10),
                &PressureSnapshot::default(),
                &sample,
                Some(&config),
            ));
        }
        let start = events.first().expect("an episode");
        assert_eq!(start.phase, EpisodePhase::Start);
        assert_eq!(start.balloon_floor_kib, Some(400 * 1024));
        let critical = events
            .iter()
            .find(|e| e.level == RiskLevel::Critical)
            .expect("critical");
        assert!(
            critical.exhaustion_secs.is_some_and(|s| s <= 60),
            "{critical:?}"
        );
        // Within one 100 MiB step of the floor is at the floor; 116 MiB above is not.
        for event in &events {
            let actual = event.actual_kib.unwrap_or(0);
            assert_eq!(event.at_balloon_floor, actual <= 500 * 1024, "{event:?}");
        }
        assert!(critical.at_balloon_floor);
        assert!(risk.level().is_some_and(|l| l != RiskLevel::Ok));
        let end = risk.vm_gone(&vm, at(200)).expect("the end");
        assert_eq!(end.phase, EpisodePhase::End);
        // Without any figure the level is unknown, not ok.
        let mut blind = VmRisk::default();
        blind.observe(
            &vm,
            at(0),
            &PressureSnapshot::default(),
            &BalloonSample::default(),
            None,
        );
        assert_eq!(blind.level(), None);
        assert!(blind.assessment().is_some());
    }
}
