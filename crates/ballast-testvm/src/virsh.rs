//! virsh calls, serialised against libvirtd restarts.
//!
//! Every call holds a read lock; [`crate::Lab::restart_libvirtd`] takes the write
//! lock, so no test's virsh call lands in the gap while the daemon is down.

use std::process::Command;
use std::sync::RwLock;

use crate::cmd;
use crate::error::Result;

/// The libvirt connection used by the harness.
#[derive(Debug)]
pub(crate) struct Virsh {
    pub uri: String,
    pub restart_lock: RwLock<()>,
}

impl Virsh {
    pub(crate) fn new(uri: String) -> Virsh {
        Virsh {
            uri,
            restart_lock: RwLock::new(()),
        }
    }

    /// Runs `virsh -c <uri> args...` and returns its stdout.
    pub(crate) fn run<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let _guard = self.restart_lock.read().unwrap_or_else(|e| e.into_inner());
        let mut command = Command::new("virsh");
        command.arg("-c").arg(&self.uri).args(args);
        cmd::run_command(&mut command)
    }

    /// Names of all domains, running or not.
    pub(crate) fn all_domain_names(&self) -> Result<Vec<String>> {
        let out = self.run(["list", "--all", "--name"])?;
        Ok(out
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect())
    }
}

/// Parses `virsh domstats` output (`  balloon.current=524288`) into key/value pairs.
pub(crate) fn parse_domstats(text: &str) -> std::collections::BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| line.trim().split_once('='))
        .filter_map(|(key, value)| Some((key.to_owned(), value.parse().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domstats_keys_keep_their_prefix() {
        let text = "Domain: 'x'\n  balloon.current=524288\n  balloon.last-update=1795658493\n\n";
        let stats = parse_domstats(text);
        assert_eq!(stats.get("balloon.current"), Some(&524288));
        assert_eq!(stats.get("balloon.last-update"), Some(&1795658493));
        assert_eq!(stats.len(), 2);
    }
}
