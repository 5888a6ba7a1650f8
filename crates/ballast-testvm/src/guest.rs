//! A running libvirt guest owned by one test: actions, observations, RAII cleanup.
//!
//! Dropping a [`Guest`] destroys and undefines its domain and removes its run
//! folder (serial log included; `BALLAST_LAB_KEEP=1` keeps the folder). When the
//! drop happens during a panic, the tail of the serial log goes to stderr first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::accel::Accel;
use crate::agent::{self, ExecOutput};
use crate::error::{Error, Result};
use crate::image::GuestImage;
use crate::lab::Lab;
use crate::lease::SharedLease;
use crate::serial;
use crate::slots::SlotGuard;
use crate::spec::{Console, GuestSpec};
use crate::virsh::parse_domstats;

/// The line the guest init prints when it is up (modules loaded, qemu-ga started).
pub const READY_LINE: &str = "LAB-READY";
/// The kernel's line for every OOM kill.
pub const KILL_LINE: &str = "Out of memory: Killed process";
/// The first line of every OOM report.
pub const INVOKED_LINE: &str = "invoked oom-killer";

const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

/// QEMU's balloon statistics as read with QMP `qom-get guest-stats`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GuestStats {
    /// `stat-*` keys; u64::MAX (-1) means "never reported by the guest".
    pub stats: BTreeMap<String, u64>,
    /// Host time (epoch seconds) of the guest's last report; 0 before the first.
    pub last_update: u64,
}

impl GuestStats {
    /// A stat the guest has reported (None when absent or u64 -1).
    pub fn get(&self, key: &str) -> Option<u64> {
        self.stats.get(key).copied().filter(|v| *v != u64::MAX)
    }

    /// Reads the `return` object of `qom-get .../balloon0 guest-stats`.
    pub fn from_qom(value: &Value) -> Result<GuestStats> {
        let stats = value
            .get("stats")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::Parse {
                what: "qom-get guest-stats".to_owned(),
                detail: value.to_string(),
            })?;
        Ok(GuestStats {
            stats: stats
                .iter()
                .filter_map(|(key, v)| Some((key.clone(), v.as_u64()?)))
                .collect(),
            last_update: value
                .get("last-update")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        })
    }
}

/// A libvirt domain booted by [`Lab::boot`].
#[derive(Debug)]
pub struct Guest {
    lab: &'static Lab,
    name: String,
    spec: GuestSpec,
    image: GuestImage,
    accel: Accel,
    run_dir: PathBuf,
    serial_log: PathBuf,
    /// Boots so far (each prints one READY line into the appended serial log).
    boots: usize,
    boot_started: Instant,
    /// The console pty held open by [`Guest::console_run`] (path, handle).
    console_tty: std::sync::Mutex<Option<(String, std::fs::File)>>,
    /// Its guest slot and its share of the libvirtd lease, released after the domain.
    _slot: (SlotGuard, SharedLease),
}

impl Guest {
    pub(crate) fn new(
        lab: &'static Lab,
        name: String,
        spec: GuestSpec,
        image: GuestImage,
        accel: Accel,
        run_dir: PathBuf,
        slot: (SlotGuard, SharedLease),
    ) -> Guest {
        Guest {
            lab,
            serial_log: match &spec.file_console {
                Some(path) => run_dir.join(path),
                None => run_dir.join("serial.log"),
            },
            name,
            spec,
            image,
            accel,
            run_dir,
            boots: 0,
            boot_started: Instant::now(),
            console_tty: std::sync::Mutex::new(None),
            _slot: slot,
        }
    }

    /// Defines and starts the domain (does not wait for the guest to be ready).
    pub(crate) fn define_and_start(&mut self) -> Result<()> {
        if let Some(dir) = self.serial_log.parent() {
            crate::settings::create_shared_dir(dir).map_err(Error::io(dir))?;
        }
        let xml = crate::domain_xml::render(
            &self.name,
            &self.spec,
            &self.image,
            self.accel,
            &self.serial_log,
            self.lab.settings().emulator.as_deref(),
        );
        let xml_path = self.run_dir.join("domain.xml");
        std::fs::write(&xml_path, xml).map_err(Error::io(&xml_path))?;
        self.lab.virsh().run([Path::new("define"), &xml_path])?;
        self.start()
    }

    /// The domain name (`ballast-test-<pid>-<n>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn spec(&self) -> &GuestSpec {
        &self.spec
    }

    pub fn image(&self) -> &GuestImage {
        &self.image
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// The guest's run folder (domain.xml, serial.log).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Waits for this boot's `LAB-READY` line (and a guest-ping when the agent is on);
    /// returns the time since `virsh start`.
    pub fn wait_ready(&self, timeout: Duration) -> Result<Duration> {
        let deadline = Instant::now() + timeout;
        if self.spec.serial_log {
            serial::wait_count(&self.serial_log, READY_LINE, self.boots, timeout)?;
        }
        // A hostile agent never answers a ping; LAB-READY says it was started.
        if self.spec.guest_agent && self.spec.hostile_agent.is_none() {
            while self
                .agent_command(&json!({"execute": "guest-ping"}))
                .is_err()
            {
                if Instant::now() > deadline {
                    return Err(Error::Timeout {
                        what: format!("guest agent of {} to answer guest-ping", self.name),
                        timeout,
                    });
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(self.boot_started.elapsed())
    }

    /// `virsh setmem --live`: sets the balloon target (KiB the guest keeps).
    pub fn setmem_kib(&self, kib: u64) -> Result<()> {
        self.lab
            .virsh()
            .run(["setmem", &self.name, &format!("{kib}K"), "--live"])
            .map(drop)
    }

    /// `virsh setmem` in MiB.
    pub fn setmem_mib(&self, mib: u64) -> Result<()> {
        self.setmem_kib(mib * 1024)
    }

    /// `virsh dumpxml`: the live domain XML (aliases, `<current>` of virtio-mem devices).
    pub fn dumpxml(&self) -> Result<String> {
        self.lab.virsh().run(["dumpxml", &self.name])
    }

    /// Runs `virsh -c <uri> args...` (the caller names the domain).
    pub(crate) fn virsh_command(&self, args: &[&str]) -> Result<String> {
        self.lab.virsh().run(args)
    }

    /// `virsh domstats --balloon`: `balloon.current`, `balloon.usable`, `balloon.last-update`, ...
    pub fn domstats_balloon(&self) -> Result<BTreeMap<String, u64>> {
        let out = self
            .lab
            .virsh()
            .run(["domstats", "--balloon", &self.name])?;
        Ok(parse_domstats(&out))
    }

    /// Polls `balloon.current` until it is within `tolerance_kib` of `target_kib`.
    pub fn wait_balloon_current(
        &self,
        target_kib: u64,
        tolerance_kib: u64,
        timeout: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let current = self.domstats_balloon()?.get("balloon.current").copied();
            if current.is_some_and(|kib| kib.abs_diff(target_kib) <= tolerance_kib) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: format!(
                        "balloon.current of {} to reach {target_kib} KiB (now {current:?})",
                        self.name
                    ),
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends a QMP command through `virsh qemu-monitor-command` and returns its `return`.
    ///
    /// libvirt then marks the domain `tainted: custom-monitor`.
    pub fn monitor_command(&self, command: &Value) -> Result<Value> {
        let out =
            self.lab
                .virsh()
                .run(["qemu-monitor-command", &self.name, &command.to_string()])?;
        let reply: Value = parse_json("qemu-monitor-command", &out)?;
        agent::return_value(&command_name(command), &reply).map_err(|error| match error {
            Error::Agent { command, message } => Error::Qmp { command, message },
            other => other,
        })
    }

    /// The balloon's full guest stats (QMP qom-get), including 6.12's `stat-oom-kills`,
    /// which libvirt 9.0 does not pass on.
    pub fn balloon_guest_stats(&self) -> Result<GuestStats> {
        let value = self.monitor_command(&json!({
            "execute": "qom-get",
            "arguments": {"path": "/machine/peripheral/balloon0", "property": "guest-stats"},
        }))?;
        GuestStats::from_qom(&value)
    }

    /// Sends one guest agent command (`virsh qemu-agent-command`) and returns its `return`.
    pub fn agent_command(&self, command: &Value) -> Result<Value> {
        let out = self
            .lab
            .virsh()
            .run(["qemu-agent-command", &self.name, &command.to_string()])?;
        let reply: Value = parse_json("qemu-agent-command", &out)?;
        agent::return_value(&command_name(command), &reply)
    }

    /// Runs `path args...` in the guest through the agent and waits for it to exit.
    pub fn exec(&self, path: &str, args: &[&str]) -> Result<ExecOutput> {
        agent::exec(
            &|command| self.agent_command(command),
            path,
            args,
            AGENT_TIMEOUT,
        )
    }

    /// Starts memhog in the background: `step_mib` MiB every `delay_ms` ms until OOM-killed.
    /// Its progress lines (`memhog: N MiB`) go to the serial console.
    pub fn start_hog(&self, step_mib: u64, delay_ms: u64) -> Result<()> {
        self.start_hog_line(&agent::hog_shell_line(step_mib, delay_ms, None))
    }

    /// Starts memhog that stops growing at `hold_mib` and prints `memhog: holding N MiB`.
    pub fn start_hog_holding(&self, step_mib: u64, delay_ms: u64, hold_mib: u64) -> Result<()> {
        self.start_hog_line(&agent::hog_shell_line(step_mib, delay_ms, Some(hold_mib)))
    }

    fn start_hog_line(&self, line: &str) -> Result<()> {
        let output = self.exec("/bin/sh", &["-c", line])?;
        if output.success() {
            Ok(())
        } else {
            Err(Error::Agent {
                command: format!("guest-exec /bin/sh -c {line:?}"),
                message: format!("{output:?}"),
            })
        }
    }

    /// Writes `line` and a newline to the console's pty on the host side: the guest's
    /// init runs it as a shell command when the spec has `console_shell` (the way to
    /// drive a guest whose agent is hostile). Nothing is echoed to the console log;
    /// the command's own output is. It runs in the init's reader loop: end long
    /// commands with `&`. A line must stay under the tty's 4095 bytes. The first call
    /// may take QEMU a second to pass on.
    ///
    /// Serial console only: while the host side of a pty is held, QEMU writes the
    /// console's output to it too, and a virtio console drops what the pty cannot take
    /// at once (from its log as well); the UART waits and retries instead.
    pub fn console_run(&self, line: &str) -> Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        if !self.spec.console_shell
            || self.spec.console != Console::Serial
            || line.contains('\n')
            || line.len() >= 4000
        {
            return Err(Error::Agent {
                command: format!("console_run {line:?}"),
                message:
                    "needs GuestSpec::console_shell, Console::Serial and one line under 4000 bytes"
                        .to_owned(),
            });
        }
        let xml = self.lab.virsh().run(["dumpxml", &self.name])?;
        let pty = console_pty(&xml, self.spec.console).ok_or_else(|| Error::Parse {
            what: format!("the console pty of {} in virsh dumpxml", self.name),
            detail: xml.clone(),
        })?;
        // QEMU reads a pty only while someone holds its host side (it looks once a
        // second), so the handle stays open for the guest's life (reopened when the
        // pty changes, e.g. after a restart). While it is held QEMU also writes the
        // console's output to it: a thread reads and drops that, or the guest's console
        // would stall once the pty's buffer is full. It ends when QEMU closes the pty.
        let mut held = self
            .console_tty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if held.as_ref().is_none_or(|(path, _)| *path != pty) {
            // O_NOCTTY (0o400 on Linux): the pty must not become this process's terminal.
            let tty = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(0o400)
                .open(&pty)
                .map_err(Error::io(Path::new(&pty)))?;
            let mut reader = tty.try_clone().map_err(Error::io(Path::new(&pty)))?;
            std::thread::spawn(move || {
                use std::io::Read as _;
                let mut sink = [0u8; 4096];
                while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
            });
            *held = Some((pty.clone(), tty));
        }
        let Some((_, tty)) = held.as_mut() else {
            return Ok(());
        };
        tty.write_all(format!("{line}\n").as_bytes())
            .map_err(Error::io(Path::new(&pty)))
    }

    /// `dmesg` of the guest, read through the agent.
    pub fn dmesg_via_agent(&self) -> Result<String> {
        Ok(self.exec("/bin/dmesg", &[])?.stdout)
    }

    /// Waits for a serial log line containing `needle`; returns the line.
    pub fn wait_serial(&self, needle: &str, timeout: Duration) -> Result<String> {
        self.wait_serial_count(needle, 1, timeout)
    }

    /// Waits until `count` serial log lines contain `needle`; returns the `count`-th.
    pub fn wait_serial_count(
        &self,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<String> {
        serial::wait_count(&self.serial_log, needle, count, timeout)
    }

    /// How many serial log lines contain `needle` right now.
    pub fn serial_count(&self, needle: &str) -> usize {
        serial::count_lines(&self.serial_text(), needle)
    }

    /// The serial log file written by virtlogd (appended across reboots).
    pub fn serial_log_path(&self) -> &Path {
        &self.serial_log
    }

    /// Lines containing `needle` in the console log and the rotated copies virtlogd
    /// keeps beside it (`<log>.0` ... `<log>.7`; 3 by default).
    pub fn logged_lines_containing(&self, needle: &str) -> usize {
        (0..8)
            .map(|k| PathBuf::from(format!("{}.{k}", self.serial_log.display())))
            .chain([self.serial_log.clone()])
            .filter_map(|path| std::fs::read(path).ok())
            .map(|bytes| {
                String::from_utf8_lossy(&bytes)
                    .lines()
                    .filter(|line| line.contains(needle))
                    .count()
            })
            .sum()
    }

    /// The serial log so far.
    pub fn serial_text(&self) -> String {
        serial::read_text(&self.serial_log)
    }

    /// `virsh domstate`: `running`, `shut off`, ...
    pub fn state(&self) -> Result<String> {
        Ok(self
            .lab
            .virsh()
            .run(["domstate", &self.name])?
            .trim()
            .to_owned())
    }

    /// Hard reset (`virsh reset`): same QEMU process, fresh guest kernel. Call
    /// [`Guest::wait_ready`] afterwards.
    pub fn reboot(&mut self) -> Result<()> {
        self.lab.virsh().run(["reset", &self.name])?;
        self.boots += 1;
        self.boot_started = Instant::now();
        Ok(())
    }

    /// Clean reboot through the agent (`virsh reboot --mode agent`: the guest runs
    /// its /sbin/shutdown -r). Call [`Guest::wait_ready`] afterwards.
    pub fn reboot_via_agent(&mut self) -> Result<()> {
        self.lab
            .virsh()
            .run(["reboot", "--mode", "agent", &self.name])?;
        self.boots += 1;
        self.boot_started = Instant::now();
        Ok(())
    }

    /// `virsh destroy`: stops QEMU; the definition stays (see [`Guest::start`]).
    pub fn destroy(&self) -> Result<()> {
        self.lab.virsh().run(["destroy", &self.name]).map(drop)
    }

    /// `virsh start` of the (defined, stopped) domain. Call [`Guest::wait_ready`] afterwards.
    pub fn start(&mut self) -> Result<()> {
        self.boot_started = Instant::now();
        self.lab.virsh().run(["start", &self.name])?;
        self.boots += 1;
        Ok(())
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- ballast-testvm: serial log of {} ({}), last 40 lines ---\n{}\n---",
                self.name,
                self.serial_log.display(),
                serial::tail(&self.serial_log, 40)
            );
        }
        let virsh = self.lab.virsh();
        // Either may fail because the domain is already off or gone; both are fine.
        let _ = virsh.run(["destroy", &self.name]);
        let _ = virsh.run(["undefine", &self.name]);
        if !self.lab.settings().keep_run_files {
            let _ = std::fs::remove_dir_all(&self.run_dir);
        }
    }
}

/// The host side (`/dev/pts/N`) of the guest's console in `virsh dumpxml`: the
/// `<serial>`'s for [`Console::Serial`], the virtio `<console>`'s for [`Console::Virtio`].
fn console_pty(xml: &str, console: Console) -> Option<String> {
    let (open, close) = match console {
        Console::Serial => ("<serial ", "</serial>"),
        Console::Virtio => ("<console ", "</console>"),
    };
    xml.split(open).skip(1).find_map(|rest| {
        let element = rest.split(close).next()?;
        if console == Console::Virtio && !element.contains("<target type='virtio'") {
            return None;
        }
        let path = element.split("<source path='").nth(1)?.split('\'').next()?;
        Some(path.to_owned())
    })
}

fn parse_json(what: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text.trim()).map_err(|error| Error::Parse {
        what: what.to_owned(),
        detail: format!("{error}: {}", text.trim()),
    })
}

fn command_name(command: &Value) -> String {
    command
        .get("execute")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The device part of `virsh dumpxml` of a running virtio-console harness guest.
    const VIRTIO_DUMPXML: &str = "<devices>
    <serial type='pty'>
      <source path='/dev/pts/3'/>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
      <alias name='serial0'/>
    </serial>
    <console type='pty' tty='/dev/pts/3'>
      <source path='/dev/pts/3'/>
      <target type='serial' port='0'/>
      <alias name='serial0'/>
    </console>
    <console type='pty' tty='/dev/pts/4'>
      <source path='/dev/pts/4'/>
      <log file='/run/serial.log' append='on'/>
      <target type='virtio' port='0'/>
      <alias name='console1'/>
    </console>
  </devices>";

    #[test]
    fn finds_the_console_pty_of_each_kind() {
        assert_eq!(
            console_pty(VIRTIO_DUMPXML, Console::Serial).as_deref(),
            Some("/dev/pts/3")
        );
        assert_eq!(
            console_pty(VIRTIO_DUMPXML, Console::Virtio).as_deref(),
            Some("/dev/pts/4")
        );
        assert_eq!(console_pty("<devices/>", Console::Serial), None);
    }
}
