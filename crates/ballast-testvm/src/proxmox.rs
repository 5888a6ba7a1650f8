//! Proxmox-style guests: qemu-system-x86_64 started directly, without libvirt,
//! with the file layout of a Proxmox VE host.
//!
//! Under the guest's run folder:
//! ```text
//! qemu-server/<vmid>.qmp       QMP monitor socket   (-chardev socket,id=qmp ... -mon chardev=qmp,mode=control)
//! qemu-server/<vmid>.qga       guest agent socket   (virtserialport org.qemu.guest_agent.0)
//! qemu-server/<vmid>.serial0   serial console socket (isa-serial; Proxmox `serial0: socket`)
//! qemu-server/<vmid>.pid       pidfile (-pidfile, -daemonize)
//! qemu-server/<vmid>.serial0.log  what the harness read from the serial socket
//! root/etc/pve/qemu-server/<vmid>.conf  the fake VM config (memory, balloon, name, agent, serial0)
//! ```
//! The balloon is `-device virtio-balloon-pci,id=balloon0`. With
//! [`ProxmoxSpec::virtio_mem`], the boot memory becomes NUMA node 0 and a virtio-mem
//! device joins it (the shape of a Proxmox VE VM with `numa: 1` and memory hotplug):
//! ```text
//! -m 384M,slots=4,maxmem=896M
//! -object memory-backend-ram,id=ram-node0,size=384M -numa node,nodeid=0,cpus=0,memdev=ram-node0
//! -object memory-backend-ram,id=mem-virtiomem0,size=512M,reserve=off
//! -device virtio-mem-pci,id=virtiomem0,memdev=mem-virtiomem0,node=0,block-size=2048K,requested-size=512M
//! ```
//! QEMU starts paused (`-S`)
//! so the harness can attach to the serial socket before the first byte, then
//! sets `guest-stats-polling-interval` (as Proxmox does) and sends `cont`.
//!
//! The harness holds the serial socket (one client at a time); the QMP and guest
//! agent sockets are free for the code under test between harness calls.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::accel::Accel;
use crate::agent::{self, ExecOutput};
use crate::cmd;
use crate::error::{Error, Result};
use crate::guest::READY_LINE;
use crate::image::GuestImage;
use crate::kernel::GuestKernel;
use crate::lab::Lab;
use crate::qmp::{Qga, Qmp};
use crate::serial;
use crate::slots::SlotGuard;
use crate::spec::{VirtioMemSpec, VIRTIO_MEM_ID};

const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A Proxmox-style guest to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxmoxSpec {
    pub vmid: u32,
    /// `memory:` and `-m`.
    pub memory_mib: u64,
    /// `balloon:` (the minimum Proxmox's auto-ballooning may go down to).
    pub balloon_min_mib: u64,
    pub kernel: GuestKernel,
    pub loglevel: u8,
    /// `deflate-on-oom=on` on the balloon device.
    pub deflate_on_oom: bool,
    /// `guest-stats-polling-interval` set after start; 0 leaves polling off.
    pub stats_period_secs: u32,
    /// The guest agent channel (`agent: 1`).
    pub agent: bool,
    /// The harness attaches to `<vmid>.serial0` and logs it (`serial_log_path`).
    /// Off leaves the single-client socket to the code under test; `wait_ready`
    /// then waits for the guest agent instead (so `agent` must be on).
    pub capture_serial: bool,
    /// A raw virtio disk of this many MiB (`/dev/vda` in the guest, zeros, sparse on
    /// the host); 0: none. Reading it fills the guest's reclaimable page cache
    /// (`Buffers`, `Active(file)`/`Inactive(file)`), which the initramfs's tmpfs cannot.
    pub disk_mib: u64,
    /// A virtio-mem device (id [`crate::VIRTIO_MEM_ID`]) beside the boot memory
    /// (`memory_mib`, then NUMA node 0); resize it over QMP
    /// ([`Qmp::set_virtio_mem_requested`]).
    pub virtio_mem: Option<VirtioMemSpec>,
}

impl Default for ProxmoxSpec {
    fn default() -> Self {
        ProxmoxSpec {
            vmid: 100,
            memory_mib: 512,
            balloon_min_mib: 256,
            kernel: GuestKernel::Debian61,
            loglevel: 7,
            deflate_on_oom: false,
            stats_period_secs: 2,
            agent: true,
            capture_serial: true,
            disk_mib: 0,
            virtio_mem: None,
        }
    }
}

/// A running Proxmox-style QEMU; dropping it kills QEMU and removes its files.
#[derive(Debug)]
pub struct ProxmoxGuest {
    lab: &'static Lab,
    name: String,
    spec: ProxmoxSpec,
    run_dir: PathBuf,
    qemu_pid: Option<u32>,
    serial_thread: Option<JoinHandle<()>>,
    boot_started: Instant,
    _slot: SlotGuard,
}

impl ProxmoxGuest {
    pub(crate) fn start(
        lab: &'static Lab,
        name: String,
        spec: ProxmoxSpec,
        image: &GuestImage,
        accel: Accel,
        run_dir: PathBuf,
        slot: SlotGuard,
    ) -> Result<ProxmoxGuest> {
        let mut guest = ProxmoxGuest {
            lab,
            name,
            spec,
            run_dir,
            qemu_pid: None,
            serial_thread: None,
            boot_started: Instant::now(),
            _slot: slot,
        };
        // From here on, an early return drops `guest`, which cleans up.
        guest.write_files()?;
        guest.launch(image, accel)?;
        if guest.spec.capture_serial {
            let serial = connect_with_retry(&guest.serial_socket())?;
            guest.serial_thread = Some(spawn_serial_copy(
                serial,
                guest.serial_log_path().to_path_buf(),
            ));
        }
        let mut qmp = guest.qmp()?;
        if guest.spec.stats_period_secs > 0 {
            qmp.set_stats_polling_secs(guest.spec.stats_period_secs)?;
        }
        guest.boot_started = Instant::now();
        qmp.execute("cont", None)?;
        Ok(guest)
    }

    fn write_files(&self) -> Result<()> {
        let socket_dir = self.socket_dir();
        std::fs::create_dir_all(&socket_dir).map_err(Error::io(&socket_dir))?;
        for socket in [self.qmp_socket(), self.qga_socket(), self.serial_socket()] {
            let len = socket.as_os_str().len();
            if len > 107 {
                return Err(Error::SocketPathTooLong { path: socket, len });
            }
        }
        let conf = self.conf_path();
        if let Some(dir) = conf.parent() {
            std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        }
        std::fs::write(&conf, crate::pve_conf::render(&self.name, &self.spec))
            .map_err(Error::io(&conf))
    }

    fn launch(&mut self, image: &GuestImage, accel: Accel) -> Result<()> {
        let socket = |path: PathBuf, id: &str| {
            format!("socket,id={id},path={},server=on,wait=off", path.display())
        };
        let mut balloon = "virtio-balloon-pci,id=balloon0,bus=pci.0,addr=0x3".to_owned();
        if self.spec.deflate_on_oom {
            balloon.push_str(",deflate-on-oom=on");
        }
        let mut command = Command::new("qemu-system-x86_64");
        command
            .arg("-name")
            .arg(format!("{},debug-threads=on", self.name))
            .arg("-chardev")
            .arg(socket(self.qmp_socket(), "qmp"))
            .args(["-mon", "chardev=qmp,mode=control"])
            .arg("-pidfile")
            .arg(self.pidfile())
            .arg("-daemonize")
            .arg("-machine")
            .arg(format!("type=pc,accel={}", accel.qemu_accel()))
            .args([
                "-smp",
                "1,sockets=1,cores=1,maxcpus=1",
                "-nodefaults",
                "-no-user-config",
            ])
            .args(["-display", "none"])
            .args(memory_args(self.spec.memory_mib, self.spec.virtio_mem))
            .arg("-kernel")
            .arg(&image.vmlinuz)
            .arg("-initrd")
            .arg(&image.initramfs)
            .arg("-append")
            .arg(kernel_cmdline(&self.spec))
            .arg("-chardev")
            .arg(socket(self.serial_socket(), "serial0"))
            .args([
                "-device",
                "isa-serial,chardev=serial0",
                "-device",
                &balloon,
                "-S",
            ]);
        if self.spec.disk_mib > 0 {
            let disk = self.disk_path();
            let file = std::fs::File::create(&disk).map_err(Error::io(&disk))?;
            file.set_len(self.spec.disk_mib << 20)
                .map_err(Error::io(&disk))?;
            command
                .arg("-drive")
                .arg(format!(
                    "file={},if=none,id=disk0,format=raw",
                    disk.display()
                ))
                .args(["-device", "virtio-blk-pci,drive=disk0,bus=pci.0,addr=0x5"]);
        }
        if self.spec.agent {
            command
                .arg("-chardev")
                .arg(socket(self.qga_socket(), "qga0"))
                .args(["-device", "virtio-serial,id=qga0,bus=pci.0,addr=0x8"])
                .args([
                    "-device",
                    "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
                ]);
        }
        // With -daemonize the command returns once QEMU is set up and the pidfile is written.
        cmd::run_command(&mut command)?;
        let pidfile = self.pidfile();
        let pid = std::fs::read_to_string(&pidfile)
            .map_err(Error::io(&pidfile))?
            .trim()
            .parse()
            .map_err(|_| Error::Parse {
                what: pidfile.display().to_string(),
                detail: "not a PID".to_owned(),
            })?;
        self.qemu_pid = Some(pid);
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn vmid(&self) -> u32 {
        self.spec.vmid
    }

    pub fn spec(&self) -> &ProxmoxSpec {
        &self.spec
    }

    /// QEMU's PID (from the pidfile).
    pub fn pid(&self) -> Option<u32> {
        self.qemu_pid
    }

    /// The `/var/run/qemu-server` equivalent holding the sockets and the pidfile.
    pub fn socket_dir(&self) -> PathBuf {
        self.run_dir.join("qemu-server")
    }

    pub fn qmp_socket(&self) -> PathBuf {
        self.socket_dir().join(format!("{}.qmp", self.spec.vmid))
    }

    pub fn qga_socket(&self) -> PathBuf {
        self.socket_dir().join(format!("{}.qga", self.spec.vmid))
    }

    pub fn serial_socket(&self) -> PathBuf {
        self.socket_dir()
            .join(format!("{}.serial0", self.spec.vmid))
    }

    pub fn pidfile(&self) -> PathBuf {
        self.socket_dir().join(format!("{}.pid", self.spec.vmid))
    }

    /// The raw disk image behind `/dev/vda` (see [`ProxmoxSpec::disk_mib`]).
    pub fn disk_path(&self) -> PathBuf {
        self.run_dir.join("disk.raw")
    }

    /// The test root standing in for `/` of a Proxmox node (holds `etc/pve/...`).
    pub fn pve_root(&self) -> PathBuf {
        self.run_dir.join("root")
    }

    /// `<pve_root>/etc/pve/qemu-server/<vmid>.conf`.
    pub fn conf_path(&self) -> PathBuf {
        self.pve_root()
            .join(format!("etc/pve/qemu-server/{}.conf", self.spec.vmid))
    }

    /// A new QMP connection (capabilities negotiated).
    pub fn qmp(&self) -> Result<Qmp> {
        Qmp::connect(&self.qmp_socket())
    }

    /// A new guest agent connection (synchronised).
    pub fn qga(&self) -> Result<Qga> {
        Qga::connect(&self.qga_socket(), AGENT_TIMEOUT)
    }

    /// Waits for `LAB-READY` on the serial console (and the agent, when configured);
    /// returns the time since QEMU was resumed.
    pub fn wait_ready(&self, timeout: Duration) -> Result<Duration> {
        if self.spec.capture_serial {
            serial::wait_count(&self.serial_log_path(), READY_LINE, 1, timeout)?;
        } else if !self.spec.agent {
            return Err(Error::Parse {
                what: "ProxmoxSpec".to_owned(),
                detail: "wait_ready needs capture_serial or agent".to_owned(),
            });
        }
        if self.spec.agent {
            let deadline = Instant::now() + timeout;
            while Qga::connect(&self.qga_socket(), Duration::from_secs(2)).is_err() {
                if Instant::now() > deadline {
                    return Err(Error::Timeout {
                        what: format!("guest agent on {}", self.qga_socket().display()),
                        timeout,
                    });
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(self.boot_started.elapsed())
    }

    /// Runs `path args...` in the guest through the `<vmid>.qga` socket.
    pub fn exec(&self, path: &str, args: &[&str]) -> Result<ExecOutput> {
        let qga = std::cell::RefCell::new(self.qga()?);
        agent::exec(
            &|command| qga.borrow_mut().command(command),
            path,
            args,
            AGENT_TIMEOUT,
        )
    }

    /// Starts memhog in the background (see [`crate::Guest::start_hog`]).
    pub fn start_hog(&self, step_mib: u64, delay_ms: u64) -> Result<()> {
        let line = agent::hog_shell_line(step_mib, delay_ms, None);
        let output = self.exec("/bin/sh", &["-c", &line])?;
        if output.success() {
            Ok(())
        } else {
            Err(Error::Agent {
                command: format!("guest-exec /bin/sh -c {line:?}"),
                message: format!("{output:?}"),
            })
        }
    }

    /// `dmesg` of the guest through the agent.
    pub fn dmesg_via_agent(&self) -> Result<String> {
        Ok(self.exec("/bin/dmesg", &[])?.stdout)
    }

    /// The serial console as captured from `<vmid>.serial0`.
    pub fn serial_log_path(&self) -> PathBuf {
        self.socket_dir()
            .join(format!("{}.serial0.log", self.spec.vmid))
    }

    pub fn serial_text(&self) -> String {
        serial::read_text(&self.serial_log_path())
    }

    /// Waits for a serial line containing `needle`; returns it.
    pub fn wait_serial(&self, needle: &str, timeout: Duration) -> Result<String> {
        serial::wait_count(&self.serial_log_path(), needle, 1, timeout)
    }
}

impl Drop for ProxmoxGuest {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- ballast-testvm: serial log of {} (vmid {}), last 40 lines ---\n{}\n---",
                self.name,
                self.spec.vmid,
                serial::tail(&self.serial_log_path(), 40)
            );
        }
        if let Some(pid) = self.qemu_pid {
            cmd::stop_pid(pid, Duration::from_secs(10));
        }
        if let Some(thread) = self.serial_thread.take() {
            let _ = thread.join();
        }
        if !self.lab.settings().keep_run_files {
            let _ = std::fs::remove_dir_all(&self.run_dir);
        }
    }
}

/// `-m` and, with a virtio-mem device, node 0's backend and the device.
fn memory_args(memory_mib: u64, virtio_mem: Option<VirtioMemSpec>) -> Vec<String> {
    let Some(device) = virtio_mem else {
        return vec!["-m".to_owned(), memory_mib.to_string()];
    };
    let id = VIRTIO_MEM_ID;
    [
        "-m",
        &format!(
            "{memory_mib}M,slots={},maxmem={}M",
            device.slots.max(1),
            memory_mib + device.max_mib
        ),
        "-object",
        &format!("memory-backend-ram,id=ram-node0,size={memory_mib}M"),
        "-numa",
        "node,nodeid=0,cpus=0,memdev=ram-node0",
        "-object",
        &format!(
            "memory-backend-ram,id=mem-{id},size={}M,reserve=off",
            device.max_mib
        ),
        "-device",
        &format!(
            "virtio-mem-pci,id={id},memdev=mem-{id},node=0,block-size={}K,requested-size={}M,bus=pci.0,addr=0x6",
            device.block_kib,
            device.requested_mib.min(device.max_mib)
        ),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The guest kernel's command line (`memhp_default_state=` with a virtio-mem device).
fn kernel_cmdline(spec: &ProxmoxSpec) -> String {
    let mut line = format!("console=ttyS0 loglevel={} panic=-1", spec.loglevel);
    if let Some(device) = spec.virtio_mem {
        line.push(' ');
        line.push_str(device.online.kernel_arg());
    }
    line
}

fn connect_with_retry(path: &Path) -> Result<UnixStream> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match UnixStream::connect(path) {
            Ok(stream) => return Ok(stream),
            Err(error) if Instant::now() > deadline => return Err(Error::io(path)(error)),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Copies everything QEMU writes to the serial socket into the log file until EOF.
fn spawn_serial_copy(mut stream: UnixStream, log: PathBuf) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(mut file) = std::fs::File::create(&log) else {
            return;
        };
        let mut buffer = [0u8; 8192];
        while let Ok(n) = stream.read(&mut buffer) {
            if n == 0 || file.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_memory_is_one_m_argument() {
        assert_eq!(memory_args(512, None), ["-m", "512"]);
        assert_eq!(
            kernel_cmdline(&ProxmoxSpec::default()),
            "console=ttyS0 loglevel=7 panic=-1"
        );
    }

    #[test]
    fn a_virtio_mem_device_gets_a_numa_node_its_backend_and_its_request() {
        let device = VirtioMemSpec {
            max_mib: 512,
            requested_mib: 128,
            ..VirtioMemSpec::default()
        };
        let args = memory_args(384, Some(device)).join(" ");
        assert_eq!(
            args,
            "-m 384M,slots=4,maxmem=896M \
             -object memory-backend-ram,id=ram-node0,size=384M \
             -numa node,nodeid=0,cpus=0,memdev=ram-node0 \
             -object memory-backend-ram,id=mem-virtiomem0,size=512M,reserve=off \
             -device virtio-mem-pci,id=virtiomem0,memdev=mem-virtiomem0,node=0,block-size=2048K,\
             requested-size=128M,bus=pci.0,addr=0x6"
        );
        let spec = ProxmoxSpec {
            virtio_mem: Some(device),
            ..ProxmoxSpec::default()
        };
        assert!(kernel_cmdline(&spec).ends_with(" memhp_default_state=online_movable"));
    }
}
