//! Where the monitor's events go: [`EventOutlet`], with the production
//! [`SpoolOutlet`] (the durable spool, whose events the sender in [`crate::sink`]
//! delivers) and [`JsonLinesOutlet`] (a JSON-lines file: no collector, and tests).

use std::path::PathBuf;

use ballast_model::Envelope;

use crate::metrics::AgentCounters;
use crate::shared::SharedLock;

/// Where the monitor puts every event it makes (the durable spool, or a file in tests).
pub trait EventOutlet: Send {
    /// Stores one event durably before returning; an error is logged and counted.
    fn emit(&mut self, envelope: Envelope) -> Result<(), std::io::Error>;
}

/// Appends events as JSON lines to a file (no collector configured, and tests).
pub struct JsonLinesOutlet {
    path: PathBuf,
}

impl JsonLinesOutlet {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }
}

impl EventOutlet for JsonLinesOutlet {
    fn emit(&mut self, envelope: Envelope) -> Result<(), std::io::Error> {
        use std::io::Write;
        let mut line = serde_json::to_vec(&envelope).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(&line)?;
        file.sync_data()
    }
}

/// The production outlet: every event into the durable spool (the sender delivers it),
/// and optionally a copy into a JSON-lines journal for debugging.
pub struct SpoolOutlet {
    spool: crate::spool::SpoolHandle,
    journal: Option<JsonLinesOutlet>,
    counters: SharedLock<AgentCounters>,
}

impl SpoolOutlet {
    pub fn new(
        spool: crate::spool::SpoolHandle,
        journal: Option<PathBuf>,
        counters: SharedLock<AgentCounters>,
    ) -> Self {
        Self {
            spool,
            journal: journal.map(JsonLinesOutlet::new),
            counters,
        }
    }
}

impl EventOutlet for SpoolOutlet {
    fn emit(&mut self, envelope: Envelope) -> Result<(), std::io::Error> {
        if let Some(journal) = self.journal.as_mut() {
            journal.emit(envelope.clone())?;
        }
        let outcome = self.spool.push_blocking(&envelope);
        let stats = self.spool.stats();
        {
            let mut counters = self.counters.lock();
            counters.spool_bytes = stats.bytes;
            counters.spool_events = stats.events;
            counters.dropped_rollups = stats.rollups_lost();
        }
        match outcome {
            Ok(_) => Ok(()),
            Err(error) => Err(std::io::Error::other(error)),
        }
    }
}
