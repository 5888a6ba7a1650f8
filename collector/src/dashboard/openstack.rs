//! OpenStack nova's identity on the dashboard: the VM page's facts and title, a line
//! under the VM in OOM rows ("web-3 (instance-0000001a), project acme, flavor
//! m1.small"), and the overview's project filter. Every name is the tenant's text:
//! maud escapes it; links carry it percent-encoded.

use maud::{html, Markup};

use ballast_model::NovaInstance;

use crate::dashboard::layout::{path_segment, vm_link};
use crate::records::{OomSummary, VmRecord};
use crate::storage::openstack::ProjectVms;

/// "web-3 (instance-0000001a), project acme, flavor m1.small": nova's name with the
/// libvirt name beside it, then what nova knows of the project and flavor.
pub fn identity(nova: &NovaInstance, libvirt_name: &str) -> String {
    let mut text = match (&nova.name, libvirt_name.is_empty()) {
        (Some(name), false) => format!("{name} ({libvirt_name})"),
        (Some(name), true) => name.clone(),
        (None, _) => libvirt_name.to_string(),
    };
    if let Some(project) = nova.project_name.as_ref().or(nova.project_id.as_ref()) {
        text.push_str(&format!(", project {project}"));
    }
    if let Some(flavor) = &nova.flavor_name {
        text.push_str(&format!(", flavor {flavor}"));
    }
    text
}

/// The VM page's title: the identity's name part when nova defined the VM.
pub fn title(record: &VmRecord) -> String {
    let libvirt = if record.name.is_empty() {
        &record.uuid
    } else {
        &record.name
    };
    match record
        .openstack
        .as_ref()
        .and_then(|nova| nova.name.as_ref())
    {
        Some(name) => format!("{name} ({libvirt})"),
        None => libvirt.clone(),
    }
}

/// The VM page's `dt`/`dd` rows of nova's identity (nothing for other VMs).
pub fn vm_facts(record: &VmRecord) -> Markup {
    let Some(nova) = &record.openstack else {
        return html! {};
    };
    let flavor = nova.flavor_name.as_deref().map(|name| {
        let mut text = name.to_string();
        if let Some(mib) = nova.flavor_memory_mib {
            text.push_str(&format!(", {mib} MiB"));
        }
        if let Some(vcpus) = nova.flavor_vcpus {
            text.push_str(&format!(", {vcpus} vCPU"));
        }
        text
    });
    html! {
        dt { "OpenStack" } dd.openstack { (identity(nova, &record.name)) }
        @if nova.project_name.is_some() || nova.project_id.is_some() {
            dt { "Project" } dd {
                @let key = nova.project_id.as_ref().or(nova.project_name.as_ref());
                @if let Some(key) = key {
                    a href={ "/?project=" (path_segment(key)) } {
                        (nova.project_name.as_deref().unwrap_or(key))
                    }
                }
                @if let (Some(_), Some(id)) = (&nova.project_name, &nova.project_id) { " (" (id) ")" }
            }
        }
        @if let Some(user) = nova.user_name.as_ref().or(nova.user_id.as_ref()) {
            dt { "User" } dd { (user) }
        }
        @if let Some(flavor) = flavor {
            dt { "Flavor" } dd { (flavor) }
        }
        @if nova.nova_version.is_some() || nova.created.is_some() {
            dt { "Nova" } dd {
                @if let Some(version) = &nova.nova_version { "version " (version) }
                @if let Some(created) = &nova.created { ", created " (created) }
            }
        }
    }
}

/// The line under the VM of an OOM row (nothing for a VM nova did not define).
pub fn oom_identity(oom: &OomSummary) -> Markup {
    html! {
        @if let Some(nova) = &oom.openstack {
            br; span.openstack { (identity(nova, &oom.vm.name)) }
        }
    }
}

/// The line under a VM in the host page's list (nothing for a VM nova did not define).
pub fn vm_identity(vm: &VmRecord) -> Markup {
    html! {
        @if let Some(nova) = &vm.openstack {
            br; span.openstack { (identity(nova, &vm.name)) }
        }
    }
}

/// The overview's project filter: a choice of the known projects (all VMs, or one
/// project's) and, with a project chosen, its VMs with their identity.
pub fn project_filter(
    projects: &[ProjectVms],
    chosen: Option<&str>,
    range: &str,
    vms: &[VmRecord],
) -> Markup {
    if projects.is_empty() && chosen.is_none() {
        return html! {};
    }
    html! {
        section #projects {
            h2 { "OpenStack projects" }
            form.filters method="get" action="/" {
                input type="hidden" name="range" value=(range);
                label { "Project "
                    select name="project" {
                        option value="" { "all" }
                        @for project in projects {
                            @let key = if project.id.is_empty() { &project.name } else { &project.id };
                            option value=(key) selected[chosen.is_some_and(|c| c == key || c == project.name)] {
                                (if project.name.is_empty() { &project.id } else { &project.name })
                                " (" (project.vms) " VMs)"
                            }
                        }
                    }
                }
                button type="submit" { "Filter" }
            }
            @if let Some(chosen) = chosen {
                p.note {
                    "The newest OOMs below are project " strong { (chosen) } "'s; the charts stay fleet-wide. "
                    a href={ "/ooms?project=" (path_segment(chosen)) } { "All of its OOMs" }
                }
                @if vms.is_empty() {
                    p.empty { "No VM of this project." }
                } @else {
                    table.project-vms {
                        thead { tr { th { "VM" } th { "OpenStack" } th { "Host" } th.num { "OOMs" } } }
                        tbody {
                            @for vm in vms {
                                tr {
                                    td { (vm_link(&vm.host, &vm.uuid, &vm.name)) }
                                    td { @if let Some(nova) = &vm.openstack { (identity(nova, &vm.name)) } }
                                    td { (vm.host) }
                                    td.num { (vm.oom_count) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_reads_as_the_issue_writes_it() {
        let nova = NovaInstance {
            name: Some("web-3".into()),
            project_name: Some("acme".into()),
            project_id: Some("p-1".into()),
            flavor_name: Some("m1.small".into()),
            ..NovaInstance::default()
        };
        assert_eq!(
            identity(&nova, "instance-0000001a"),
            "web-3 (instance-0000001a), project acme, flavor m1.small"
        );
        let bare = NovaInstance {
            project_id: Some("p-1".into()),
            ..NovaInstance::default()
        };
        assert_eq!(identity(&bare, "instance-1"), "instance-1, project p-1");
    }
}
