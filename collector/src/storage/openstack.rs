//! OpenStack nova's identity of a VM in the store (migration 0012): the inventory's
//! `openstack` as `vms.openstack_json`, its project id and name in
//! `vms.os_project_id` / `vms.os_project_name` for the `?project=` filters of the VM
//! and OOM lists (a project matches by id or by name). The SQL pieces here are
//! written once for both engines; an OOM's identity is its VM's newest inventory's.

use ballast_model::NovaInstance;

use crate::storage::rows::clean;
use crate::storage::sql::{Param, Query, Row};
use crate::storage::{Store, StoreError};

/// One OpenStack project the store knows VMs of (the overview's project filter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectVms {
    /// Tenant text: escape wherever shown. Empty when nova wrote no name.
    pub name: String,
    pub id: String,
    pub vms: i64,
}

/// The projects of the known VMs with their VM counts, by name then id in byte
/// order (sorted here, not by either engine's collation); at most `limit`.
pub async fn projects(store: &dyn Store, limit: usize) -> Result<Vec<ProjectVms>, StoreError> {
    let rows = store
        .query(Query::new(
            "SELECT os_project_name, os_project_id, COUNT(*) FROM vms \
             WHERE os_project_name IS NOT NULL OR os_project_id IS NOT NULL \
             GROUP BY os_project_name, os_project_id",
            Vec::new(),
        ))
        .await?;
    let mut projects: Vec<ProjectVms> = rows
        .iter()
        .map(|row| ProjectVms {
            name: row.text_or_empty(0),
            id: row.text_or_empty(1),
            vms: row.int_or_zero(2),
        })
        .collect();
    projects.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    projects.truncate(limit);
    Ok(projects)
}

/// `vms` rows (aliased `alias`) of a project, by id or name: two parameters,
/// [`project_params`].
pub fn vm_in_project(alias: &str) -> String {
    format!("({alias}.os_project_id = ? OR {alias}.os_project_name = ?)")
}

/// `ooms` rows whose VM is in a project: two parameters, [`project_params`].
pub const OOM_IN_PROJECT: &str = "EXISTS (SELECT 1 FROM vms pv WHERE pv.host_id = ooms.host_id \
     AND pv.vm_uuid = ooms.vm_uuid AND (pv.os_project_id = ? OR pv.os_project_name = ?))";

/// The identity of an `ooms` row's VM, as a column of a `SELECT ... FROM ooms`.
pub const OOM_OPENSTACK_COLUMN: &str = "(SELECT sv.openstack_json FROM vms sv \
     WHERE sv.host_id = ooms.host_id AND sv.vm_uuid = ooms.vm_uuid)";

/// The parameters of [`vm_in_project`] and [`OOM_IN_PROJECT`]: the project as given
/// (NUL stored as U+FFFD, like every text the store holds).
pub fn project_params(project: &str) -> [Param; 2] {
    let project = clean(project);
    [Param::text(project.clone()), Param::text(project)]
}

/// The identity column at `index`; None for NULL (no nova instance) and for JSON
/// this version cannot read (logged: the VM still lists, without its identity).
pub fn decode(row: &Row, index: usize) -> Option<NovaInstance> {
    let text = row.text(index)?;
    match serde_json::from_str(&text) {
        Ok(nova) => Some(nova),
        Err(error) => {
            tracing::warn!(%error, "A stored OpenStack identity does not decode");
            None
        }
    }
}

/// The identity as stored: NUL in any text replaced ([`clean`]), since PostgreSQL
/// text cannot hold it and both engines must answer alike.
pub fn clean_nova(nova: &NovaInstance) -> NovaInstance {
    let text = |value: &Option<String>| value.as_deref().map(clean);
    NovaInstance {
        name: text(&nova.name),
        instance_uuid: text(&nova.instance_uuid),
        project_id: text(&nova.project_id),
        project_name: text(&nova.project_name),
        user_id: text(&nova.user_id),
        user_name: text(&nova.user_name),
        flavor_name: text(&nova.flavor_name),
        flavor_memory_mib: nova.flavor_memory_mib,
        flavor_vcpus: nova.flavor_vcpus,
        nova_version: text(&nova.nova_version),
        created: text(&nova.created),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_in_tenant_text_is_replaced_and_numbers_kept() {
        let nova = clean_nova(&NovaInstance {
            name: Some("web\0-3".into()),
            project_name: Some("acme".into()),
            flavor_memory_mib: Some(2048),
            ..NovaInstance::default()
        });
        assert_eq!(nova.name.as_deref(), Some("web\u{FFFD}-3"));
        assert_eq!(nova.project_name.as_deref(), Some("acme"));
        assert_eq!(nova.flavor_memory_mib, Some(2048));
        assert_eq!(project_params("a\0b")[1], Param::text("a\u{FFFD}b"));
    }
}
