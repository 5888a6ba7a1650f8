//! systemd notifications (`Type=notify` units): readiness, reload and stop states and
//! watchdog pings. A no-op when systemd did not start the process (`$NOTIFY_SOCKET`
//! unset); a failed notification is a warning, never an exit.

pub use sd_notify::NotifyState;

/// Sends states to systemd when it started us with `Type=notify` (else a no-op).
pub fn notify(state: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(state) {
        tracing::warn!(%error, "Failed to notify systemd.");
    }
}
