//! Which hypervisor backend `run` uses (`backend: auto` looks for libvirt's
//! socket, then Proxmox VE's directories), and its start-up check.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::config::{BackendChoice, Settings};
use crate::hypervisor::Hypervisor;
use crate::paths;

pub fn choose_backend(settings: &Settings) -> anyhow::Result<Arc<dyn Hypervisor>> {
    let choice = match settings.backend {
        BackendChoice::Auto if Path::new(paths::LIBVIRT_SOCKET).exists() => BackendChoice::Libvirt,
        BackendChoice::Auto if settings.proxmox.config_dir.exists() => BackendChoice::Proxmox,
        BackendChoice::Auto => BackendChoice::Libvirt,
        other => other,
    };
    match choice {
        BackendChoice::Libvirt => libvirt_backend(settings),
        BackendChoice::Proxmox | BackendChoice::Auto => {
            use crate::hypervisor::proxmox::{ProxmoxHypervisor, ProxmoxSettings};
            let hypervisor = ProxmoxHypervisor::new(ProxmoxSettings::from_config(
                &settings.proxmox,
                &settings.state_dir,
            ));
            hypervisor.check().with_context(|| {
                format!(
                    "Failed to read the Proxmox VE directories {} and {}",
                    settings.proxmox.config_dir.display(),
                    settings.proxmox.run_dir.display()
                )
            })?;
            Ok(Arc::new(hypervisor))
        }
    }
}

#[cfg(feature = "libvirt")]
fn libvirt_backend(settings: &Settings) -> anyhow::Result<Arc<dyn Hypervisor>> {
    use crate::hypervisor::libvirt::{LibvirtHypervisor, LibvirtSettings};
    let hypervisor = LibvirtHypervisor::new(LibvirtSettings {
        uri: settings.libvirt.uri.clone(),
        ..LibvirtSettings::default()
    });
    match hypervisor.connect() {
        Ok(()) => {}
        // libvirtd stopped, or not up yet at boot: start anyway (spool, delivery and
        // /metrics work meanwhile); every poll tries to connect again.
        Err(error) if LibvirtHypervisor::daemon_unreachable(&error) => {
            tracing::warn!(
                uri = %settings.libvirt.uri,
                error = %ballast_daemon::error_chain(&error),
                "libvirt does not answer (is libvirtd running?); polling starts once it does."
            );
        }
        Err(error) => {
            return Err(error)
                .with_context(|| format!("Failed to reach libvirt at {}", settings.libvirt.uri))
        }
    }
    Ok(Arc::new(hypervisor))
}

#[cfg(not(feature = "libvirt"))]
fn libvirt_backend(_settings: &Settings) -> anyhow::Result<Arc<dyn Hypervisor>> {
    Err(anyhow::Error::new(crate::cli::UsageError(
        "this build has no libvirt support (feature `libvirt`)".into(),
    )))
}
