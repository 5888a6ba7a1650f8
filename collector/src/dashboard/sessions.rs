//! Dashboard login sessions, held in this process's memory.
//!
//! `/login` with the right token creates a session: a random 256-bit id (the
//! cookie's value; the cookie carries nothing derived from the token), the
//! SHA-256 of the token it was created with, and an expiry
//! (`dashboard.session_hours`). A session is valid until it expires, until
//! `/logout` ends it, or as soon as the dashboard token differs from the one it
//! was created with (a reload with a new token ends every session).
//!
//! Why memory and not the store: a session is cheap to lose (the user logs in
//! again), the table needs no migration on either engine, and nothing on disk
//! can be replayed. Collectors sharing one PostgreSQL store behind a load balancer
//! do not share sessions: use sticky sessions there, or basic/bearer auth, or
//! `auth: {type: proxy}` (docs/dashboard.md). At most [`MAX_SESSIONS`] are kept:
//! expired ones are dropped first, then the ones closest to expiry.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::auth::{constant_time_eq, token_sha256, RandomError};

/// Sessions kept at most.
pub const MAX_SESSIONS: usize = 10_000;

#[derive(Debug)]
struct Session {
    /// SHA-256 of the token the session was created with.
    token_sha256: String,
    expires_at: Instant,
}

/// The live sessions; one per process, kept across reloads.
#[derive(Debug, Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new session for a login with `token` at `now`, valid for `lifetime`: its id.
    pub fn create(
        &self,
        token: &str,
        now: Instant,
        lifetime: Duration,
    ) -> Result<String, RandomError> {
        let id = crate::auth::random_hex(32)?;
        let mut sessions = self.map();
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, session| session.expires_at > now);
        }
        while sessions.len() >= MAX_SESSIONS {
            let Some(soonest) = sessions
                .iter()
                .min_by_key(|(_, session)| session.expires_at)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            sessions.remove(&soonest);
        }
        sessions.insert(
            id.clone(),
            Session {
                token_sha256: token_sha256(token),
                expires_at: now + lifetime,
            },
        );
        Ok(id)
    }

    /// Whether `id` is a live session for the current dashboard `token` at `now`.
    /// An expired session, or one of another token, is removed.
    pub fn is_valid(&self, id: &str, token: &str, now: Instant) -> bool {
        let mut sessions = self.map();
        let Some(session) = sessions.get(id) else {
            return false;
        };
        if session.expires_at <= now
            || !constant_time_eq(&session.token_sha256, &token_sha256(token))
        {
            sessions.remove(id);
            return false;
        }
        true
    }

    /// Ends session `id` (logout); false when there was none.
    pub fn end(&self, id: &str) -> bool {
        self.map().remove(id).is_some()
    }

    /// Sessions held now (expired ones included until they are next looked at).
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "dashboard-token-0123456789";

    #[test]
    fn a_session_expires_after_its_lifetime() {
        let sessions = Sessions::new();
        let start = Instant::now();
        let id = sessions
            .create(TOKEN, start, Duration::from_secs(12 * 3600))
            .expect("random");
        assert_eq!(id.len(), 64);
        assert!(sessions.is_valid(&id, TOKEN, start + Duration::from_secs(11 * 3600)));
        assert!(!sessions.is_valid(&id, TOKEN, start + Duration::from_secs(12 * 3600)));
        assert!(sessions.is_empty(), "the expired session is dropped");
    }

    #[test]
    fn logout_and_a_new_token_end_sessions() {
        let sessions = Sessions::new();
        let now = Instant::now();
        let day = Duration::from_secs(86_400);
        let a = sessions.create(TOKEN, now, day).expect("random");
        let b = sessions.create(TOKEN, now, day).expect("random");
        assert_ne!(a, b);
        assert!(sessions.end(&a));
        assert!(!sessions.is_valid(&a, TOKEN, now));
        assert!(sessions.is_valid(&b, TOKEN, now));
        assert!(!sessions.is_valid(&b, "another-token-0123456789", now));
        assert!(
            !sessions.is_valid(&b, TOKEN, now),
            "gone, even if the old token comes back"
        );
        assert!(!sessions.is_valid("", TOKEN, now));
    }

    #[test]
    fn the_table_stays_bounded_dropping_the_soonest_to_expire() {
        let sessions = Sessions::new();
        let now = Instant::now();
        let first = sessions
            .create(TOKEN, now, Duration::from_secs(1))
            .expect("random");
        for _ in 0..MAX_SESSIONS {
            sessions
                .create(TOKEN, now, Duration::from_secs(3600))
                .expect("random");
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(!sessions.is_valid(&first, TOKEN, now));
    }
}
