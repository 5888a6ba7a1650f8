//! From what the monitor found to wire events ([`ballast_model::Event`]) with
//! their idempotency keys, into the [`super::EventOutlet`]: captured OOMs (enriched
//! with the host's balloon view), "Out of puff!" near misses, hello, inventory and
//! health.

use std::time::SystemTime;

use ballast_model::{
    AgentHealth, AgentHello, Envelope, Event, Inventory, NearMiss as WireNearMiss, NearMissKind,
    OomKind, VmConfig, VmInventory, VmState,
};

use super::Monitor;
use crate::capture::{CaptureEvent, CapturedOom};
use crate::enrich;
use crate::wire::{epoch_ms, vm_ref};

impl Monitor {
    /// Emits what capture found, and publishes its flood count: suppressed reports
    /// produce no event, so the count is read after every capture step.
    pub(super) fn handle_capture(&mut self, events: Vec<CaptureEvent>) {
        let suppressed = self.capture.flood_suppressed_total();
        self.counters().flood_suppressed = suppressed;
        for event in events {
            match event {
                CaptureEvent::Oom(captured) | CaptureEvent::OomCompleted(captured) => {
                    self.handle_oom(captured, OomKind::Guest);
                }
                CaptureEvent::NearMiss(miss) => {
                    *self
                        .counters()
                        .near_misses
                        .entry(NearMissKind::OutOfPuff)
                        .or_default() += 1;
                    let key = self.sequenced_key(&format!(
                        "nm/{}/{}",
                        miss.domain.uuid,
                        NearMissKind::OutOfPuff
                    ));
                    self.emit_at(
                        key,
                        epoch_ms(miss.captured_at),
                        Event::NearMiss(WireNearMiss {
                            vm: vm_ref(&miss.domain),
                            kind: NearMissKind::OutOfPuff,
                            detail: miss.line,
                            actual_kib: None,
                            usable_kib: None,
                        }),
                    );
                }
            }
        }
    }

    pub(super) fn handle_oom(&mut self, captured: CapturedOom, kind: OomKind) {
        let host = crate::hostmem::read(&self.settings.procfs_root);
        let oom = {
            let fleet = self.fleet();
            enrich::oom_event(&captured, kind, fleet.get(&captured.domain.uuid), &host)
        };
        let _vm = captured.domain.span().entered();
        tracing::warn!(
            verdict = %oom.analysis.verdict,
            killed = oom.report.killed.as_ref().map(|k| k.comm.as_str()).unwrap_or("?"),
            "{}",
            match kind {
                OomKind::Guest => "Guest OOM captured.",
                OomKind::VmCgroup => "VM cgroup OOM on the host captured.",
                OomKind::Host => "Host OOM killed a VM's QEMU process.",
                OomKind::Unknown => "OOM of an unknown kind captured.",
            }
        );
        self.fleet()
            .record_oom(&captured.domain, captured.captured_at);
        *self
            .counters()
            .ooms
            .entry((
                captured.domain.uuid.clone(),
                captured.domain.name.clone(),
                oom.analysis.verdict,
            ))
            .or_default() += 1;
        let key = format!("{}/oom/{}", self.settings.host_id, captured.dedupe_key);
        self.emit_at(
            key,
            epoch_ms(captured.captured_at),
            Event::Oom(Box::new(oom)),
        );
    }

    pub(super) fn emit_hello(&mut self) {
        let host = crate::hostmem::read(&self.settings.procfs_root);
        let mut capabilities = Vec::new();
        if self.settings.capture.serial {
            capabilities.push("serial_capture".to_string());
        }
        if self.settings.capture.guest_agent.enabled() {
            capabilities.push("guest_agent_capture".to_string());
        }
        if self.settings.libvirt.read_qemu_counters {
            capabilities.push("qemu_balloon_counters".to_string());
        }
        if self.settings.capture.host_kernel {
            capabilities.push("host_kernel_capture".to_string());
        }
        let key = self.sequenced_key("hello");
        self.emit(
            key,
            Event::Hello(AgentHello {
                backend: self.hypervisor.backend().to_string(),
                capabilities,
                host_memory_kib: host.total_kib,
            }),
        );
    }

    pub(super) fn emit_inventory(&mut self) {
        let vms = {
            let fleet = self.fleet();
            fleet
                .vms()
                .map(|vm| {
                    let config = vm.config.clone().unwrap_or_default();
                    VmInventory {
                        vm: vm_ref(&vm.id),
                        state: VmState::Running,
                        findings: crate::audit::finding_names(
                            &config,
                            crate::audit::Observed {
                                agent_answered: self.capture.guest_agent_answering(&vm.id.uuid),
                                ..crate::audit::Observed::from_fleet(vm)
                            },
                        ),
                        config: VmConfig {
                            memory_kib: config.memory_kib,
                            balloon_floor_kib: config.current_memory_kib,
                            balloon_present: config.balloon_present,
                            stats_period_secs: config.stats_period_secs,
                            deflate_on_oom: config.deflate_on_oom,
                            free_page_reporting: config.free_page_reporting,
                            guest_agent_channel: config.guest_agent_channel,
                            serial_log: config.serial_log_path.is_some(),
                            shares: None,
                            // The configured devices, as the domain configuration
                            // read them last (bounded like a sample's).
                            virtio_mem: crate::hypervisor::virtio_mem::plausible(
                                config.virtio_mem.clone(),
                            ),
                        },
                        openstack: config.openstack,
                    }
                })
                .collect()
        };
        let key = self.sequenced_key("inventory");
        self.emit(key, Event::Inventory(Inventory { vms }));
        self.inventory_dirty = false;
    }

    pub(super) fn emit_health(&mut self) {
        // One shared lock at a time (crate::shared): the fleet's size first, then the
        // counters. Holding the counters while taking the fleet deadlocked against a
        // `/metrics` scrape that held them the other way round.
        let vms = self.fleet().len();
        let health = {
            let counters = self.counters();
            AgentHealth {
                vms: u32::try_from(vms).unwrap_or(u32::MAX),
                poll_duration_ms: (counters.last_poll_seconds * 1000.0) as u64,
                poll_errors: counters.poll_errors,
                spool_bytes: counters.spool_bytes,
                spool_events: counters.spool_events,
                dropped_rollups: counters.dropped_rollups,
                flood_suppressed: counters.flood_suppressed,
            }
        };
        let key = self.sequenced_key("health");
        self.emit(key, Event::Health(health));
    }

    pub(super) fn emit(&mut self, key: String, event: Event) {
        self.emit_at(key, epoch_ms(SystemTime::now()), event);
    }

    pub(super) fn emit_at(&mut self, key: String, captured_at_ms: i64, event: Event) {
        let kind = event.kind_name();
        if let Err(error) = self.outlet.emit(Envelope {
            key,
            captured_at_ms,
            event,
        }) {
            self.error_log
                .warn("sink", &format!("Failed to store a {kind} event: {error}"));
        }
    }

    /// `<host>/<middle>/<ms>-<n>`: a unique key for events with no natural identity.
    pub(super) fn sequenced_key(&mut self, middle: &str) -> String {
        self.sequence += 1;
        format!(
            "{}/{middle}/{}-{}",
            self.settings.host_id,
            epoch_ms(SystemTime::now()),
            self.sequence
        )
    }
}
