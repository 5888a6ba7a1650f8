//! The notification outbox (`notify_outbox`): rows queued by ingest in the OOM's own
//! transaction, claimed by senders (`crate::notify::sender`) with a lease, then
//! marked. Its SQL and its engine differences live here, in `storage`.
//!
//! Claiming is one UPDATE that writes a lease token no other claim uses
//! (`lease_owner`) on due rows whose lease has expired, followed by a SELECT of the
//! rows holding that token. On PostgreSQL the candidate rows are picked
//! `FOR UPDATE SKIP LOCKED` and the outer UPDATE re-checks the lease, so collectors
//! sharing one database never claim the same row; a collector that dies mid-send
//! leaves a lease that expires, and another one takes over (at-least-once in that one
//! case: receivers may dedupe on the `Idempotency-Key` header). Every later mark is
//! conditional on the token, so a sender whose lease was taken over changes nothing.
//!
//! The rate limit is counted here, from the store, so every collector sharing it
//! shares one window: a webhook has used, at `now`, the messages it posted within the
//! window (`notify_messages`: OOM notifications, summaries, failed posts) plus those
//! claimed and still in flight (pending rows under a live lease, and one summary per
//! lease token on suppressed rows). Claiming (pending rows or a summary) and marking
//! rows suppressed decide on that count in ONE transaction per webhook:
//! - PostgreSQL: READ COMMITTED, and the first statement takes a transaction-scoped
//!   advisory lock keyed by the webhook's name, so another collector's decision for
//!   the same webhook waits until this one committed; each later statement takes a
//!   fresh snapshot, which sees it. (Under `REPEATABLE READ` the snapshot would be
//!   taken before the lock is granted and miss the other collector's claims.)
//! - SQLite: the store's one writer runs the statements in one `IMMEDIATE`
//!   transaction, which holds the database's write lock: no other decision (or write
//!   of any kind) interleaves.
//!
//! A posted message is logged in the same transaction that marks its rows, so it is
//! counted either as in flight (before) or as sent (after), never both or neither.

use std::time::Duration;

use ballast_model::{CorrelationVerdict, OomKind, ReportKind, ReportVerdict};

use crate::storage::{Param, Query, Store, StoreError};

/// What a message says about one stored OOM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomNotice {
    pub oom_id: i64,
    pub host: String,
    pub vm_uuid: String,
    pub vm_name: String,
    pub kind: OomKind,
    pub captured_at_ms: i64,
    pub killed_pid: Option<i64>,
    pub killed_comm: Option<String>,
    pub killed_anon_rss_kb: Option<i64>,
    pub report_kind: ReportKind,
    pub report_verdict: ReportVerdict,
    pub corr_verdict: CorrelationVerdict,
    pub balloon_held_kb: Option<i64>,
    /// The stored correlation (`records::host_took_of` reads the host's side from it).
    pub correlation_json: String,
}

/// Suppressed notifications summed up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SuppressedSummary {
    pub count: i64,
    /// (correlation verdict, count), most frequent first; None: OOMs deleted since
    /// (retention) whose verdict is no longer known.
    pub by_verdict: Vec<(Option<CorrelationVerdict>, i64)>,
    pub first_captured_ms: Option<i64>,
    pub last_captured_ms: Option<i64>,
}

/// A webhook's rate limit: at most `messages` in any `window_ms`. The messages are
/// counted in the store (`outbox`), by every collector sharing it; this only says
/// which of them still count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub messages: u32,
    pub window_ms: i64,
}

impl Limit {
    pub fn new(messages: u32, window: Duration) -> Self {
        Self {
            messages,
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// A message sent at `at_ms` counts at `now_ms` when `at_ms` is after this, i.e.
    /// for `window_ms` from when it was sent.
    pub fn counted_after(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.window_ms)
    }
}

/// The first key of the PostgreSQL advisory locks serialising budget decisions ("blnt");
/// the second is `hashtext(webhook)`. (Two 32-bit keys: apart from the one 64-bit key of
/// the migrations' lock.)
const BUDGET_LOCK_SPACE: i32 = 0x626c_6e74;

/// The messages a webhook has used at `now`: posted within the window, plus pending
/// rows claimed and in flight, plus one per summary in flight (suppressed rows share
/// their summary's lease token). Parameters: [`used_params`].
const USED_SQL: &str =
    "((SELECT COUNT(*) FROM notify_messages WHERE webhook = ? AND sent_at_ms > ?) \
     + (SELECT COUNT(*) FROM notify_outbox WHERE webhook = ? AND state = 'pending' \
        AND lease_until_ms > ?) \
     + (SELECT COUNT(DISTINCT lease_owner) FROM notify_outbox WHERE webhook = ? \
        AND state = 'suppressed' AND lease_until_ms > ?))";

fn used_params(webhook: &str, limit: Limit, now_ms: i64) -> Vec<Param> {
    vec![
        Param::text(webhook),
        Param::int(limit.counted_after(now_ms)),
        Param::text(webhook),
        Param::int(now_ms),
        Param::text(webhook),
        Param::int(now_ms),
    ]
}

/// A scalar subquery: the messages `webhook` may still send at `now_ms`, at most
/// `at_most`, never below 0 (a negative LIMIT means "no limit" to SQLite).
fn budget_sql() -> String {
    format!(
        "(SELECT CASE WHEN b < 0 THEN 0 WHEN b > ? THEN ? ELSE b END \
         FROM (SELECT ? - {USED_SQL} AS b) AS budget)"
    )
}

fn budget_params(webhook: &str, limit: Limit, now_ms: i64, at_most: usize) -> Vec<Param> {
    let at_most = i64::try_from(at_most).unwrap_or(i64::MAX);
    [
        vec![
            Param::int(at_most),
            Param::int(at_most),
            Param::int(i64::from(limit.messages)),
        ],
        used_params(webhook, limit, now_ms),
    ]
    .concat()
}

/// Runs `statements` as one decision on `webhook`'s budget (see the module doc);
/// returns the rows each affected.
async fn decide(
    store: &dyn Store,
    webhook: &str,
    statements: Vec<Query>,
) -> Result<Vec<u64>, StoreError> {
    transaction(store, Some(webhook), statements).await
}

/// Runs `statements` in one transaction; on PostgreSQL READ COMMITTED (each statement
/// sees what committed before it, as separate statements would, and a row another
/// transaction changed meanwhile is re-checked rather than failing the transaction),
/// after taking `lock`'s budget lock if given.
async fn transaction(
    store: &dyn Store,
    lock: Option<&str>,
    statements: Vec<Query>,
) -> Result<Vec<u64>, StoreError> {
    let mut queries = Vec::with_capacity(statements.len() + 2);
    if store.engine() == crate::storage::Engine::Postgres {
        // `execute_all` begins REPEATABLE READ; changing it is allowed before any query.
        queries.push(Query::new(
            "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
            Vec::new(),
        ));
        if let Some(webhook) = lock {
            queries.push(Query::new(
                format!("SELECT pg_advisory_xact_lock({BUDGET_LOCK_SPACE}, hashtext(?))"),
                vec![Param::text(webhook)],
            ));
        }
    }
    let skip = queries.len();
    queries.extend(statements);
    let mut affected = store.execute_all(queries).await?;
    Ok(affected.split_off(skip.min(affected.len())))
}

/// What one claim of pending rows did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claim {
    /// The rows to post now (within the budget).
    pub rows: Vec<Claimed>,
    /// Rows marked suppressed because the budget was used up.
    pub suppressed: u64,
}

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
    if store.engine() == crate::storage::Engine::Postgres {
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
    if store.engine() == crate::storage::Engine::Postgres {
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

/// One decision on `webhook`'s budget at `now_ms`: when `limit` is used up, up to
/// `suppress_at_most` due rows are marked suppressed (for a later summary) and nothing
/// is claimed; otherwise up to the budget (at most `claim_at_most`) due rows are claimed
/// for `owner` until `lease_until_ms`.
#[allow(clippy::too_many_arguments)]
pub async fn claim_pending(
    store: &dyn Store,
    webhook: &str,
    owner: &str,
    limit: Limit,
    now_ms: i64,
    lease_until_ms: i64,
    claim_at_most: usize,
    suppress_at_most: usize,
) -> Result<Claim, StoreError> {
    let due = "SELECT id FROM notify_outbox WHERE webhook = ? AND state = 'pending' \
               AND next_attempt_ms <= ? AND lease_until_ms <= ?";
    let due_params = || vec![Param::text(webhook), Param::int(now_ms), Param::int(now_ms)];
    let recheck = "state = 'pending' AND lease_until_ms <= ?";
    let suppress = Query::new(
        claim_sql(
            store,
            "state = 'suppressed', updated_at_ms = ?",
            &format!("{due} AND {USED_SQL} >= ? ORDER BY id LIMIT ?"),
            recheck,
        ),
        claim_params(
            store,
            vec![Param::int(now_ms)],
            [
                due_params(),
                used_params(webhook, limit, now_ms),
                vec![
                    Param::int(i64::from(limit.messages)),
                    Param::int(i64::try_from(suppress_at_most).unwrap_or(i64::MAX)),
                ],
            ]
            .concat(),
            vec![Param::int(now_ms)],
        ),
    );
    let claim = Query::new(
        claim_sql(
            store,
            "lease_owner = ?, lease_until_ms = ?",
            &format!("{due} ORDER BY id LIMIT {}", budget_sql()),
            recheck,
        ),
        claim_params(
            store,
            vec![Param::text(owner), Param::int(lease_until_ms)],
            [
                due_params(),
                budget_params(webhook, limit, now_ms, claim_at_most),
            ]
            .concat(),
            vec![Param::int(now_ms)],
        ),
    );
    let affected = decide(store, webhook, vec![suppress, claim]).await?;
    let suppressed = affected.first().copied().unwrap_or(0);
    if affected.get(1).copied().unwrap_or(0) == 0 {
        return Ok(Claim {
            rows: Vec::new(),
            suppressed,
        });
    }
    let rows = store
        .query(Query::new(
            "SELECT o.id, o.attempts, m.id, m.host_id, m.vm_uuid, m.vm_name, m.kind, \
             m.captured_at_ms, m.killed_pid, m.killed_comm, m.killed_anon_rss_kb, \
             m.report_kind, m.report_verdict, m.corr_verdict, m.balloon_held_kb, \
             m.correlation_json \
             FROM notify_outbox o LEFT JOIN ooms m ON m.id = o.oom_id \
             WHERE o.lease_owner = ? AND o.state = 'pending' ORDER BY o.id",
            vec![Param::text(owner)],
        ))
        .await?;
    let rows = rows
        .iter()
        .map(|row| Claimed {
            outbox_id: row.int_or_zero(0),
            attempts: row.int_or_zero(1),
            notice: row.int(2).map(|oom_id| OomNotice {
                oom_id,
                host: row.text_or_empty(3),
                vm_uuid: row.text_or_empty(4),
                vm_name: row.text_or_empty(5),
                kind: OomKind::parse(&row.text_or_empty(6)),
                captured_at_ms: row.int_or_zero(7),
                killed_pid: row.int(8),
                killed_comm: row.text(9),
                killed_anon_rss_kb: row.int(10),
                report_kind: ReportKind::parse(&row.text_or_empty(11)),
                report_verdict: ReportVerdict::parse(&row.text_or_empty(12)),
                corr_verdict: CorrelationVerdict::parse(&row.text_or_empty(13)),
                balloon_held_kb: row.int(14),
                correlation_json: row.text_or_empty(15),
            }),
        })
        .collect();
    Ok(Claim { rows, suppressed })
}

/// Logs a message posted to `webhook` at `now_ms` (`kind`: oom, summary, failed).
fn log_message(webhook: &str, kind: &str, now_ms: i64) -> Query {
    Query::new(
        "INSERT INTO notify_messages (webhook, kind, sent_at_ms) VALUES (?, ?, ?)",
        vec![Param::text(webhook), Param::text(kind), Param::int(now_ms)],
    )
}

fn mark_query(outbox_id: i64, owner: &str, state: &str, now_ms: i64, error: Option<&str>) -> Query {
    Query::new(
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
    )
}

/// A claimed row was posted and accepted: logged against `webhook`'s limit and marked
/// `sent` in one transaction (the message counts even if the lease was taken over).
pub async fn mark_sent(
    store: &dyn Store,
    webhook: &str,
    outbox_id: i64,
    owner: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    transaction(
        store,
        None,
        vec![
            mark_query(outbox_id, owner, "sent", now_ms, None),
            log_message(webhook, "oom", now_ms),
        ],
    )
    .await
    .map(|_| ())
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
        .execute(mark_query(outbox_id, owner, state, now_ms, error))
        .await
        .map(|_| ())
}

/// After a failed post to `webhook` (logged against its limit: the receiver may have
/// taken it): every row still claimed by `owner` counts one more attempt; those at
/// `max_attempts` become `failed`, the others wait until `next_attempt_ms`. One
/// transaction. Returns how many were given up.
pub async fn record_failure(
    store: &dyn Store,
    webhook: &str,
    owner: &str,
    max_attempts: u32,
    next_attempt_ms: i64,
    now_ms: i64,
    error: &str,
) -> Result<u64, StoreError> {
    let affected = transaction(
        store,
        None,
        vec![
            Query::new(
                "UPDATE notify_outbox SET state = 'failed', attempts = attempts + 1, \
                 lease_owner = NULL, lease_until_ms = 0, last_error = ?, updated_at_ms = ? \
                 WHERE lease_owner = ? AND state = 'pending' AND attempts + 1 >= ?",
                vec![
                    Param::text(error),
                    Param::int(now_ms),
                    Param::text(owner),
                    Param::int(i64::from(max_attempts)),
                ],
            ),
            Query::new(
                "UPDATE notify_outbox SET attempts = attempts + 1, next_attempt_ms = ?, \
                 lease_owner = NULL, lease_until_ms = 0, last_error = ?, updated_at_ms = ? \
                 WHERE lease_owner = ? AND state = 'pending'",
                vec![
                    Param::int(next_attempt_ms),
                    Param::text(error),
                    Param::int(now_ms),
                    Param::text(owner),
                ],
            ),
            log_message(webhook, "failed", now_ms),
        ],
    )
    .await?;
    Ok(affected.first().copied().unwrap_or(0))
}

/// Claims every suppressed row of `webhook` for one summary, if `limit` allows one
/// more message at `now_ms` (one decision on the budget); returns how many.
pub async fn claim_suppressed(
    store: &dyn Store,
    webhook: &str,
    owner: &str,
    limit: Limit,
    now_ms: i64,
    lease_until_ms: i64,
) -> Result<u64, StoreError> {
    let sql = claim_sql(
        store,
        "lease_owner = ?, lease_until_ms = ?",
        &format!(
            "SELECT id FROM notify_outbox WHERE webhook = ? AND state = 'suppressed' \
             AND lease_until_ms <= ? AND {USED_SQL} < ?"
        ),
        "state = 'suppressed' AND lease_until_ms <= ?",
    );
    let params = claim_params(
        store,
        vec![Param::text(owner), Param::int(lease_until_ms)],
        [
            vec![Param::text(webhook), Param::int(now_ms)],
            used_params(webhook, limit, now_ms),
            vec![Param::int(i64::from(limit.messages))],
        ]
        .concat(),
        vec![Param::int(now_ms)],
    );
    let affected = decide(store, webhook, vec![Query::new(sql, params)]).await?;
    Ok(affected.first().copied().unwrap_or(0))
}

/// How a summary names a verdict: its wire name, `deleted` for OOMs deleted since.
pub fn verdict_name(verdict: Option<CorrelationVerdict>) -> &'static str {
    verdict.map_or("deleted", CorrelationVerdict::as_str)
}

/// What the suppressed rows claimed by `owner` were about.
pub async fn summarize(store: &dyn Store, owner: &str) -> Result<SuppressedSummary, StoreError> {
    let rows = store
        .query(Query::new(
            "SELECT m.corr_verdict, COUNT(*), MIN(m.captured_at_ms), \
             MAX(m.captured_at_ms) FROM notify_outbox o LEFT JOIN ooms m ON m.id = o.oom_id \
             WHERE o.lease_owner = ? AND o.state = 'suppressed' \
             GROUP BY m.corr_verdict",
            vec![Param::text(owner)],
        ))
        .await?;
    let mut summary = SuppressedSummary::default();
    for row in &rows {
        let n = row.int_or_zero(1);
        summary.count += n;
        let verdict = row.text(0).map(|text| CorrelationVerdict::parse(&text));
        summary.by_verdict.push((verdict, n));
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
    summary.by_verdict.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then_with(|| verdict_name(a.0).cmp(verdict_name(b.0)))
    });
    Ok(summary)
}

/// A summary of the rows claimed by `owner` was accepted: logged against `webhook`'s
/// limit and the rows marked summed up, in one transaction.
pub async fn mark_summarized(
    store: &dyn Store,
    webhook: &str,
    owner: &str,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let affected = transaction(
        store,
        None,
        vec![
            Query::new(
                "UPDATE notify_outbox SET state = 'summarized', lease_owner = NULL, \
                 lease_until_ms = 0, updated_at_ms = ? \
                 WHERE lease_owner = ? AND state = 'suppressed'",
                vec![Param::int(now_ms), Param::text(owner)],
            ),
            log_message(webhook, "summary", now_ms),
        ],
    )
    .await?;
    Ok(affected.first().copied().unwrap_or(0))
}

/// A summary post failed: logged against `webhook`'s limit (the receiver may have
/// taken it) and its rows given back, in one transaction.
pub async fn summary_failed(
    store: &dyn Store,
    webhook: &str,
    owner: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    transaction(
        store,
        None,
        vec![release_query(owner), log_message(webhook, "failed", now_ms)],
    )
    .await
    .map(|_| ())
}

fn release_query(owner: &str) -> Query {
    Query::new(
        "UPDATE notify_outbox SET lease_owner = NULL, lease_until_ms = 0 WHERE lease_owner = ?",
        vec![Param::text(owner)],
    )
}

/// Gives back what `owner` still holds (rows keep their state and attempts).
pub async fn release(store: &dyn Store, owner: &str) -> Result<u64, StoreError> {
    store.execute(release_query(owner)).await
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

/// Deletes up to `batch_rows` logged messages sent before `before_ms` (callers pass a
/// time older than any rate-limit window: `keep_days` is at least the longest window).
pub async fn delete_messages(
    store: &dyn Store,
    before_ms: i64,
    batch_rows: u32,
) -> Result<u64, StoreError> {
    store
        .execute(Query::new(
            "DELETE FROM notify_messages WHERE id IN (SELECT id FROM notify_messages \
             WHERE sent_at_ms < ? LIMIT ?)",
            vec![Param::int(before_ms), Param::int(i64::from(batch_rows))],
        ))
        .await
}

/// Messages logged for `webhook` since `since_ms` by kind: (kind, count).
pub async fn messages_since(
    store: &dyn Store,
    webhook: &str,
    since_ms: i64,
) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = store
        .query(Query::new(
            "SELECT kind, COUNT(*) FROM notify_messages WHERE webhook = ? AND sent_at_ms >= ? \
             GROUP BY kind ORDER BY kind",
            vec![Param::text(webhook), Param::int(since_ms)],
        ))
        .await?;
    Ok(rows
        .iter()
        .map(|row| (row.text_or_empty(0), row.int_or_zero(1)))
        .collect())
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
