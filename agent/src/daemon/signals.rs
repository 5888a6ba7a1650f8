//! SIGTERM and SIGINT stop the agent; SIGHUP reloads its configuration
//! ([`super::reloader::Reloader`]), telling systemd RELOADING=1, then READY=1.

use anyhow::Context;

use super::reloader::Reloader;
use crate::systemd::{self, NotifyState};

/// SIGTERM, SIGINT and SIGHUP streams, installed before anything can send them.
pub(super) type Signals = (
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
);

pub(super) fn install_signals(runtime: &tokio::runtime::Runtime) -> anyhow::Result<Signals> {
    use tokio::signal::unix::{signal, SignalKind};
    let _context = runtime.enter();
    Ok((
        signal(SignalKind::terminate()).context("Failed to handle SIGTERM")?,
        signal(SignalKind::interrupt()).context("Failed to handle SIGINT")?,
        signal(SignalKind::hangup()).context("Failed to handle SIGHUP")?,
    ))
}

/// Reloads on SIGHUP; returns on SIGTERM or SIGINT.
pub(super) async fn handle_signals(signals: Signals, reloader: &mut Reloader) {
    let (mut terminate, mut interrupt, mut hangup) = signals;
    loop {
        tokio::select! {
            _ = terminate.recv() => return,
            _ = interrupt.recv() => return,
            _ = hangup.recv() => {
                systemd::notify(&[NotifyState::Reloading]);
                reloader.reload();
                systemd::notify(&[NotifyState::Ready, NotifyState::Status("Polling.")]);
            }
        }
    }
}
