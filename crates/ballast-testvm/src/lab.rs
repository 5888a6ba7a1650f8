//! [`Lab`]: the process-wide entry point that provides real guests.
//!
//! `Lab::get()` runs once per process:
//! 1. read the settings (`BALLAST_LAB_*`), check the host tools;
//! 2. start virtlogd + libvirtd when they are not running;
//! 3. sweep leftovers of dead harness processes.
//!
//! Guest images are built (or taken from the cache) and the KVM probe runs on the
//! first boot of each kernel series. [`Lab::boot`] waits for a free guest slot
//! (`BALLAST_LAB_MAX_GUESTS`), so parallel tests on 2 cores do not overload them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::accel::{self, Accel};
use crate::cmd;
use crate::daemons;
use crate::error::{Error, Result};
use crate::guest::Guest;
use crate::image::{self, GuestImage};
use crate::kernel::GuestKernel;
use crate::lease::{ExclusiveLease, Lease};
use crate::names;
use crate::proxmox::{ProxmoxGuest, ProxmoxSpec};
use crate::settings::Settings;
use crate::slots::Slots;
use crate::spec::GuestSpec;
use crate::sweep::{self, SweepReport};
use crate::virsh::Virsh;

/// Host tools the harness runs besides those of an image build ([`image::TOOLS`]).
const TOOLS: [&str; 5] = [
    "virsh",
    "libvirtd",
    "virtlogd",
    "qemu-system-x86_64",
    "qemu-ga",
];

/// The process-wide lab.
#[derive(Debug)]
pub struct Lab {
    settings: Settings,
    virsh: Virsh,
    slots: Slots,
    lease: Lease,
    images: Mutex<HashMap<GuestKernel, GuestImage>>,
    accel: Mutex<Option<Accel>>,
    startup: LabStartup,
}

/// What `Lab::get()` did when it set the lab up.
#[derive(Debug, Clone, Default)]
pub struct LabStartup {
    /// Time to start libvirtd/virtlogd; `None` when they were already running.
    pub libvirt_start: Option<Duration>,
    pub swept: SweepReport,
}

static LAB: OnceLock<std::result::Result<Lab, String>> = OnceLock::new();

impl Lab {
    /// The process-wide lab, set up on first use. Fails (every time, with the first
    /// error) when the machine cannot run real guests.
    pub fn get() -> Result<&'static Lab> {
        LAB.get_or_init(|| Lab::start().map_err(|error| format!("{error}")))
            .as_ref()
            .map_err(|message| Error::Unavailable(message.clone()))
    }

    fn start() -> Result<Lab> {
        let settings = Settings::from_env();
        cmd::require_tools(&TOOLS)?;
        cmd::require_tools(&image::TOOLS)?;
        for dir in [
            settings.lab_dir.clone(),
            settings.images_dir(),
            settings.run_dir(),
        ] {
            crate::settings::create_shared_dir(&dir).map_err(Error::io(&dir))?;
        }
        let libvirt_start = daemons::ensure_running(&settings)?;
        let virsh = Virsh::new(settings.libvirt_uri.clone());
        let swept = sweep::sweep(&settings, &virsh);
        Ok(Lab {
            slots: Slots::new(settings.max_guests, settings.lab_dir.join("slots")),
            lease: Lease::new(&settings.lab_dir),
            virsh,
            images: Mutex::new(HashMap::new()),
            accel: Mutex::new(None),
            startup: LabStartup {
                libvirt_start,
                swept,
            },
            settings,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn startup(&self) -> &LabStartup {
        &self.startup
    }

    pub(crate) fn virsh(&self) -> &Virsh {
        &self.virsh
    }

    /// Runs `virsh -c <uri> args...` (for checks the API does not cover) and returns stdout.
    pub fn virsh_run(&self, args: &[&str]) -> Result<String> {
        self.virsh.run(args)
    }

    /// The guest image of `kernel`, built on first use (cached across runs).
    pub fn image(&self, kernel: GuestKernel) -> Result<GuestImage> {
        let mut images = self.images.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(image) = images.get(&kernel) {
            return Ok(image.clone());
        }
        let image = image::ensure(&self.settings, kernel)?;
        images.insert(kernel, image.clone());
        Ok(image)
    }

    /// The accelerator for guests (KVM probe with `kernel`'s image on first use, cached).
    pub fn accel(&self, kernel: GuestKernel) -> Result<Accel> {
        let image = self.image(kernel)?;
        let mut accel = self.accel.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(accel) = *accel {
            return Ok(accel);
        }
        let decided = accel::decide(&self.settings, &image)?;
        *accel = Some(decided);
        Ok(decided)
    }

    /// Defines and starts one guest (waits for a slot first). Call
    /// [`Guest::wait_ready`] before using it.
    pub fn boot(&'static self, spec: GuestSpec) -> Result<Guest> {
        Ok(self.boot_many(vec![spec])?.remove(0))
    }

    /// Boots several guests, taking their slots all at once (no deadlock between
    /// tests that each need several guests).
    pub fn boot_many(&'static self, specs: Vec<GuestSpec>) -> Result<Vec<Guest>> {
        // Leases before slots: a restart holding the exclusive lease needs slots for its
        // own guests, so nobody may sit on a slot while waiting for the lease.
        let mut leases = (0..specs.len())
            .map(|_| self.lease.shared())
            .collect::<Result<Vec<_>>>()?;
        let mut slots = self.slots.acquire(specs.len())?;
        let mut guests = Vec::with_capacity(specs.len());
        for spec in specs {
            let image = self.image(spec.kernel)?;
            let accel = self.accel(spec.kernel)?;
            let name = names::next_name();
            let run_dir = self.new_run_dir(&name)?;
            let slot = slots.split_one().expect("one slot was acquired per spec");
            let lease = leases.pop().expect("one lease was taken per spec");
            let mut guest = Guest::new(self, name, spec, image, accel, run_dir, (slot, lease));
            guest.define_and_start()?;
            guests.push(guest);
        }
        Ok(guests)
    }

    /// Starts a Proxmox-style guest: qemu-system-x86_64 without libvirt, with a
    /// Proxmox host's socket layout.
    pub fn boot_proxmox(&'static self, spec: ProxmoxSpec) -> Result<ProxmoxGuest> {
        let mut slot = self.slots.acquire(1)?;
        let image = self.image(spec.kernel)?;
        let accel = self.accel(spec.kernel)?;
        let name = names::next_name();
        let run_dir = self.new_run_dir(&name)?;
        let slot = slot.split_one().expect("one slot was acquired");
        ProxmoxGuest::start(self, name, spec, &image, accel, run_dir, slot)
    }

    /// The lab's libvirtd to this test alone: waits until no other test's libvirt
    /// guest exists (in this process or another test binary), and holds new ones
    /// back while it lives. Take it before booting this test's own guests; a libvirtd
    /// restart needs it ([`Lab::restart_libvirtd`]).
    pub fn exclusive_libvirtd(&'static self) -> Result<ExclusiveLease> {
        self.lease.exclusive()
    }

    /// Stops libvirtd and starts it again (guests keep running); returns the time
    /// until virsh answers again. Other threads' virsh calls wait meanwhile; other
    /// tests' guests cannot exist, since the caller holds the exclusive lease.
    pub fn restart_libvirtd(&self, _exclusive: &ExclusiveLease) -> Result<Duration> {
        let _guard = self
            .virsh
            .restart_lock
            .write()
            .unwrap_or_else(|e| e.into_inner());
        daemons::restart_libvirtd(&self.settings)
    }

    /// Stops the libvirtd/virtlogd this harness started (no-op for others); returns their names.
    pub fn stop_started_daemons(&self) -> Vec<String> {
        let _guard = self
            .virsh
            .restart_lock
            .write()
            .unwrap_or_else(|e| e.into_inner());
        daemons::stop_started_daemons(&self.settings)
    }

    /// Sweeps leftovers of dead harness processes now (`Lab::get` does it once at start).
    pub fn sweep_stale(&self) -> SweepReport {
        sweep::sweep(&self.settings, &self.virsh)
    }

    fn new_run_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.settings.run_dir().join(name);
        crate::settings::create_shared_dir(&dir).map_err(Error::io(&dir))?;
        Ok(dir)
    }
}
