//! `host_took.verdict` of a stored OOM in SQL, for `?host_took=` and the counts by it:
//! read from `correlation_json` (where the correlation keeps it; no column of its own),
//! else, for a row stored before it, from the balloon's verdict
//! (`Correlation::host_took_or_balloon` in SQL), so a filter and the API agree.

use crate::storage::Engine;

/// The balloon verdict as the host's side says it (`HostTook::from_balloon`).
const FROM_BALLOON: &str = "CASE corr_verdict WHEN 'balloon' THEN 'host_took_memory' \
     WHEN 'balloon_contributed' THEN 'host_contributed' WHEN 'not_balloon' THEN 'not_host' \
     ELSE 'unknown' END";

/// The expression of an `ooms` row's `host_took.verdict` on `engine`.
pub fn verdict(engine: Engine) -> String {
    let stored = match engine {
        Engine::Sqlite => {
            "CASE WHEN json_valid(correlation_json) \
             THEN json_extract(correlation_json, '$.host_took.verdict') END"
        }
        Engine::Postgres => {
            "CASE WHEN correlation_json LIKE '{%' \
             THEN (correlation_json::jsonb #>> '{host_took,verdict}') END"
        }
    };
    format!("COALESCE({stored}, {FROM_BALLOON})")
}
