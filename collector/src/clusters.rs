//! Clusters: named groups of hosts between which VMs migrate (a Proxmox VE cluster),
//! from the collector's own configuration (`clusters:`), never from a batch.
//!
//! A VM is (host, uuid). Within one cluster, the rows of the same uuid on the
//! cluster's hosts are one VM's history: a new OOM is judged with the balloon history
//! its VM had on any of them (a VM that just migrated keeps its past), and the
//! dashboard's VM page charts them together. Hosts outside the cluster never join
//! it, whatever they send: membership is what the operator configured.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A `clusters:` entry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error("clusters: a cluster name is empty")]
    EmptyName,
    #[error("clusters.{0}: lists no host")]
    NoHosts(String),
    #[error("clusters.{0}: a host name is empty")]
    EmptyHost(String),
    #[error("clusters: host {host:?} is listed in {first:?} and in {second:?} (a host belongs to one cluster)")]
    HostTwice {
        host: String,
        first: String,
        second: String,
    },
}

/// The checked `clusters:` map: each host's cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clusters {
    /// host -> (cluster name, the cluster's hosts in byte order).
    by_host: HashMap<String, (String, Arc<[String]>)>,
}

impl Clusters {
    /// Checks `clusters:` as written (cluster name -> host names).
    pub fn from_config(raw: &BTreeMap<String, Vec<String>>) -> Result<Self, ClusterError> {
        let mut by_host: HashMap<String, (String, Arc<[String]>)> = HashMap::new();
        for (name, hosts) in raw {
            if name.trim().is_empty() {
                return Err(ClusterError::EmptyName);
            }
            if hosts.is_empty() {
                return Err(ClusterError::NoHosts(name.clone()));
            }
            let mut members: Vec<String> = hosts.clone();
            if members.iter().any(|host| host.trim().is_empty()) {
                return Err(ClusterError::EmptyHost(name.clone()));
            }
            members.sort();
            if let Some(pair) = members.windows(2).find(|pair| pair[0] == pair[1]) {
                return Err(ClusterError::HostTwice {
                    host: pair[0].clone(),
                    first: name.clone(),
                    second: name.clone(),
                });
            }
            let members: Arc<[String]> = members.into();
            for host in members.iter() {
                if let Some((first, _)) = by_host.get(host) {
                    return Err(ClusterError::HostTwice {
                        host: host.clone(),
                        first: first.clone(),
                        second: name.clone(),
                    });
                }
                by_host.insert(host.clone(), (name.clone(), Arc::clone(&members)));
            }
        }
        Ok(Self { by_host })
    }

    /// The hosts whose rows of a uuid are the history of `host`'s VM of that uuid:
    /// its cluster's hosts (byte order), or `host` alone.
    pub fn history_hosts(&self, host: &str) -> Vec<String> {
        match self.by_host.get(host) {
            Some((_, members)) => members.to_vec(),
            None => vec![host.to_string()],
        }
    }

    /// The name of `host`'s cluster, if it is in one.
    pub fn cluster_of(&self, host: &str) -> Option<&str> {
        self.by_host.get(host).map(|(name, _)| name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        entries
            .iter()
            .map(|(name, hosts)| {
                (
                    (*name).to_string(),
                    hosts.iter().map(|h| (*h).to_string()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn a_host_in_a_cluster_shares_its_history_and_others_keep_their_own() {
        let clusters = Clusters::from_config(&raw(&[("prod", &["pve2", "pve1"])])).expect("ok");
        assert_eq!(clusters.history_hosts("pve1"), vec!["pve1", "pve2"]);
        assert_eq!(clusters.history_hosts("pve2"), vec!["pve1", "pve2"]);
        assert_eq!(clusters.history_hosts("lab"), vec!["lab"]);
        assert_eq!(clusters.cluster_of("pve2"), Some("prod"));
        assert_eq!(clusters.cluster_of("lab"), None);
    }

    #[test]
    fn bad_entries_are_refused_naming_the_cluster_and_host() {
        assert_eq!(
            Clusters::from_config(&raw(&[("a", &["pve1"]), ("b", &["pve1", "pve2"])])),
            Err(ClusterError::HostTwice {
                host: "pve1".into(),
                first: "a".into(),
                second: "b".into()
            })
        );
        assert_eq!(
            Clusters::from_config(&raw(&[("a", &["pve1", "pve1"])])),
            Err(ClusterError::HostTwice {
                host: "pve1".into(),
                first: "a".into(),
                second: "a".into()
            })
        );
        assert_eq!(
            Clusters::from_config(&raw(&[("a", &[])])),
            Err(ClusterError::NoHosts("a".into()))
        );
        assert_eq!(
            Clusters::from_config(&raw(&[("a", &[" "])])),
            Err(ClusterError::EmptyHost("a".into()))
        );
        assert_eq!(
            Clusters::from_config(&raw(&[("", &["pve1"])])),
            Err(ClusterError::EmptyName)
        );
    }
}
