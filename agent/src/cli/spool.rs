//! `spool replay-dead-letters [--config FILE]`: the dead-lettered events handed
//! back to the agent for delivery.

use std::path::Path;

use anyhow::Context;

use super::load_settings;

/// `spool replay-dead-letters`: the dead letters queued for the running agent.
pub fn replay_dead_letters(config: Option<&Path>) -> anyhow::Result<()> {
    let settings = load_settings(config)?;
    let spool_dir = settings.state_dir.join("spool");
    if !spool_dir.is_dir() {
        println!("No spool at {}: nothing to replay.", spool_dir.display());
        return Ok(());
    }
    let queued = crate::spool::replay::queue_dead_letters(&spool_dir).with_context(|| {
        format!(
            "Failed to replay the dead letters in {}",
            spool_dir.display()
        )
    })?;
    if queued.entries == 0 {
        println!("No dead letters in {}.", spool_dir.display());
        return Ok(());
    }
    println!(
        "{} dead-lettered events handed to the agent for delivery ({}); the running agent sends them within seconds, a stopped one when it starts.",
        queued.events,
        queued
            .inbox_file
            .as_deref()
            .map_or_else(|| "-".to_string(), |path| path.display().to_string())
    );
    if queued.unreplayable > 0 {
        println!(
            "{} entries kept only their keys (too large) or do not decode: left in {}.",
            queued.unreplayable,
            spool_dir.join("dead-letter.unreplayable.jsonl").display()
        );
    }
    Ok(())
}
