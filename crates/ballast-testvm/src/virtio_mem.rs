//! virtio-mem devices of lab guests: read plugged/requested back, resize, wait.
//!
//! Both kinds of guest carry the device as [`VIRTIO_MEM_ID`](crate::VIRTIO_MEM_ID)
//! when their spec has [`VirtioMemSpec`](crate::VirtioMemSpec):
//! * libvirt ([`Guest`]): resize with `virsh update-memory-device <dom> --alias <id>
//!   --requested-size <N>KiB --live`; read back from `virsh dumpxml`
//!   (`<memory model='virtio-mem'>`: `<size>`, `<node>`, `<block>`, `<requested>`,
//!   and `<current>`, which libvirt updates from QEMU's `MEMORY_DEVICE_SIZE_CHANGE`);
//! * Proxmox-style QEMU ([`ProxmoxGuest`]): QMP `qom-set /machine/peripheral/<id>
//!   requested-size <bytes>`; read back with `query-memory-devices` (`size` is what
//!   is plugged).
//!
//! [`VirtioMemGuest`] lets the scenarios in [`crate::virtio_mem_scenario`] run on
//! either; [`wait_settled`] tells a resize that converged (plugged = requested) from
//! one that stalled (plugged stopped moving elsewhere).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::ExecOutput;
use crate::error::{Error, Result};
use crate::guard_scenario::now_ms;
use crate::guest::Guest;
use crate::proxmox::ProxmoxGuest;

/// One virtio-mem device as the host sees it (sizes in KiB, like ballast's model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioMemState {
    /// libvirt's alias / QEMU's device id (`virtiomem0`).
    pub id: String,
    /// The guest NUMA node it plugs into.
    pub node: u32,
    pub block_size_kib: u64,
    /// The device's size: the most it can plug.
    pub max_size_kib: u64,
    /// What the host asks the guest to have plugged (`requested-size`).
    pub requested_kib: u64,
    /// What the guest has plugged (QEMU's `size`, libvirt's `<current>`).
    pub plugged_kib: u64,
}

impl VirtioMemState {
    /// Plugged equals requested: the guest did what the host asked.
    pub fn converged(&self) -> bool {
        self.plugged_kib == self.requested_kib
    }
}

/// A guest with virtio-mem devices: what the scenarios need of libvirt guests and
/// Proxmox-style guests alike.
pub trait VirtioMemGuest {
    /// The domain / VM name, for messages.
    fn guest_name(&self) -> &str;
    /// Every virtio-mem device, read from the host side now.
    fn virtio_mem(&self) -> Result<Vec<VirtioMemState>>;
    /// Sets the device's `requested-size` (KiB; QEMU wants a multiple of the block size).
    fn set_virtio_mem_requested_kib(&self, id: &str, kib: u64) -> Result<()>;
    /// Runs a program in the guest through its agent.
    fn guest_exec(&self, path: &str, args: &[&str]) -> Result<ExecOutput>;
    /// The serial console so far.
    fn console_text(&self) -> String;
}

impl VirtioMemGuest for Guest {
    fn guest_name(&self) -> &str {
        self.name()
    }

    fn virtio_mem(&self) -> Result<Vec<VirtioMemState>> {
        parse_domain_xml(&self.dumpxml()?)
    }

    fn set_virtio_mem_requested_kib(&self, id: &str, kib: u64) -> Result<()> {
        self.virsh_command(&[
            "update-memory-device",
            self.name(),
            "--alias",
            id,
            "--requested-size",
            &format!("{kib}KiB"),
            "--live",
        ])
        .map(drop)
    }

    fn guest_exec(&self, path: &str, args: &[&str]) -> Result<ExecOutput> {
        self.exec(path, args)
    }

    fn console_text(&self) -> String {
        self.serial_text()
    }
}

impl VirtioMemGuest for ProxmoxGuest {
    fn guest_name(&self) -> &str {
        self.name()
    }

    fn virtio_mem(&self) -> Result<Vec<VirtioMemState>> {
        self.qmp()?.query_virtio_mem()
    }

    fn set_virtio_mem_requested_kib(&self, id: &str, kib: u64) -> Result<()> {
        self.qmp()?.set_virtio_mem_requested(id, kib * 1024)
    }

    fn guest_exec(&self, path: &str, args: &[&str]) -> Result<ExecOutput> {
        self.exec(path, args)
    }

    fn console_text(&self) -> String {
        self.serial_text()
    }
}

/// The device `id` of `guest`, or an error naming both.
pub fn device<G: VirtioMemGuest + ?Sized>(guest: &G, id: &str) -> Result<VirtioMemState> {
    guest
        .virtio_mem()?
        .into_iter()
        .find(|device| device.id == id)
        .ok_or_else(|| Error::Parse {
            what: format!("virtio-mem devices of {}", guest.guest_name()),
            detail: format!("no device {id}"),
        })
}

/// How a resize ended, as [`wait_settled`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Plugged reached requested.
    Converged {
        /// Host wall clock (epoch ms) when the harness first saw it (polled every 200 ms).
        at_ms: u64,
        device: VirtioMemState,
    },
    /// Plugged stopped short of requested and did not move for the still period.
    Stalled {
        /// Host wall clock (epoch ms) of the last change of plugged the harness saw
        /// (the start of the wait when it never moved).
        since_ms: u64,
        /// When the harness declared it stalled (`since_ms` + the still period, or later).
        declared_at_ms: u64,
        device: VirtioMemState,
    },
}

impl Settled {
    /// The device as last read.
    pub fn device(&self) -> &VirtioMemState {
        match self {
            Settled::Converged { device, .. } | Settled::Stalled { device, .. } => device,
        }
    }

    pub fn converged(&self) -> bool {
        matches!(self, Settled::Converged { .. })
    }
}

/// Polls device `id` every 200 ms until plugged equals requested ([`Settled::Converged`])
/// or plugged has not changed for `still_for` while differing ([`Settled::Stalled`]);
/// fails after `timeout` while plugged is still moving.
pub fn wait_settled<G: VirtioMemGuest + ?Sized>(
    guest: &G,
    id: &str,
    still_for: Duration,
    timeout: Duration,
) -> Result<Settled> {
    let start = Instant::now();
    let mut since = Instant::now();
    let mut since_ms = now_ms();
    let mut last_plugged = None;
    loop {
        let state = device(guest, id)?;
        if state.converged() {
            return Ok(Settled::Converged {
                at_ms: now_ms(),
                device: state,
            });
        }
        if last_plugged != Some(state.plugged_kib) {
            if last_plugged.is_some() {
                since = Instant::now();
                since_ms = now_ms();
            }
            last_plugged = Some(state.plugged_kib);
        } else if since.elapsed() >= still_for {
            return Ok(Settled::Stalled {
                since_ms,
                declared_at_ms: now_ms(),
                device: state,
            });
        }
        if start.elapsed() > timeout {
            return Err(Error::Timeout {
                what: format!(
                    "virtio-mem {id} of {} to settle (plugged {} KiB, requested {} KiB)",
                    guest.guest_name(),
                    state.plugged_kib,
                    state.requested_kib
                ),
                timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The devices in QMP `query-memory-devices`' `return` (other memory devices skipped).
pub fn parse_query_memory_devices(value: &Value) -> Result<Vec<VirtioMemState>> {
    let bad = |detail: String| Error::Parse {
        what: "query-memory-devices".to_owned(),
        detail,
    };
    let devices = value
        .as_array()
        .ok_or_else(|| bad(format!("not a list: {value}")))?;
    let mut states = Vec::new();
    for entry in devices {
        if entry.get("type").and_then(Value::as_str) != Some("virtio-mem") {
            continue;
        }
        let data = entry
            .get("data")
            .ok_or_else(|| bad(format!("no data: {entry}")))?;
        let bytes = |field: &str| {
            data.get(field)
                .and_then(Value::as_u64)
                .ok_or_else(|| bad(format!("no {field} in {data}")))
        };
        states.push(VirtioMemState {
            id: data
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("no id in {data}")))?
                .to_owned(),
            node: u32::try_from(bytes("node")?).map_err(|_| bad(format!("node in {data}")))?,
            block_size_kib: bytes("block-size")? / 1024,
            max_size_kib: bytes("max-size")? / 1024,
            requested_kib: bytes("requested-size")? / 1024,
            plugged_kib: bytes("size")? / 1024,
        });
    }
    Ok(states)
}

/// The virtio-mem devices of a live `virsh dumpxml` (a device without `<current>` yet
/// reads as nothing plugged).
pub fn parse_domain_xml(xml: &str) -> Result<Vec<VirtioMemState>> {
    let mut states = Vec::new();
    for rest in xml.split("<memory model='virtio-mem'").skip(1) {
        let element = rest.split("</memory>").next().unwrap_or_default();
        let bad = |detail: &str| Error::Parse {
            what: "virtio-mem device in virsh dumpxml".to_owned(),
            detail: format!("{detail}: {element}"),
        };
        let kib = |name: &str| -> Result<Option<u64>> {
            let Some(open) = element.split(&format!("<{name}")).nth(1) else {
                return Ok(None);
            };
            let (attributes, text) = open.split_once('>').ok_or_else(|| bad(name))?;
            let number: u64 = text
                .split('<')
                .next()
                .unwrap_or_default()
                .trim()
                .parse()
                .map_err(|_| bad(name))?;
            let unit = attributes
                .split("unit='")
                .nth(1)
                .and_then(|unit| unit.split('\'').next())
                .unwrap_or("KiB");
            let factor_bytes: u64 = match unit {
                "b" | "bytes" => 1,
                "KiB" | "k" | "K" => 1 << 10,
                "MiB" | "M" => 1 << 20,
                "GiB" | "G" => 1 << 30,
                _ => return Err(bad(&format!("unit {unit} of {name}"))),
            };
            Ok(Some(number.saturating_mul(factor_bytes) / 1024))
        };
        let id = element
            .split("<alias name='")
            .nth(1)
            .and_then(|alias| alias.split('\'').next())
            .ok_or_else(|| bad("no alias (is the domain running?)"))?;
        let node = element
            .split("<node>")
            .nth(1)
            .and_then(|node| node.split('<').next())
            .and_then(|node| node.trim().parse().ok())
            .ok_or_else(|| bad("node"))?;
        states.push(VirtioMemState {
            id: id.to_owned(),
            node,
            block_size_kib: kib("block")?.ok_or_else(|| bad("block"))?,
            max_size_kib: kib("size")?.ok_or_else(|| bad("size"))?,
            requested_kib: kib("requested")?.ok_or_else(|| bad("requested"))?,
            plugged_kib: kib("current")?.unwrap_or(0),
        });
    }
    Ok(states)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The memory device part of `virsh dumpxml` of a running lab guest (libvirt 9.0).
    const DUMPXML: &str = "<devices>
    <memballoon model='virtio'><alias name='balloon0'/></memballoon>
    <memory model='virtio-mem'>
      <target>
        <size unit='KiB'>524288</size>
        <node>0</node>
        <block unit='KiB'>2048</block>
        <requested unit='KiB'>131072</requested>
        <current unit='KiB'>393216</current>
      </target>
      <alias name='virtiomem0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>
    </memory>
  </devices>";

    #[test]
    fn reads_plugged_and_requested_from_dumpxml() {
        let states = parse_domain_xml(DUMPXML).expect("parses");
        assert_eq!(
            states,
            [VirtioMemState {
                id: "virtiomem0".to_owned(),
                node: 0,
                block_size_kib: 2048,
                max_size_kib: 524_288,
                requested_kib: 131_072,
                plugged_kib: 393_216,
            }]
        );
        assert!(!states[0].converged());
        assert_eq!(parse_domain_xml("<devices/>").expect("empty"), []);
    }

    #[test]
    fn dumpxml_units_other_than_kib_are_converted_and_unknown_ones_refused() {
        let mib = DUMPXML.replace("<size unit='KiB'>524288", "<size unit='MiB'>512");
        assert_eq!(
            parse_domain_xml(&mib).expect("MiB")[0].max_size_kib,
            524_288
        );
        let odd = DUMPXML.replace("<size unit='KiB'>", "<size unit='furlong'>");
        let error = parse_domain_xml(&odd).expect_err("unknown unit");
        assert!(error.to_string().contains("furlong"), "{error}");
    }

    #[test]
    fn reads_virtio_mem_devices_from_query_memory_devices() {
        // QEMU 10's reply on a Proxmox-style lab guest, plus a DIMM it must skip.
        let reply = json!([
            {"type": "dimm", "data": {"id": "dimm0", "size": 1_073_741_824_u64}},
            {"type": "virtio-mem", "data": {
                "memdev": "/objects/mem-virtiomem0", "memaddr": 4_294_967_296_u64,
                "block-size": 2_097_152, "size": 402_653_184, "node": 0,
                "max-size": 536_870_912, "requested-size": 0, "id": "virtiomem0"}}
        ]);
        let states = parse_query_memory_devices(&reply).expect("parses");
        assert_eq!(
            states,
            [VirtioMemState {
                id: "virtiomem0".to_owned(),
                node: 0,
                block_size_kib: 2048,
                max_size_kib: 524_288,
                requested_kib: 0,
                plugged_kib: 393_216,
            }]
        );
        let broken = json!([{"type": "virtio-mem", "data": {"id": "virtiomem0"}}]);
        assert!(parse_query_memory_devices(&broken).is_err());
    }
}
