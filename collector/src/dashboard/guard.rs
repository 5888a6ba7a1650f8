//! The dashboard's guard pieces (issue 19 item 3): the VM page's guard markers on
//! the memory chart and its list of actions, and the overview's "OOMs averted" and
//! "would have deflated" lines. The joins behind the overview's lines are pure
//! ([`averted`], [`would_have`]) over rows the page read; every agent- or
//! guest-written text goes through maud and is escaped.

use std::collections::BTreeSet;

use maud::{html, Markup};

use ballast_model::{GuardMode, GuardOutcome};

use crate::dashboard::layout::{host_link, kib, vm_link};
use crate::dashboard::pressure::{drivers, exhaustion, level_badge};
use crate::dashboard::svg::GuardMark;
use crate::records::{EpisodeRecord, GuardRecord};
use crate::reports::format;

/// How long after an episode an OOM of its VM still counts as the one the guard
/// did not avert (or, in `observe`, the one it would have answered).
pub const AFTER_EPISODE_MS: i64 = 10 * 60_000;

/// The most guard actions the VM page lists and marks.
pub const VM_LISTED: i64 = 200;

/// An action's marker class ([`crate::dashboard::svg::GUARD_KINDS`]).
pub fn mark_class(outcome: GuardOutcome) -> &'static str {
    match outcome {
        GuardOutcome::Deflated | GuardOutcome::FloorRaised => "guard-deflated",
        GuardOutcome::WouldDeflate => "guard-would",
        GuardOutcome::OverriddenByHost => "guard-overridden",
        _ => "guard-held",
    }
}

/// What a step gives back (or would have): its target above the balloon's actual.
fn step_kib(action: &GuardRecord) -> Option<u64> {
    match (action.actual_before_kib, action.target_kib) {
        (Some(before), Some(target)) => Some(target.saturating_sub(before)),
        _ => None,
    }
}

fn sizes(action: &GuardRecord) -> String {
    format!(
        "{} -> {}",
        kib(action.actual_before_kib),
        kib(action.target_kib)
    )
}

/// The actions as chart markers.
pub fn marks(actions: &[GuardRecord]) -> Vec<GuardMark> {
    actions
        .iter()
        .map(|action| GuardMark {
            at_ms: action.at_ms,
            class: mark_class(action.outcome),
            label: format!(
                "guard {} ({}) at {}: {}",
                action.outcome.as_str(),
                action.mode.as_str(),
                format::date_time(action.at_ms),
                sizes(action)
            ),
        })
        .collect()
}

/// A VM's actions, newest first (as read).
pub fn actions_table(actions: &[GuardRecord]) -> Markup {
    html! {
        @if actions.is_empty() {
            p.empty { "No guard action in this range (guard off, or nothing at critical risk)." }
        } @else {
            table #guard-actions {
                thead { tr {
                    th { "Time" } th { "Mode" } th { "Outcome" } th { "Balloon before -> target" }
                    th { "Risk" } th { "Drivers" } th { "Exhaustion in" } th { "Host available / reserve" }
                    th { "Floor before -> after" } th { "Detail" }
                } }
                tbody {
                    @for action in actions {
                        tr class=(mark_class(action.outcome)) {
                            td { (format::date_time(action.at_ms)) }
                            td { (action.mode.as_str()) }
                            td { span class={ "swatch " (mark_class(action.outcome)) } {} (action.outcome.as_str()) }
                            td { (sizes(action)) }
                            td { (level_badge(action.level)) }
                            td { (drivers(&action.drivers)) }
                            td { (exhaustion(action.exhaustion_secs)) }
                            td { (kib(action.host_available_kib)) " / " (kib(action.host_reserve_kib)) }
                            td { (kib(action.floor_before_kib)) " -> " (kib(action.floor_after_kib)) }
                            td { (action.detail) }
                        }
                    }
                }
            }
        }
    }
}

/// An OOM of a VM: (host, uuid, time ms).
pub type OomAt = (String, String, i64);

/// An episode in which the guard deflated and after which its VM had no OOM.
#[derive(Debug, Clone, PartialEq)]
pub struct Averted {
    pub host: String,
    pub uuid: String,
    pub name: String,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    /// What the guard gave back in the episode (its deflations' steps summed).
    pub given_kib: u64,
}

fn episode_of<'a>(
    action: &GuardRecord,
    episodes: &'a [EpisodeRecord],
) -> Option<&'a EpisodeRecord> {
    let started = action.episode_started_at_ms?;
    episodes.iter().find(|episode| {
        episode.host == action.host
            && episode.uuid == action.uuid
            && episode.started_at_ms == started
    })
}

fn oom_between(ooms: &[OomAt], host: &str, uuid: &str, from_ms: i64, to_ms: i64) -> Option<i64> {
    ooms.iter()
        .filter(|(h, u, at)| h == host && u == uuid && *at >= from_ms && *at <= to_ms)
        .map(|(_, _, at)| *at)
        .min()
}

/// "OOMs averted": each episode with a `deflated` action (in `act`) that ended, with
/// no OOM of its VM from its start to [`AFTER_EPISODE_MS`] after its end, that
/// window over by `now_ms`; one per episode, newest first.
pub fn averted(
    actions: &[GuardRecord],
    episodes: &[EpisodeRecord],
    ooms: &[OomAt],
    now_ms: i64,
) -> Vec<Averted> {
    let mut found: Vec<Averted> = Vec::new();
    for action in actions
        .iter()
        .filter(|a| a.outcome == GuardOutcome::Deflated && a.mode == GuardMode::Act)
    {
        let Some(episode) = episode_of(action, episodes) else {
            continue;
        };
        let Some(ended) = episode.ended_at_ms else {
            continue;
        };
        let until = ended.saturating_add(AFTER_EPISODE_MS);
        if until > now_ms
            || oom_between(
                ooms,
                &episode.host,
                &episode.uuid,
                episode.started_at_ms,
                until,
            )
            .is_some()
        {
            continue;
        }
        let step = step_kib(action).unwrap_or(0);
        match found.iter_mut().find(|a| {
            a.host == episode.host
                && a.uuid == episode.uuid
                && a.started_at_ms == episode.started_at_ms
        }) {
            Some(known) => known.given_kib = known.given_kib.saturating_add(step),
            None => found.push(Averted {
                host: episode.host.clone(),
                uuid: episode.uuid.clone(),
                name: action.name.clone(),
                started_at_ms: episode.started_at_ms,
                ended_at_ms: ended,
                given_kib: step,
            }),
        }
    }
    found.sort_by_key(|a| std::cmp::Reverse(a.ended_at_ms));
    found
}

/// A `would_deflate` action (in `observe`) its VM's OOM followed.
#[derive(Debug, Clone, PartialEq)]
pub struct WouldHave {
    pub host: String,
    pub uuid: String,
    pub name: String,
    pub at_ms: i64,
    pub oom_at_ms: i64,
    /// What it would have given back.
    pub step_kib: Option<u64>,
}

impl WouldHave {
    /// How long before the OOM it would have acted.
    pub fn lead_ms(&self) -> i64 {
        self.oom_at_ms.saturating_sub(self.at_ms)
    }
}

/// "Would have deflated": for each OOM that followed a `would_deflate` action of its
/// VM within the action's episode or [`AFTER_EPISODE_MS`] after it (after the action
/// itself when the episode is not known), the earliest such action (the longest
/// lead); one per OOM, newest OOM first.
pub fn would_have(
    actions: &[GuardRecord],
    episodes: &[EpisodeRecord],
    ooms: &[OomAt],
) -> Vec<WouldHave> {
    let mut by_oom: Vec<WouldHave> = Vec::new();
    let mut ordered: Vec<&GuardRecord> = actions
        .iter()
        .filter(|a| a.outcome == GuardOutcome::WouldDeflate)
        .collect();
    ordered.sort_by_key(|a| (a.at_ms, a.id));
    for action in ordered {
        let episode_end = match episode_of(action, episodes) {
            Some(episode) => episode.ended_at_ms.unwrap_or(i64::MAX),
            None => action.at_ms,
        };
        let until = episode_end.saturating_add(AFTER_EPISODE_MS);
        let Some(oom_at) = oom_between(ooms, &action.host, &action.uuid, action.at_ms, until)
        else {
            continue;
        };
        let known = by_oom
            .iter()
            .any(|w| w.host == action.host && w.uuid == action.uuid && w.oom_at_ms == oom_at);
        if !known {
            by_oom.push(WouldHave {
                host: action.host.clone(),
                uuid: action.uuid.clone(),
                name: action.name.clone(),
                at_ms: action.at_ms,
                oom_at_ms: oom_at,
                step_kib: step_kib(action),
            });
        }
    }
    by_oom.sort_by_key(|w| std::cmp::Reverse(w.oom_at_ms));
    by_oom
}

/// A lead time for people: `40 s`, `3 min`.
pub fn lead(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    if secs < 120 {
        format!("{secs} s")
    } else {
        format!("{} min", secs / 60)
    }
}

/// The distinct (host, uuid) VMs of `actions`, for reading their OOMs.
pub fn vms_of(actions: &[GuardRecord]) -> BTreeSet<(String, String)> {
    actions
        .iter()
        .map(|a| (a.host.clone(), a.uuid.clone()))
        .collect()
}

/// The overview's guard section: OOMs averted and what `observe` would have done.
pub fn overview_section(averted: &[Averted], would: &[WouldHave]) -> Markup {
    html! {
        section #guard {
            h2 { "Guard" }
            div.stat { span.num { (averted.len()) } " OOMs averted" }
            @if !averted.is_empty() {
                ul #guard-averted {
                    @for one in averted {
                        li {
                            (vm_link(&one.host, &one.uuid, &one.name)) " on " (host_link(&one.host)) ": "
                            "deflated " (format::kib(one.given_kib)) " in the episode from "
                            (format::date_time(one.started_at_ms)) " to " (format::date_time(one.ended_at_ms))
                            ", no OOM followed"
                        }
                    }
                }
            }
            h3 { "What observe would have done" }
            @if would.is_empty() {
                p.empty { "No OOM followed a guard decision in observe." }
            } @else {
                ul #guard-would {
                    @for one in would {
                        li {
                            (vm_link(&one.host, &one.uuid, &one.name)) " on " (host_link(&one.host)) ": "
                            "would have deflated " (kib(one.step_kib)) " " (lead(one.lead_ms())) " before the OOM"
                            " (" (format::date_time(one.oom_at_ms)) ")"
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_model::{PressureSnapshot, RiskLevel};

    const MIB: u64 = 1024;
    const T: i64 = 1_795_000_000_000;

    fn action(uuid: &str, at_ms: i64, mode: GuardMode, outcome: GuardOutcome) -> GuardRecord {
        GuardRecord {
            id: at_ms,
            host: "pve1".into(),
            uuid: uuid.into(),
            name: format!("vm-{uuid}"),
            at_ms,
            mode,
            outcome,
            level: RiskLevel::Critical,
            episode_started_at_ms: Some(T),
            actual_before_kib: Some(256 * MIB),
            target_kib: Some(512 * MIB),
            maximum_kib: Some(1024 * MIB),
            deficit_kib: None,
            exhaustion_secs: Some(40),
            host_available_kib: None,
            host_reserve_kib: None,
            floor_before_kib: None,
            floor_after_kib: None,
            drivers: Vec::new(),
            signals: PressureSnapshot::default(),
            detail: String::new(),
        }
    }

    fn episode(uuid: &str, ended_at_ms: Option<i64>) -> EpisodeRecord {
        EpisodeRecord {
            host: "pve1".into(),
            uuid: uuid.into(),
            name: format!("vm-{uuid}"),
            started_at_ms: T,
            last_at_ms: ended_at_ms.unwrap_or(T + 60_000),
            ended_at_ms,
            level: RiskLevel::Critical,
            drivers: Vec::new(),
            exhaustion_secs: None,
            signals: PressureSnapshot::default(),
            peak_alloc_stalls_per_s: None,
            peak_psi_some_avg10: None,
            peak_psi_full_avg10: None,
            deficit_kib: None,
            at_balloon_floor: false,
            balloon_floor_kib: None,
            actual_kib: None,
            maximum_kib: None,
        }
    }

    fn oom(uuid: &str, at_ms: i64) -> OomAt {
        ("pve1".into(), uuid.into(), at_ms)
    }

    #[test]
    fn a_deflation_in_an_episode_no_oom_followed_is_one_averted_oom() {
        let end = T + 120_000;
        let now = end + AFTER_EPISODE_MS + 1;
        let actions = [
            action("a", T + 10_000, GuardMode::Act, GuardOutcome::Deflated),
            action("a", T + 40_000, GuardMode::Act, GuardOutcome::Deflated),
        ];
        let episodes = [episode("a", Some(end))];
        let found = averted(&actions, &episodes, &[], now);
        assert_eq!(found.len(), 1, "one episode, one OOM averted");
        assert_eq!(found[0].given_kib, 512 * MIB, "both steps");
        // Another VM's OOM, or one of this VM long after, changes nothing.
        let later = [oom("b", T + 60_000), oom("a", end + AFTER_EPISODE_MS + 1)];
        assert_eq!(averted(&actions, &episodes, &later, now).len(), 1);
    }

    #[test]
    fn no_oom_is_averted_when_one_followed_the_episode_is_open_or_its_window_not_over() {
        let end = T + 120_000;
        let now = end + AFTER_EPISODE_MS + 1;
        let actions = [action(
            "a",
            T + 10_000,
            GuardMode::Act,
            GuardOutcome::Deflated,
        )];
        let ended = [episode("a", Some(end))];
        assert!(averted(&actions, &ended, &[oom("a", T + 90_000)], now).is_empty());
        assert!(
            averted(&actions, &ended, &[oom("a", end + 5 * 60_000)], now).is_empty(),
            "an OOM within N minutes after the end"
        );
        assert!(
            averted(&actions, &[episode("a", None)], &[], now).is_empty(),
            "open"
        );
        assert!(
            averted(&actions, &ended, &[], end + 60_000).is_empty(),
            "too soon to tell"
        );
        // Deflations only: what observe or a held-back step did averted nothing.
        let others = [
            action(
                "a",
                T + 10_000,
                GuardMode::Observe,
                GuardOutcome::WouldDeflate,
            ),
            action(
                "a",
                T + 20_000,
                GuardMode::Act,
                GuardOutcome::HostHasNothing,
            ),
        ];
        assert!(averted(&others, &ended, &[], now).is_empty());
    }

    #[test]
    fn an_observed_decision_an_oom_followed_tells_how_much_and_how_long_before() {
        let actions = [
            action(
                "a",
                T + 20_000,
                GuardMode::Observe,
                GuardOutcome::WouldDeflate,
            ),
            action(
                "a",
                T + 50_000,
                GuardMode::Observe,
                GuardOutcome::WouldDeflate,
            ),
            action(
                "b",
                T + 20_000,
                GuardMode::Observe,
                GuardOutcome::WouldDeflate,
            ),
        ];
        let episodes = [
            episode("a", Some(T + 120_000)),
            episode("b", Some(T + 60_000)),
        ];
        let ooms = [
            oom("a", T + 60_000),
            oom("b", T + 60_000 + AFTER_EPISODE_MS + 1),
        ];
        let found = would_have(&actions, &episodes, &ooms);
        assert_eq!(found.len(), 1, "b's OOM came too late to be the episode's");
        assert_eq!(found[0].uuid, "a");
        assert_eq!(
            found[0].lead_ms(),
            40_000,
            "the earliest decision before the OOM"
        );
        assert_eq!(found[0].step_kib, Some(256 * MIB));
        assert_eq!(lead(found[0].lead_ms()), "40 s");
        let text = overview_section(&[], &found).into_string();
        assert!(
            text.contains("would have deflated 256 MiB 40 s before the OOM"),
            "{text}"
        );
        // An OOM before the decision is not one it would have answered.
        assert!(would_have(&actions[..1], &episodes, &[oom("a", T + 10_000)]).is_empty());
    }

    #[test]
    fn outcomes_mark_in_distinct_classes_and_text_is_escaped() {
        assert_eq!(mark_class(GuardOutcome::Deflated), "guard-deflated");
        assert_eq!(mark_class(GuardOutcome::WouldDeflate), "guard-would");
        assert_eq!(
            mark_class(GuardOutcome::OverriddenByHost),
            "guard-overridden"
        );
        assert_eq!(mark_class(GuardOutcome::RateLimited), "guard-held");
        let mut hostile = action("a", T, GuardMode::Act, GuardOutcome::Failed);
        hostile.detail = "<script>x</script>".into();
        let text = actions_table(&[hostile]).into_string();
        assert!(text.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(!text.contains("<script>"));
        assert!(text.contains("256 MiB -&gt; 512 MiB"), "{text}");
    }
}
