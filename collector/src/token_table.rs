//! The ingest-token table held in memory, so that a bad token costs no store read.
//!
//! The store's `tokens` table (one row per host: host, SHA-256 of its token) is
//! loaded whole: at the first request, again once it is older than [`MAX_AGE`] (so
//! a revoked token stops working within that time), and when a token is not in it
//! (one created a moment ago by `token create`). Those miss-driven loads have a
//! small budget shared by every client ([`MISS_LOADS_BURST`], then
//! [`MISS_LOADS_PER_SEC`]); a hash that a load newer than its request did not find
//! is remembered as bad ([`BAD_CAPACITY`] entries, for [`BAD_TTL`]) and answered
//! from memory. Loads are single-flight: concurrent misses wait for one load and
//! use it when it began after they arrived.
//!
//! So a client sending random tokens as fast as it can costs at most one table
//! load per second, whatever its rate; a new token works at once unless such a
//! flood is draining the budget, and then at the agent's next try.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::metrics::AuthStats;
use crate::storage::{queries, Store, StoreError};

/// A loaded table is reloaded once it is this old (the revocation delay).
pub const MAX_AGE: Duration = Duration::from_secs(10);
/// Loads a burst of unknown tokens may cause at once ...
pub const MISS_LOADS_BURST: f64 = 5.0;
/// ... and per second after that.
pub const MISS_LOADS_PER_SEC: f64 = 1.0;
/// Bad token hashes remembered at most (the set is cleared when full).
pub const BAD_CAPACITY: usize = 4096;
/// How long a bad token hash is remembered.
pub const BAD_TTL: Duration = Duration::from_secs(600);

#[derive(Debug)]
struct Snapshot {
    /// Token hash -> host.
    hosts: HashMap<String, String>,
    /// When the read that filled it began.
    loaded_at: Instant,
}

#[derive(Debug)]
struct Budget {
    tokens: f64,
    refilled_at: Instant,
}

/// The in-memory token table; one per process, kept across reloads.
#[derive(Debug)]
pub struct TokenTable {
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    loading: tokio::sync::Mutex<()>,
    budget: Mutex<Budget>,
    bad: Mutex<HashMap<String, Instant>>,
    stats: Arc<AuthStats>,
}

impl TokenTable {
    /// An empty table (loaded at the first request) counting its loads in `stats`.
    pub fn new(stats: Arc<AuthStats>) -> Self {
        Self {
            snapshot: RwLock::new(None),
            loading: tokio::sync::Mutex::new(()),
            budget: Mutex::new(Budget {
                tokens: MISS_LOADS_BURST,
                refilled_at: Instant::now(),
            }),
            bad: Mutex::new(HashMap::new()),
            stats,
        }
    }

    /// How many times the table was read from the store.
    pub fn loads(&self) -> u64 {
        self.stats.token_table_loads.load(Ordering::Relaxed)
    }

    fn current(&self) -> Option<Arc<Snapshot>> {
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The host of `hash` from the table in memory, without any store read
    /// (`None` also when the table is missing or too old).
    pub fn cached(&self, hash: &str) -> Option<String> {
        let snapshot = self.current()?;
        if snapshot.loaded_at.elapsed() >= MAX_AGE {
            return None;
        }
        snapshot.hosts.get(hash).cloned()
    }

    /// The host `hash` belongs to, reading the store only as the module doc says.
    pub async fn host_for(
        &self,
        store: &dyn Store,
        hash: &str,
    ) -> Result<Option<String>, StoreError> {
        let asked_at = Instant::now();
        let snapshot = match self.current() {
            Some(snapshot) if snapshot.loaded_at.elapsed() < MAX_AGE => snapshot,
            _ => self.load_since(store, asked_at).await?,
        };
        if let Some(host) = snapshot.hosts.get(hash) {
            return Ok(Some(host.clone()));
        }
        if snapshot.loaded_at >= asked_at {
            self.remember_bad(hash, asked_at);
            return Ok(None);
        }
        if self.is_known_bad(hash, asked_at) || !self.take_budget(asked_at) {
            return Ok(None);
        }
        let snapshot = self.load_since(store, asked_at).await?;
        match snapshot.hosts.get(hash) {
            Some(host) => Ok(Some(host.clone())),
            None => {
                self.remember_bad(hash, asked_at);
                Ok(None)
            }
        }
    }

    /// A table whose read began at or after `asked_at`: one another request
    /// loaded meanwhile, or a new load.
    async fn load_since(
        &self,
        store: &dyn Store,
        asked_at: Instant,
    ) -> Result<Arc<Snapshot>, StoreError> {
        let _loading = self.loading.lock().await;
        if let Some(snapshot) = self.current() {
            if snapshot.loaded_at >= asked_at {
                return Ok(snapshot);
            }
        }
        let loaded_at = Instant::now();
        let rows = queries::all_token_hashes(store).await?;
        self.stats.token_table_loads.fetch_add(1, Ordering::Relaxed);
        let snapshot = Arc::new(Snapshot {
            hosts: rows.into_iter().map(|(host, hash)| (hash, host)).collect(),
            loaded_at,
        });
        *self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&snapshot));
        Ok(snapshot)
    }

    fn take_budget(&self, now: Instant) -> bool {
        let mut budget = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(budget.refilled_at);
        budget.tokens =
            (budget.tokens + elapsed.as_secs_f64() * MISS_LOADS_PER_SEC).min(MISS_LOADS_BURST);
        budget.refilled_at = now.max(budget.refilled_at);
        if budget.tokens < 1.0 {
            return false;
        }
        budget.tokens -= 1.0;
        true
    }

    fn is_known_bad(&self, hash: &str, now: Instant) -> bool {
        let bad = self.bad.lock().unwrap_or_else(PoisonError::into_inner);
        bad.get(hash)
            .is_some_and(|seen| now.saturating_duration_since(*seen) < BAD_TTL)
    }

    fn remember_bad(&self, hash: &str, now: Instant) {
        let mut bad = self.bad.lock().unwrap_or_else(PoisonError::into_inner);
        if bad.len() >= BAD_CAPACITY && !bad.contains_key(hash) {
            bad.retain(|_, seen| now.saturating_duration_since(*seen) < BAD_TTL);
            if bad.len() >= BAD_CAPACITY {
                bad.clear();
            }
        }
        bad.insert(hash.to_string(), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token_sha256;
    use crate::storage::sqlite::SqliteStore;

    #[tokio::test]
    async fn unknown_tokens_cost_at_most_the_miss_budget_and_new_tokens_are_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("c.sqlite"))
            .await
            .expect("open");
        queries::put_token(&store, "pve1", &token_sha256("blt_good"), 1, false)
            .await
            .expect("token");
        let table = TokenTable::new(Arc::default());
        assert_eq!(
            table
                .host_for(&store, &token_sha256("blt_good"))
                .await
                .expect("lookup"),
            Some("pve1".into())
        );
        assert_eq!(table.loads(), 1, "the first request loads the table");
        for n in 0..1000 {
            let hash = token_sha256(&format!("blt_bad{n}"));
            assert_eq!(table.host_for(&store, &hash).await.expect("lookup"), None);
        }
        assert!(
            table.loads() <= 1 + MISS_LOADS_BURST as u64 + 2,
            "1000 bad tokens caused {} loads",
            table.loads()
        );
        // A token created now is found by the next miss-driven load. The scenario: a
        // second passes, so the miss budget (one load a second) has a load again.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        queries::put_token(&store, "pve2", &token_sha256("blt_new"), 2, false)
            .await
            .expect("token");
        assert_eq!(
            table
                .host_for(&store, &token_sha256("blt_new"))
                .await
                .expect("lookup"),
            Some("pve2".into())
        );
        // The same bad token again: answered from memory.
        let loads = table.loads();
        let bad = token_sha256("blt_bad1");
        for _ in 0..100 {
            assert_eq!(table.host_for(&store, &bad).await.expect("lookup"), None);
        }
        assert_eq!(table.loads(), loads);
    }

    #[test]
    fn the_bad_set_stays_bounded() {
        let table = TokenTable::new(Arc::default());
        let now = Instant::now();
        for n in 0..(BAD_CAPACITY * 2 + 3) {
            table.remember_bad(&format!("h{n}"), now);
        }
        let len = table.bad.lock().expect("lock").len();
        assert!(len <= BAD_CAPACITY, "{len}");
    }
}
