//! Which webhooks hear about an OOM: per-webhook filters on the OOM's kind and
//! correlation verdict, applied at ingest to the rows about to be stored. Pure.

use ballast_model::{CorrelationVerdict, OomKind};

use crate::storage::rows::{NotifyTarget, OomRow};

/// OOM kinds a filter may name (the wire names).
pub const KINDS: &[&str] = &ballast_model::OomKind::NAMES;
/// Correlation verdicts a filter may name.
pub const VERDICTS: &[&str] = ballast_model::CorrelationVerdict::NAMES;

/// A webhook's filter; an empty list lets everything through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub kinds: Vec<OomKind>,
    pub verdicts: Vec<CorrelationVerdict>,
}

impl Filter {
    pub fn matches(&self, kind: OomKind, corr_verdict: CorrelationVerdict) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && (self.verdicts.is_empty() || self.verdicts.contains(&corr_verdict))
    }
}

/// A webhook name with its filter: what the ingest handler needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    pub webhook: String,
    pub filter: Filter,
}

/// The (OOM, webhook) pairs to queue for a batch's OOM rows.
pub fn targets(ooms: &[OomRow], routes: &[Route]) -> Vec<NotifyTarget> {
    let mut targets = Vec::new();
    for (oom_index, oom) in ooms.iter().enumerate() {
        for route in routes {
            if route.filter.matches(oom.kind, oom.corr_verdict) {
                targets.push(NotifyTarget {
                    oom_index,
                    webhook: route.webhook.clone(),
                });
            }
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_lists_match_everything_and_lists_restrict() {
        let all = Filter::default();
        assert!(all.matches(OomKind::Host, CorrelationVerdict::Unknown));
        let balloon = Filter {
            kinds: vec![OomKind::Guest],
            verdicts: vec![
                CorrelationVerdict::Balloon,
                CorrelationVerdict::BalloonContributed,
            ],
        };
        assert!(balloon.matches(OomKind::Guest, CorrelationVerdict::BalloonContributed));
        assert!(!balloon.matches(OomKind::Guest, CorrelationVerdict::NotBalloon));
        assert!(!balloon.matches(OomKind::Host, CorrelationVerdict::Balloon));
    }
}
