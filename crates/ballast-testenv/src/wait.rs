//! The one way ballast's tests wait for something to happen: poll an observable
//! condition until it holds or a deadline passes, then fail naming what never came.
//! Never a fixed sleep: a busy 2-core CI machine makes any fixed pause too short
//! one day, and a quiet one makes it too long every day.
//!
//! The check returns `bool` (done or not) or `Option<T>` (the value, once there).

use std::time::{Duration, Instant};

/// The first pause between two checks; it doubles up to [`MAX_PAUSE`], so a condition
/// that holds at once costs nothing and a slow one costs a check every 200 ms.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause between two checks.
const MAX_PAUSE: Duration = Duration::from_millis(200);

/// What a check returns: done (`true`, `Some(value)`) or not yet.
pub trait Outcome {
    /// What the wait returns once the check is done.
    type Value;
    /// `Some` once done.
    fn done(self) -> Option<Self::Value>;
}

impl Outcome for bool {
    type Value = ();
    fn done(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn done(self) -> Option<T> {
        self
    }
}

/// Polls `check` until it is done and returns its value; panics with `what` after
/// `timeout`. For tests on plain threads (it sleeps the thread between checks).
pub fn wait_until<R: Outcome>(what: &str, timeout: Duration, check: impl FnMut() -> R) -> R::Value {
    wait_until_showing(what, timeout, check, String::new)
}

/// [`wait_until`] whose timeout message also shows `detail()`: what the test saw last
/// (a log, an answer), computed only when the wait fails.
pub fn wait_until_showing<R: Outcome>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> R,
    detail: impl FnOnce() -> String,
) -> R::Value {
    let mut waiting = Waiting::new(what, timeout);
    loop {
        if let Some(value) = check().done() {
            return value;
        }
        match waiting.next_pause() {
            Some(pause) => std::thread::sleep(pause),
            None => waiting.fail(&detail()),
        }
    }
}

/// [`wait_until`] for async tests: the check is async (`async || ...`) and the pause
/// between checks yields to the runtime (tokio) instead of blocking its thread.
pub async fn wait_until_async<R: Outcome>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> R,
) -> R::Value {
    let mut waiting = Waiting::new(what, timeout);
    loop {
        if let Some(value) = check().await.done() {
            return value;
        }
        match waiting.next_pause() {
            Some(pause) => tokio::time::sleep(pause).await,
            None => waiting.fail(""),
        }
    }
}

/// The deadline and the growing pause of one wait.
struct Waiting<'a> {
    what: &'a str,
    timeout: Duration,
    started: Instant,
    pause: Duration,
}

impl<'a> Waiting<'a> {
    fn new(what: &'a str, timeout: Duration) -> Self {
        Waiting {
            what,
            timeout,
            started: Instant::now(),
            pause: FIRST_PAUSE,
        }
    }

    /// The pause before the next check; `None` once the deadline has passed.
    fn next_pause(&mut self) -> Option<Duration> {
        let left = self.timeout.checked_sub(self.started.elapsed())?;
        if left.is_zero() {
            return None;
        }
        let pause = self.pause.min(left);
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        Some(pause)
    }

    /// Panics naming what never came, and `detail` when there is one.
    fn fail(&self, detail: &str) -> ! {
        let separator = if detail.is_empty() { "" } else { ":\n" };
        panic!(
            "timed out after {:.1?} (limit {:?}) waiting for {}{separator}{detail}",
            self.started.elapsed(),
            self.timeout,
            self.what
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn returns_the_value_once_the_check_is_done() {
        let calls = Cell::new(0);
        let value = wait_until("the third call", Duration::from_secs(5), || {
            calls.set(calls.get() + 1);
            (calls.get() == 3).then_some("third")
        });
        assert_eq!((value, calls.get()), ("third", 3));
    }

    #[test]
    #[should_panic(expected = "waiting for a condition that never holds")]
    fn panics_naming_what_never_came() {
        wait_until(
            "a condition that never holds",
            Duration::from_millis(50),
            || false,
        );
    }

    #[test]
    #[should_panic(expected = "waiting for the word:\nthe log said nothing")]
    fn a_failed_wait_shows_what_the_test_saw_last() {
        wait_until_showing(
            "the word",
            Duration::from_millis(50),
            || false,
            || "the log said nothing".to_string(),
        );
    }

    #[tokio::test]
    async fn the_async_wait_returns_once_an_async_check_is_done() {
        let mut calls = 0;
        wait_until_async("the second call", Duration::from_secs(5), async || {
            calls += 1;
            calls == 2
        })
        .await;
        assert_eq!(calls, 2);
    }
}
