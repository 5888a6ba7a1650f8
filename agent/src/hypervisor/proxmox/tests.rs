//! The Proxmox backend against fake nodes: directories, `/proc`, and FAKE QMP and
//! guest agent servers on Unix sockets ([`super::wire::fake_server`]).

use std::sync::mpsc::{channel, Sender};

use super::wire::fake_server::{FakeServer, Peer};
use super::*;

/// A fake node: run dir, config dir and `/proc`, with fake QEMUs behind links.
struct FakeNode {
    dir: PathBuf,
    servers: Vec<FakeServer>,
    release: Vec<Sender<()>>,
    /// Holds `dir`; removed on drop, after the fake servers (fields drop in order).
    _temp: tempfile::TempDir,
}

impl FakeNode {
    fn new(name: &str) -> FakeNode {
        let temp = tempfile::Builder::new()
            .prefix(&format!("ballast-fake-pve-{name}-"))
            .tempdir()
            .expect("fake node dir");
        let dir = temp.path().to_path_buf();
        for sub in ["run", "conf", "proc"] {
            std::fs::create_dir_all(dir.join(sub)).expect("fake node dirs");
        }
        FakeNode {
            dir,
            servers: Vec::new(),
            release: Vec::new(),
            _temp: temp,
        }
    }

    fn settings(&self) -> ProxmoxSettings {
        ProxmoxSettings {
            run_dir: self.dir.join("run"),
            config_dir: self.dir.join("conf"),
            read_serial_vmids: Vec::new(),
            serial_log_dir: self.dir.join("serial"),
            call_timeout: Duration::from_millis(300),
            poll_deadline: Duration::from_secs(5),
            max_parallel: 16,
            max_reply_bytes: 1024 * 1024,
            procfs_root: self.dir.join("proc"),
        }
    }

    /// A running VM whose QMP socket is served by `script`.
    fn add_vm(&mut self, vmid: u32, conf: &str, script: impl FnOnce(Peer) + Send + 'static) {
        let server = FakeServer::start(script);
        std::os::unix::fs::symlink(&server.path, self.dir.join(format!("run/{vmid}.qmp")))
            .expect("link socket");
        let pid = 4_000_000 + vmid;
        std::fs::write(self.dir.join(format!("run/{vmid}.pid")), format!("{pid}\n"))
            .expect("pid file");
        let proc_dir = self.dir.join(format!("proc/{pid}"));
        std::fs::create_dir_all(&proc_dir).expect("proc dir");
        std::fs::write(
                proc_dir.join("cmdline"),
                format!("/usr/bin/kvm\0-id\0{vmid}\0-chardev\0socket,id=qmp,path=/var/run/qemu-server/{vmid}.qmp,server=on,wait=off\0"),
            )
            .expect("cmdline");
        std::fs::write(proc_dir.join("status"), "VmRSS:\t  1000 kB\n").expect("status");
        std::fs::write(self.dir.join(format!("conf/{vmid}.conf")), conf).expect("conf");
        self.servers.push(server);
    }

    /// A VM whose QEMU accepts but never answers (a stuck monitor).
    fn add_silent_vm(&mut self, vmid: u32) {
        let (sender, receiver) = channel::<()>();
        self.release.push(sender);
        self.add_vm(vmid, "memory: 1024\n", move |_peer| {
            let _ = receiver.recv();
        });
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.release.clear();
    }
}

/// A guest agent on `run/<vmid>.qga` that syncs, then answers one command with `reply`.
fn add_qga(node: &mut FakeNode, vmid: u32, reply: Value) {
    add_qga_conversation(node, vmid, vec![reply], None);
}

/// A guest agent on `run/<vmid>.qga` that syncs, then answers the commands of one
/// conversation with `replies` in turn, handing each request to `requests`.
fn add_qga_conversation(
    node: &mut FakeNode,
    vmid: u32,
    replies: Vec<Value>,
    requests: Option<Sender<Value>>,
) {
    let server = FakeServer::start(move |mut peer| {
        let sync = peer.request();
        let id = sync["arguments"]["id"].clone();
        peer.send(&[0xFF]);
        peer.send(format!("{}\n", json!({ "return": id })).as_bytes());
        for mut reply in replies {
            let request = peer.request();
            reply["id"] = request["id"].clone();
            if let Some(requests) = &requests {
                let _ = requests.send(request);
            }
            peer.send(format!("{reply}\n").as_bytes());
        }
    });
    std::os::unix::fs::symlink(&server.path, node.dir.join(format!("run/{vmid}.qga")))
        .expect("link socket");
    node.servers.push(server);
}

#[test]
fn guest_exec_polls_one_conversation_and_bounds_the_output_against_fake_qga_server() {
    let mut node = FakeNode::new("qga-exec");
    let (requests, sent) = channel();
    // "Linux version 6.1\n", after one "still running".
    add_qga_conversation(
        &mut node,
        110,
        vec![
            json!({"return": {"pid": 812}}),
            json!({"return": {"exited": false}}),
            json!({"return": {"exited": true, "exitcode": 0, "out-data": "TGludXggdmVyc2lvbiA2LjEK"}}),
        ],
        Some(requests),
    );
    add_qga(
        &mut node,
        111,
        json!({"error": {"class": "CommandNotFound", "desc": "The command guest-exec has been disabled for this instance"}}),
    );
    let backend = ProxmoxHypervisor::new(node.settings());
    let id = |vmid: u32| DomainId {
        uuid: vmid.to_string(),
        name: format!("vm{vmid}"),
    };
    let output = backend
        .guest_exec(&id(110), "/bin/dmesg", &[], Duration::from_secs(5), 5)
        .expect("exec");
    assert_eq!(output.stdout, b"Linux");
    assert!(output.truncated, "18 bytes of output, 5 allowed");
    assert_eq!(output.exit_code, Some(0));
    let sent: Vec<Value> = sent.try_iter().collect();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[0]["execute"], "guest-exec");
    assert_eq!(sent[0]["arguments"]["path"], "/bin/dmesg");
    assert_eq!(sent[0]["arguments"]["capture-output"], true);
    assert_eq!(sent[1]["execute"], "guest-exec-status");
    assert_eq!(sent[1]["arguments"]["pid"], 812);
    let refused = backend
        .guest_exec(&id(111), "/bin/dmesg", &[], Duration::from_secs(5), 5)
        .expect_err("refused");
    assert!(
        refused.to_string().contains("start a guest command"),
        "{refused}"
    );
}

#[test]
fn guest_file_reads_are_bounded_and_refusals_named_against_fake_qga_server() {
    let mut node = FakeNode::new("qga-file");
    add_qga(
        &mut node,
        100,
        json!({"return": {"count": 5, "buf-b64": "aGVsbG8=", "eof": false}}),
    );
    add_qga(
        &mut node,
        101,
        json!({"return": {"count": 5, "buf-b64": "aGVsbG8=", "eof": true}}),
    );
    add_qga(
        &mut node,
        102,
        json!({"error": {"class": "CommandNotFound", "desc": "The command guest-file-open has been disabled for this instance"}}),
    );
    add_qga(
        &mut node,
        103,
        json!({"error": {"class": "GenericError", "desc": "failed to read file: Resource temporarily unavailable"}}),
    );
    let backend = ProxmoxHypervisor::new(node.settings());
    let id = |vmid: u32| DomainId {
        uuid: vmid.to_string(),
        name: format!("vm{vmid}"),
    };
    let timeout = Duration::from_secs(2);
    // Five bytes where four were asked: refused, not cut.
    assert!(backend.guest_file_read(&id(100), 7, 4, timeout).is_err());
    let chunk = backend
        .guest_file_read(&id(101), 7, 64, timeout)
        .expect("read");
    assert_eq!(chunk.data, b"hello");
    assert!(chunk.eof);
    let disabled = backend
        .guest_file_open(&id(102), "/dev/kmsg", timeout)
        .expect_err("disabled");
    assert!(disabled.is_command_disabled(), "{disabled}");
    let end = backend
        .guest_file_read(&id(103), 7, 64, timeout)
        .expect_err("end of the ring");
    assert!(
        matches!(end, HypervisorError::GuestRefused { .. }) && !end.is_command_disabled(),
        "{end}"
    );
}

fn answering(peer: Peer) {
    answering_with_memory_devices(peer, json!([]));
}

/// Answers one poll: the balloon, its stats, and `query-memory-devices` with `devices`.
fn answering_with_memory_devices(peer: Peer, devices: serde_json::Value) {
    let mut peer = peer;
    peer.send(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n");
    let negotiate = peer.request();
    peer.send(format!("{}\n", json!({"return": {}, "id": negotiate["id"]})).as_bytes());
    let balloon = peer.request();
    let stats = peer.request();
    let memory_devices = peer.request();
    assert_eq!(memory_devices["execute"], "query-memory-devices");
    peer.send(
            format!(
                "{}\n{}\n{}\n",
                json!({"event": "MEMORY_DEVICE_SIZE_CHANGE", "data": {"id": "virtiomem0", "size": 0, "qom-path": "/machine/peripheral/virtiomem0"}}),
                json!({"return": {"stats": {"stat-available-memory": 104_857_600_u64}, "last-update": 5}, "id": stats["id"]}),
                json!({"return": {"actual": 1_073_741_824_u64}, "id": balloon["id"]}),
            )
            .as_bytes(),
        );
    peer.send(
        format!(
            "{}\n",
            json!({"return": devices, "id": memory_devices["id"]})
        )
        .as_bytes(),
    );
}

#[test]
fn a_vm_with_virtio_mem_has_its_devices_in_the_poll_and_its_config_against_fake_qmp_server() {
    let mut node = FakeNode::new("vmem");
    node.add_vm(100, "name: elastic\nmemory: 1024\n", |peer| {
        answering_with_memory_devices(
            peer,
            json!([{"type": "virtio-mem", "data": {"id": "virtiomem0",
                    "memaddr": 4_294_967_296_u64, "requested-size": 268_435_456,
                    "size": 536_870_912, "max-size": 2_147_483_648_u64,
                    "block-size": 2_097_152, "node": 0, "memdev": "/objects/mem0"}}]),
        )
    });
    let backend = ProxmoxHypervisor::new(node.settings());
    let samples = backend.balloon_samples().expect("poll");
    let (id, sample) = &samples[0];
    assert_eq!(sample.actual_kib, Some(1024 * 1024));
    assert_eq!(sample.virtio_mem.len(), 1);
    let device = &sample.virtio_mem[0];
    assert_eq!(device.id, "virtiomem0");
    assert_eq!(device.requested_kib, Some(256 * 1024));
    // The same device's size-change event (size 0) came in the conversation before the
    // reply: skipped, the reply's size stands (docs/elastic.md, why Proxmox has no
    // pushed size).
    assert_eq!(device.plugged_kib, Some(512 * 1024));
    assert_eq!(device.max_size_kib, Some(2 * 1024 * 1024));
    assert_eq!(device.block_size_kib, Some(2048));
    // The configuration lists what the poll found (no balloon property read: the
    // fake served its one connection).
    let config = backend.domain_config(id).expect("config");
    assert_eq!(config.virtio_mem, sample.virtio_mem);
}

#[test]
fn busy_vms_cost_one_timeout_per_poll_against_fake_qmp_server() {
    let mut node = FakeNode::new("busy");
    node.add_vm(
        100,
        "name: good\nmemory: 1024\nsmbios1: uuid=5B0BD0F9-1d53-4d89-a8d6-3c5ec3e1c2a1\n",
        answering,
    );
    for vmid in 101..=106 {
        node.add_silent_vm(vmid);
    }
    let backend = ProxmoxHypervisor::new(node.settings());
    let started = Instant::now();
    let samples = backend.balloon_samples().expect("poll");
    let elapsed = started.elapsed();
    // Six stuck monitors in parallel: one call timeout (300 ms), not six.
    assert!(elapsed < Duration::from_millis(800), "{elapsed:?}");
    assert_eq!(samples.len(), 7, "busy VMs are listed, not gone");
    let (good_id, good) = &samples[0];
    assert_eq!(good_id.uuid, "5b0bd0f9-1d53-4d89-a8d6-3c5ec3e1c2a1");
    assert_eq!(good_id.name, "good");
    assert_eq!(good.actual_kib, Some(1024 * 1024));
    assert_eq!(good.usable_kib, Some(102_400));
    assert_eq!(good.rss_kib, Some(1000));
    for (id, sample) in &samples[1..] {
        assert_eq!(id.name, format!("vm{}", id.uuid));
        assert_eq!(sample.actual_kib, None);
        assert_eq!(sample.maximum_kib, Some(1024 * 1024));
    }
    assert_eq!(backend.last_poll().n_skipped, 6);
    // The uuid maps back to the vmid for per-VM calls.
    assert_eq!(backend.vmid_of(good_id).expect("vmid"), 100);
}

#[test]
fn the_poll_deadline_bounds_a_poll_with_few_workers_against_fake_qmp_server() {
    let mut node = FakeNode::new("deadline");
    for vmid in 101..=106 {
        node.add_silent_vm(vmid);
    }
    let backend = ProxmoxHypervisor::new(ProxmoxSettings {
        max_parallel: 2,
        poll_deadline: Duration::from_millis(500),
        ..node.settings()
    });
    let started = Instant::now();
    let samples = backend.balloon_samples().expect("poll");
    let elapsed = started.elapsed();
    // 2 workers x 300 ms would be 900 ms for six VMs; the deadline ends it at 500.
    assert!(elapsed < Duration::from_millis(700), "{elapsed:?}");
    assert_eq!(samples.len(), 6);
    assert_eq!(backend.last_poll().n_skipped, 6);
}

#[test]
fn dead_pids_and_foreign_processes_are_not_running() {
    let mut node = FakeNode::new("dead");
    node.add_vm(100, "memory: 512\n", drop);
    // A pid file whose process is gone, and one whose pid was reused.
    std::fs::write(node.dir.join("run/102.pid"), "4000102\n").expect("pid");
    std::fs::write(node.dir.join("run/103.pid"), "4000100\n").expect("pid");
    std::fs::write(node.dir.join("conf/104.conf"), "memory: 512\n").expect("conf");
    let backend = ProxmoxHypervisor::new(node.settings());
    let running: Vec<u32> = backend
        .running()
        .expect("running")
        .iter()
        .map(|vm| vm.vmid)
        .collect();
    assert_eq!(running, [100]);
    let domains = backend.domains().expect("domains");
    let states: Vec<(&str, DomainState)> = domains
        .iter()
        .map(|info| (info.id.uuid.as_str(), info.state))
        .collect();
    // 102 and 103 have neither a live QEMU nor a config: not VMs of this node.
    assert_eq!(
        states,
        [("100", DomainState::Running), ("104", DomainState::ShutOff)]
    );
}

#[test]
fn malformed_conf_is_an_error_naming_file_and_line() {
    let mut node = FakeNode::new("malformed");
    node.add_vm(100, "name: ok\nmemory: lots\n", drop);
    let backend = ProxmoxHypervisor::new(node.settings());
    let id = DomainId {
        uuid: "100".to_owned(),
        name: "ok".to_owned(),
    };
    let error = backend.domain_config(&id).expect_err("malformed");
    let chain = format!(
        "{error} / {}",
        std::error::Error::source(&error)
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    assert!(chain.contains("1 bad lines"), "{chain}");
    let first = std::error::Error::source(&error)
        .and_then(std::error::Error::source)
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(first.contains("100.conf:2: memory"), "{first}");
    // Identity still comes from the readable part of the file.
    let domains = backend.domains().expect("domains");
    assert_eq!(domains[0].id.name, "ok");
}

#[test]
fn the_balloon_minimum_is_the_vms_balloon_floor() {
    let mut node = FakeNode::new("floor");
    // No QMP answer: the balloon device's properties stay unknown, the floor does not.
    node.add_vm(100, "name: a\nmemory: 2048\nballoon: 1024\n", drop);
    node.add_vm(101, "name: b\nmemory: 2048\nballoon: 0\n", drop);
    let backend = ProxmoxHypervisor::new(node.settings());
    let config = |vmid: &str| {
        backend
            .domain_config(&DomainId {
                uuid: vmid.to_owned(),
                name: String::new(),
            })
            .expect("config")
    };
    assert_eq!(config("100").current_memory_kib, Some(1024 * 1024));
    assert_eq!(
        config("101").current_memory_kib,
        None,
        "balloon: 0 is no balloon"
    );
}

#[test]
fn the_balloon_target_is_set_in_bytes_over_qmp_against_fake_qmp_server() {
    let mut node = FakeNode::new("balloon");
    let (requests, received) = channel::<Value>();
    node.add_vm(
        100,
        "name: good\nmemory: 2048\nballoon: 512\nsmbios1: uuid=5b0bd0f9-1d53-4d89-a8d6-3c5ec3e1c2a1\n",
        move |mut peer| {
            peer.send(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n");
            let negotiate = peer.request();
            peer.send(format!("{}\n", json!({"return": {}, "id": negotiate["id"]})).as_bytes());
            let balloon = peer.request();
            let reply = json!({"return": {}, "id": balloon["id"]});
            let _ = requests.send(balloon);
            peer.send(format!("{reply}\n").as_bytes());
        },
    );
    let backend = ProxmoxHypervisor::new(node.settings());
    let id = DomainId {
        uuid: "5b0bd0f9-1d53-4d89-a8d6-3c5ec3e1c2a1".into(),
        name: "good".into(),
    };
    backend.domains().expect("list");
    backend
        .set_balloon_target(&id, 1536 * 1024)
        .expect("balloon set");
    let request = received
        .recv_timeout(Duration::from_secs(5))
        .expect("a request");
    assert_eq!(request["execute"], "balloon");
    assert_eq!(request["arguments"]["value"], 1536_u64 * 1024 * 1024);
    // A VM the node does not have is an error naming it.
    let unknown = DomainId {
        uuid: "00000000-0000-0000-0000-000000000000".into(),
        name: "ghost".into(),
    };
    let error = backend
        .set_balloon_target(&unknown, 1024)
        .expect_err("no such VM");
    assert!(error.to_string().contains("ghost"), "{error}");
}

/// A QEMU whose balloon answers the three `qom-get`s of `domain_config`, the last one
/// (`free-page-reporting`) with `reply` (`{"return": ..}` or `{"error": ..}`).
fn balloon_properties(reply: Value) -> impl FnOnce(Peer) + Send + 'static {
    move |mut peer| {
        peer.send(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n");
        let negotiate = peer.request();
        peer.send(format!("{}\n", json!({"return": {}, "id": negotiate["id"]})).as_bytes());
        for _ in 0..3 {
            let request = peer.request();
            let mut answer = match request["arguments"]["property"].as_str() {
                Some("guest-stats-polling-interval") => json!({"return": 2}),
                Some("deflate-on-oom") => json!({"return": false}),
                _ => reply.clone(),
            };
            answer["id"] = request["id"].clone();
            peer.send(format!("{answer}\n").as_bytes());
        }
    }
}

/// Free page reporting as QEMU's balloon says (on; off where the property does not
/// exist, a QEMU before 5.1), else as the `machine:` version says (qemu-server turns it
/// on from 6.2), else unknown.
#[test]
fn free_page_reporting_from_qom_get_then_the_machine_version_against_fake_qmp_server() {
    let mut node = FakeNode::new("fpr");
    node.add_vm(
        100,
        "memory: 1024\nmachine: pc-i440fx-5.2\n",
        balloon_properties(json!({"return": true})),
    );
    node.add_vm(
        101,
        "memory: 1024\n",
        balloon_properties(json!({"error": {"class": "GenericError",
            "desc": "Property 'virtio-balloon-pci.free-page-reporting' not found"}})),
    );
    node.add_vm(102, "memory: 1024\nmachine: pc-q35-8.1+pve0\n", drop);
    node.add_vm(103, "memory: 1024\nmachine: pc-i440fx-6.1\n", drop);
    node.add_vm(104, "memory: 1024\nmachine: q35\n", drop);
    let backend = ProxmoxHypervisor::new(node.settings());
    let config = |vmid: &str| {
        backend
            .domain_config(&DomainId {
                uuid: vmid.to_owned(),
                name: String::new(),
            })
            .expect("config")
    };
    let live = config("100");
    assert_eq!(live.free_page_reporting, Some(true), "QEMU's answer wins");
    assert_eq!(live.stats_period_secs, Some(2));
    assert_eq!(live.deflate_on_oom, Some(false));
    assert_eq!(config("101").free_page_reporting, Some(false));
    assert_eq!(config("102").free_page_reporting, Some(true));
    assert_eq!(config("103").free_page_reporting, Some(false));
    assert_eq!(config("104").free_page_reporting, None);
}
