//! What the monitor loop is told from outside: [`MonitorCommand`], sent through a
//! [`MonitorCommands`] handle (the SIGHUP/SIGTERM task, tests) and taken by the
//! monitor between two ticks, or at once while it sleeps.

use std::sync::mpsc::{Receiver, Sender};

use crate::config::Settings;

/// One thing the monitor loop reacts to.
#[derive(Debug, Clone)]
pub enum MonitorCommand {
    /// The configuration was re-read and validated as a whole (SIGHUP): take over
    /// its live fields ([`crate::reload::apply_live`]).
    Reload(Box<Settings>),
    /// Finish: wait briefly for guest agent calls under way, emit what capture
    /// still holds, save capture state, and return from [`super::Monitor::run`].
    Stop,
}

/// The sending side of a monitor's commands; cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct MonitorCommands {
    sender: Sender<MonitorCommand>,
}

impl MonitorCommands {
    /// A new command channel: the handle and the monitor's receiving end.
    pub(super) fn channel() -> (Self, Receiver<MonitorCommand>) {
        let (sender, receiver) = std::sync::mpsc::channel();
        (Self { sender }, receiver)
    }

    /// Hands `command` to the monitor; a monitor that has returned needs nothing.
    pub fn send(&self, command: MonitorCommand) {
        let _ = self.sender.send(command);
    }

    /// [`MonitorCommand::Stop`].
    pub fn stop(&self) {
        self.send(MonitorCommand::Stop);
    }

    /// [`MonitorCommand::Reload`] with the new settings.
    pub fn reload(&self, settings: Settings) {
        self.send(MonitorCommand::Reload(Box::new(settings)));
    }
}
