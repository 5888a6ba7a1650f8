//! The notification outbox (`notify_outbox`): rows queued by ingest in the OOM's own
//! transaction, claimed by senders with a lease, then marked.
//!
//! Claiming is one UPDATE that writes a lease token no other claim uses
//! (`lease_owner`) on due rows whose lease has expired, followed by a SELECT of the
//! rows holding that token. On PostgreSQL the candidate rows are picked
//! `FOR UPDATE SKIP LOCKED` and the outer UPDATE re-checks the lease, so collectors
//! sharing one database never claim the same row; a collector that dies mid-send
//! leaves a lease that expires, and another one takes over (at-least-once in that one
//! case: receivers may dedupe on the `Idempotency-Key` header). Every later mark is
//! conditional on the token, so a sender whose lease was taken over changes nothing.

use crate::notify::message::{OomNotice, SuppressedSummary};
use crate::storage::{Param, Query, Store, StoreError};

/// A claimed notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub outbox_id: i64,
    pub attempts: i64,
    /// `None` when the OOM was deleted (retention) before it was notified.
    pub notice: Option<OomNotice>,
}

/// `UPDATE notify_outbox SET <set> WHERE id IN (<pick>) AND <recheck>` for the engine.
/// PostgreSQL: the pick is a MATERIALIZED CTE taken `FOR UPDATE SKIP LOCKED`, so it
/// runs once (a plain `IN (subquery)` may be rescanned, and each rescan skips the
/// rows the previous one locked: a `LIMIT 20` claimed 40 rows in the two-collector
/// test). SQLite has one writer and evaluates `IN (subquery)` once.
fn claim_sql(store: &dyn Store, set: &str, pick: &str, recheck: &str) -> String {
    if store.engine() == "postgres" {
        format!(
            "WITH picked AS MATERIALIZED ({pick} FOR UPDATE SKIP LOCKED) \
             UPDATE notify_outbox SET {set} WHERE id IN (SELECT id FROM picked) AND {recheck}"
        )
    } else {
        format!("UPDATE notify_outbox SET {set} WHERE id IN ({pick}) AND {recheck}")
    }
}

/// The parameters of [`claim_sql`] in the order its text names them.
fn claim_params(
    store: &dyn Store,
    set: Vec<Param>,
    pick: Vec<Param>,
    recheck: Vec<Param>,
) -> Vec<Param> {
    if store.engine() == "postgres" {
        [pick, set, recheck].concat()
    } else {
        [set, pick, recheck].concat()
    }
}

/// Whether `webhook` has a due pending or an unclaimed suppressed row: a read, so an
/// idle sender writes nothing.
pub async fn has_work(store: &dyn Store, webhook: &str, now_ms: i64) -> Result<bool, StoreError> {
    let rows = store
        .query(Query::new(
            "SELECT id FROM notify_outbox WHERE webhook = ? AND lease_until_ms <= ? \
             AND ((state = 'pending' AND next_attempt_ms <= ?) OR state = 'suppressed') LIMIT 1",
            vec![Param::text(webhook), Param::int(now_ms), Param::int(now_ms)],
        ))
        .await?;
    Ok(!rows.is_empty())
}

/// Claims up to `limit` due pending rows of `webhook` for `owner` until `lease_until_ms`.
pub async fn claim_pending(
    store: &dyn Store,
    webhook: &str,
    owner: &str,
    now_ms: i64,
    lease_until_ms: i64,
    limit: usize,
) -> Result<Vec<Claimed>, StoreError> {
    let sql = claim_sql(
        store,
        "lease_owner = ?, lease_until_ms = ?",
        "SELECT id FROM notify_outbox WHERE webhook = ? AND state = 'pending' \
         AND next_attempt_ms <= ? AND lease_until_ms <= ? ORDER BY id LIMIT ?",
        "state = 'pending' AND lease_until_ms <= ?",
    );
    let params = claim_params(
        store,
        vec![Param::text(owner), Param::int(lease_until_ms)],
        vec![
            Param::text(webhook),
            Param::int(now_ms),
            Param::int(now_ms),
            Param::int(i64::try_from(limit).unwrap_or(i64::MAX)),
        ],
        vec![Param::int(now_ms)],
    );
    let claimed = store.execute(Query::new(sql, params)).await?;
    if claimed == 0 {
        return Ok(Vec::new());
    }
    let rows = store
        .query(Query::new(
            "SELECT o.id, o.attempts, m.id, m.host_id, m.vm_uuid, m.vm_name, m.kind, \
             m.captured_at_ms, m.killed_pid, m.killed_comm, m.killed_anon_rss_kb, \
             m.report_kind, m.report_verdict, m.corr_verdict, m.balloon_held_kb \
             FROM notify_outbox o LEFT JOIN ooms m ON m.id = o.oom_id \
             WHERE o.lease_owner = ? AND o.state = 'pending' ORDER BY o.id",
            vec![Param::text(owner)],
        ))
        .await?;
    Ok(rows
        .iter()
        .map(|row| Claimed {
            outbox_id: row.int_or_zero(0),
            attempts: row.int_or_zero(1),
            notice: row.int(2).map(|oom_id| OomNotice {
                oom_id,
                host: row.text_or_empty(3),
                vm_uuid: row.text_or_empty(4),
                vm_name: row.text_or_empty(5),
                kind: row.text_or_empty(6),
                captured_at_ms: row.int_or_zero(7),
                killed_pid: row.int(8),
                killed_comm: row.text(9),
                killed_anon_rss_kb: row.int(10),
                report_kind: row.text_or_empty(11),
                report_verdict: row.text_or_empty(12),
                corr_verdict: row.text_or_empty(13),
                balloon_held_kb: row.int(14),
            }),
        })
        .collect())
}

/// Sets a claimed row's final or next state; `error` is the last failure, if any.
pub async fn mark(
    store: &dyn Store,
    outbox_id: i64,
    owner: &str,
    state: &str,
    now_ms: i64,
    error: Option<&str>,
) -> Result<(), StoreError> {
    store
        .execute(Query::new(
            "UPDATE notify_outbox SET state = ?, lease_owner = NULL, lease_until_ms = 0, \
             last_error = COALESCE(?, last_error), updated_at_ms = ? \
             WHERE id = ? AND lease_owner = ?",
            vec![
                Param::text(state),
                Param::Text(error.map(str::to_string)),
                Param::int(now_ms),
                Param::int(outbox_id),
                Param::text(owner),
            ],
        ))
        .await
        .map(|_| ())
}

/// After a failed attempt: every row still claimed by `owner` counts one more
/// attempt; those at `max_attempts` become `failed`, the others wait until
/// `next_attempt_ms`. Returns how many were given up.
pub async fn record_failure(
    store: &dyn Store,
    owner: &str,
    max_attempts: u32,
    next_attempt_ms: i64,
    now_ms: i64,
    error: &str,
) -> Result<u64, StoreError> {
    let given_up = store
        .execute(Query::new(
            "UPDATE notify_outbox SET state = 'failed', attempts = attempts + 1, \
             lease_owner = NULL, lease_until_ms = 0, last_error = ?, updated_at_ms = ? \
             WHERE lease_owner = ? AND state = 'pending' AND attempts + 1 >= ?",
            vec![
                Param::text(error),
                Param::int(now_ms),
                Param::text(owner),
                Param::int(i64::from(max_attempts)),
            ],
        ))
        .await?;
    store
        .execute(Query::new(
            "UPDATE notify_outbox SET attempts = attempts + 1, next_attempt_ms = ?, \
             lease_owner = NULL, lease_until_ms = 0, last_error = ?, updated_at_ms = ? \
             WHERE lease_owner = ? AND state = 'pending'",
            vec![
                Param::int(next_attempt_ms),
                Param::text(error),
                Param::int(now_ms),
                Param::text(owner),
            ],
        ))
        .await?;
    Ok(given_up)
}

/// Claims every suppressed row of `webhook` for one summary; returns how many.
pub async fn claim_suppressed(
    store: &dyn Store,
    webhook: &str,
    owner: &str,
    now_ms: i64,
    lease_until_ms: i64,
) -> Result<u64, StoreError> {
    let sql = claim_sql(
        store,
        "lease_owner = ?, lease_until_ms = ?",
        "SELECT id FROM notify_outbox WHERE webhook = ? AND state = 'suppressed' \
         AND lease_until_ms <= ?",
        "state = 'suppressed' AND lease_until_ms <= ?",
    );
    let params = claim_params(
        store,
        vec![Param::text(owner), Param::int(lease_until_ms)],
        vec![Param::text(webhook), Param::int(now_ms)],
        vec![Param::int(now_ms)],
    );
    store.execute(Query::new(sql, params)).await
}

/// What the suppressed rows claimed by `owner` were about.
pub async fn summarize(store: &dyn Store, owner: &str) -> Result<SuppressedSummary, StoreError> {
    let rows = store
        .query(Query::new(
            "SELECT COALESCE(m.corr_verdict, 'deleted'), COUNT(*), MIN(m.captured_at_ms), \
             MAX(m.captured_at_ms) FROM notify_outbox o LEFT JOIN ooms m ON m.id = o.oom_id \
             WHERE o.lease_owner = ? AND o.state = 'suppressed' \
             GROUP BY COALESCE(m.corr_verdict, 'deleted')",
            vec![Param::text(owner)],
        ))
        .await?;
    let mut summary = SuppressedSummary::default();
    for row in &rows {
        let n = row.int_or_zero(1);
        summary.count += n;
        summary.by_verdict.push((row.text_or_empty(0), n));
        let (first, last) = (row.int(2), row.int(3));
        summary.first_captured_ms = match (summary.first_captured_ms, first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        summary.last_captured_ms = match (summary.last_captured_ms, last) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    summary
        .by_verdict
        .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(summary)
}

/// Marks the suppressed rows claimed by `owner` as summed up in a sent summary.
pub async fn mark_summarized(
    store: &dyn Store,
    owner: &str,
    now_ms: i64,
) -> Result<u64, StoreError> {
    store
        .execute(Query::new(
            "UPDATE notify_outbox SET state = 'summarized', lease_owner = NULL, \
             lease_until_ms = 0, updated_at_ms = ? WHERE lease_owner = ? AND state = 'suppressed'",
            vec![Param::int(now_ms), Param::text(owner)],
        ))
        .await
}

/// Gives back what `owner` still holds (rows keep their state and attempts).
pub async fn release(store: &dyn Store, owner: &str) -> Result<u64, StoreError> {
    store
        .execute(Query::new(
            "UPDATE notify_outbox SET lease_owner = NULL, lease_until_ms = 0 WHERE lease_owner = ?",
            vec![Param::text(owner)],
        ))
        .await
}

/// Gives back every lease whose token starts with `prefix` (a stopped sender's).
pub async fn release_prefix(store: &dyn Store, prefix: &str) -> Result<u64, StoreError> {
    store
        .execute(Query::new(
            "UPDATE notify_outbox SET lease_owner = NULL, lease_until_ms = 0 \
             WHERE lease_owner LIKE ?",
            vec![Param::text(format!("{prefix}%"))],
        ))
        .await
}

/// Deletes up to `batch_rows` rows that are finished (sent, failed, summarized) and
/// last changed before `before_ms`, or of any state queued before it (a webhook
/// removed from the configuration leaves pending rows nobody sends; news that old is
/// not worth sending).
pub async fn delete_finished(
    store: &dyn Store,
    before_ms: i64,
    batch_rows: u32,
) -> Result<u64, StoreError> {
    store
        .execute(Query::new(
            "DELETE FROM notify_outbox WHERE id IN (SELECT id FROM notify_outbox \
             WHERE (state IN ('sent', 'failed', 'summarized') AND updated_at_ms < ?) \
             OR created_at_ms < ? LIMIT ?)",
            vec![
                Param::int(before_ms),
                Param::int(before_ms),
                Param::int(i64::from(batch_rows)),
            ],
        ))
        .await
}

/// Rows per webhook and state: (webhook, state, count).
pub async fn counts(store: &dyn Store) -> Result<Vec<(String, String, i64)>, StoreError> {
    let rows = store
        .query(Query::new(
            "SELECT webhook, state, COUNT(*) FROM notify_outbox GROUP BY webhook, state \
             ORDER BY webhook, state",
            Vec::new(),
        ))
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            (
                row.text_or_empty(0),
                row.text_or_empty(1),
                row.int_or_zero(2),
            )
        })
        .collect())
}
