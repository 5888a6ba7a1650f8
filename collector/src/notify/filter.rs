//! Which webhooks hear about an OOM: per-webhook filters on the OOM's kind and
//! correlation verdict, applied at ingest to the rows about to be stored. Pure.

use crate::storage::rows::{NotifyTarget, OomRow};

/// OOM kinds a filter may name (the wire names).
pub const KINDS: &[&str] = &ballast_model::OomKind::NAMES;
/// Correlation verdicts a filter may name.
pub const VERDICTS: &[&str] = ballast_model::CorrelationVerdict::NAMES;

/// A webhook's filter; an empty list lets everything through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub kinds: Vec<String>,
    pub verdicts: Vec<String>,
}

impl Filter {
    pub fn matches(&self, kind: &str, corr_verdict: &str) -> bool {
        (self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind))
            && (self.verdicts.is_empty() || self.verdicts.iter().any(|v| v == corr_verdict))
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
            if route
                .filter
                .matches(oom.kind.as_str(), oom.corr_verdict.as_str())
            {
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
        assert!(all.matches("host", "unknown"));
        let balloon = Filter {
            kinds: vec!["guest".into()],
            verdicts: vec!["balloon".into(), "balloon_contributed".into()],
        };
        assert!(balloon.matches("guest", "balloon_contributed"));
        assert!(!balloon.matches("guest", "not_balloon"));
        assert!(!balloon.matches("host", "balloon"));
    }
}
