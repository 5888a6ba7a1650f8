//! `status [--config FILE] [--json]`: the running agent's table of VMs (its
//! status file) and whether delivery to the collector is held.

use std::path::Path;

use anyhow::Context;

use super::load_settings;
use crate::paths;
use crate::sink;
use crate::status::Status;

/// `status`: the table (or `--json`) of the running agent's status file.
pub fn status(config: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let settings = load_settings(config)?;
    let path = settings.state_dir.join(paths::STATUS_FILE_NAME);
    let mut status = Status::read(&path).with_context(|| {
        format!(
            "No status at {} (is `ballast-agent run` running?)",
            path.display()
        )
    })?;
    // Without a collector there is no sender (a file from an earlier one is stale).
    if !settings.collector.url.trim().is_empty() {
        status.delivery =
            sink::DeliveryState::read(&settings.state_dir.join(paths::DELIVERY_FILE_NAME)).ok();
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.table(std::time::SystemTime::now()));
    }
    Ok(())
}
