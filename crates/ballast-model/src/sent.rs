//! The vocabulary names of a batch as sent. A typed batch folds every name this
//! version does not know into its vocabulary's `Unknown`, and [`crate::validate()`]
//! refuses that `Unknown` wherever `unknown` is not a value. Where it is (a report
//! analysis' verdict: the analysis could not say), only the text tells a real
//! `unknown` from a name a newer agent made up, so [`check_sent_names`] reads the
//! names from the JSON and refuses one this version does not know, by its path.

use std::borrow::Cow;

use serde::Deserialize;

use crate::validate::FieldError;

/// The part of a batch this check reads; everything else is skipped.
#[derive(Deserialize)]
struct SentBatch<'a> {
    #[serde(borrow, default)]
    events: Vec<SentEvent<'a>>,
}

#[derive(Deserialize)]
struct SentEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    analysis: Option<SentAnalysis>,
}

/// An OOM's analysis; anything else under that name (a field another event type may
/// gain, which the typed batch ignores) is skipped.
#[derive(Deserialize)]
#[serde(untagged)]
enum SentAnalysis {
    Verdict { verdict: String },
    Other(serde::de::IgnoredAny),
}

/// Refuses an OOM whose `analysis.verdict` is a name [`crate::ReportVerdict`] does not
/// list (what the typed batch holds as `unknown`). `json` is the batch that decoded
/// into a [`crate::Batch`]; text that does not decode here is refused too.
pub fn check_sent_names(json: &[u8]) -> Result<(), FieldError> {
    let batch: SentBatch<'_> = serde_json::from_slice(json).map_err(|error| FieldError {
        path: "events".into(),
        message: format!("unreadable: {error}"),
    })?;
    for (index, event) in batch.events.iter().enumerate() {
        let Some(SentAnalysis::Verdict { verdict }) =
            event.analysis.as_ref().filter(|_| event.kind == "oom")
        else {
            continue;
        };
        let allowed = crate::ReportVerdict::NAMES;
        if !allowed.contains(&verdict.as_str()) {
            return Err(FieldError {
                path: format!("events[{index}].analysis.verdict"),
                message: format!("must be one of {}", allowed.join(", ")),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{
        BalloonAtOom, Batch, CaptureSource, Envelope, Event, NearMiss, OomEvent, OomKind, VmRef,
    };
    use crate::{Limits, NearMissKind, OomAnalysis, ParsedReport, ReportVerdict};

    const NOW: i64 = 1_795_658_494_123;

    fn vm() -> VmRef {
        VmRef {
            uuid: "3f2a0c1e-0000-4000-8000-000000000001".into(),
            name: "web1".into(),
        }
    }

    /// A batch of one OOM (with `verdict`) and one near miss, as JSON.
    fn batch_json(verdict: ReportVerdict) -> serde_json::Value {
        let oom = OomEvent {
            vm: vm(),
            kind: OomKind::Guest,
            source: CaptureSource::Serial,
            raw_report: "Out of memory: Killed process 113 (hog)".into(),
            raw_truncated: false,
            report: ParsedReport {
                kind: crate::ReportKind::Global,
                ..ParsedReport::default()
            },
            analysis: OomAnalysis {
                verdict,
                ..OomAnalysis::default()
            },
            balloon_at_oom: BalloonAtOom::default(),
            balloon_history: Vec::new(),
            host: None,
            flood_suppressed: 0,
        };
        let batch = Batch {
            schema_version: 1,
            host_id: "pve1".into(),
            agent_version: "0.1.0".into(),
            events: vec![
                Envelope {
                    key: "pve1/near_miss/1".into(),
                    captured_at_ms: NOW - 1000,
                    event: Event::NearMiss(NearMiss {
                        vm: vm(),
                        kind: NearMissKind::OutOfPuff,
                        detail: "stalled".into(),
                        actual_kib: None,
                        usable_kib: None,
                    }),
                },
                Envelope {
                    key: "pve1/oom/1".into(),
                    captured_at_ms: NOW - 1000,
                    event: Event::Oom(Box::new(oom)),
                },
            ],
        };
        serde_json::to_value(batch).expect("serialise")
    }

    /// The ingest's order: decode, validate, then the names as sent.
    fn ingest(json: &serde_json::Value) -> Result<Batch, FieldError> {
        let bytes = serde_json::to_vec(json).expect("bytes");
        let batch: Batch = serde_json::from_slice(&bytes).expect("decodes");
        crate::validate(&batch, &Limits::default(), NOW)?;
        check_sent_names(&bytes)?;
        Ok(batch)
    }

    #[test]
    fn a_verdict_this_version_does_not_know_is_refused_by_path_though_it_decodes() {
        let mut json = batch_json(ReportVerdict::Balloon);
        json["events"][1]["analysis"]["verdict"] = "added_next_year".into();
        let bytes = serde_json::to_vec(&json).expect("bytes");
        let typed: Batch = serde_json::from_slice(&bytes).expect("decodes");
        let Event::Oom(oom) = &typed.events[1].event else {
            panic!("not an OOM: {typed:?}");
        };
        assert_eq!(oom.analysis.verdict, ReportVerdict::Unknown);
        let error = ingest(&json).expect_err("refused");
        assert_eq!(error.path, "events[1].analysis.verdict");
        assert!(error.message.contains("no_killable, unknown"), "{error}");
    }

    #[test]
    fn every_known_verdict_and_a_real_unknown_pass_also_when_escaped() {
        for verdict in ReportVerdict::KNOWN
            .iter()
            .copied()
            .chain([ReportVerdict::Unknown])
        {
            let batch = ingest(&batch_json(verdict)).expect("accepted");
            let Event::Oom(oom) = &batch.events[1].event else {
                panic!("not an OOM");
            };
            assert_eq!(oom.analysis.verdict, verdict);
        }
        let text = serde_json::to_string(&batch_json(ReportVerdict::Unknown))
            .expect("text")
            .replace("\"verdict\":\"unknown\"", "\"verdict\":\"\\u0075nknown\"");
        assert!(text.contains("u0075nknown"), "{text}");
        assert_eq!(check_sent_names(text.as_bytes()), Ok(()));
        // A field named `analysis` on another event (which the typed batch ignores)
        // is no verdict.
        let mut json = batch_json(ReportVerdict::Balloon);
        json["events"][0]["analysis"] = serde_json::json!([5, {"verdict": 7}]);
        assert!(ingest(&json).is_ok());
        json["events"][0]["analysis"] = serde_json::json!({"verdict": "added_next_year"});
        assert!(ingest(&json).is_ok());
    }

    #[test]
    fn unheard_of_kinds_states_and_near_misses_are_refused_as_before() {
        let mut json = batch_json(ReportVerdict::Balloon);
        json["events"][0]["kind"] = "added_next_year".into();
        assert_eq!(
            ingest(&json).map(|_| ()).map_err(|e| e.path),
            Err("events[0].kind".into())
        );
        let mut json = batch_json(ReportVerdict::Balloon);
        json["events"][1]["kind"] = "added_next_year".into();
        assert_eq!(
            ingest(&json).map(|_| ()).map_err(|e| e.path),
            Err("events[1].kind".into())
        );
        let mut json = batch_json(ReportVerdict::Balloon);
        json["events"][1]["report"]["kind"] = "unknown".into();
        assert_eq!(
            ingest(&json).map(|_| ()).map_err(|e| e.path),
            Err("events[1].report.kind".into())
        );
        let inventory = serde_json::json!({
            "key": "pve1/inventory/1", "captured_at_ms": NOW - 1000, "type": "inventory",
            "vms": [{"vm": {"uuid": "3f2a", "name": "web1"}, "state": "hibernating",
                     "config": crate::VmConfig::default()}]
        });
        let mut json = batch_json(ReportVerdict::Balloon);
        json["events"] = serde_json::json!([inventory]);
        let error = ingest(&json).expect_err("refused");
        assert_eq!(error.path, "events[0].vms[0].state");
        assert_eq!(
            error.message,
            "must be one of running, paused, shut_off, crashed, other"
        );
    }
}
