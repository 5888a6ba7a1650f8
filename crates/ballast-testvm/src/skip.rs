//! How tests get the lab: fail loudly in CI, skip loudly (and counted) elsewhere.

use crate::lab::Lab;
use crate::settings::in_ci;

/// The lab, or `None` (after a loud message) when this machine cannot run real
/// guests and this is not CI. In CI (`CI=true`) it panics with the reason instead.
///
/// ```no_run
/// let Some(lab) = ballast_testvm::lab_or_skip("my_test") else { return };
/// ```
pub fn lab_or_skip(test: &str) -> Option<&'static Lab> {
    match Lab::get() {
        Ok(lab) => Some(lab),
        Err(error) if in_ci() => panic!("{test}: the real-VM lab is required in CI: {error}"),
        Err(error) => {
            // Loud on stderr and counted by scripts/test.sh (BALLAST_SKIP_LOG).
            ballast_testenv::skip(
                test,
                &format!("this machine cannot run real guests: {error}"),
            );
            None
        }
    }
}
