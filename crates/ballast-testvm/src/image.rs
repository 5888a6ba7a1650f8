//! Guest images: a Debian kernel (from /boot, or unpacked under `<lab>/kernels`, see
//! [`crate::kernel`]) plus a busybox initramfs, built once and cached.
//!
//! The initramfs holds busybox-static (applet links made at build time), `/init`
//! (guest/init.sh), `/sbin/shutdown` (guest/shutdown.sh, for agent reboots),
//! `/bin/hostile-qga.sh` (guest/hostile-qga.sh, a misbehaving guest agent for tests),
//! `/bin/memhog` (guest/memhog.c, `gcc -static`), `/bin/fraghog` (guest/fraghog.c, a
//! fragmenter with pinned pipe pages, for the fragmentation scenario), qemu-ga with every library `ldd`
//! lists, and the virtio modules the kernel does not build in (`virtio_mem` among
//! them), decompressed for busybox `insmod` and listed in `modprobe --show-depends`
//! order in /etc/lab-modules.
//!
//! Cache: `<lab>/images/<release>-<key>/{vmlinuz,initramfs.cpio.gz}`, where the key
//! hashes the guest sources, the kernel image and the host binaries copied in. A
//! build goes to a temporary folder that is renamed into place, so concurrent test
//! processes never see half an image.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cmd;
use crate::error::{Error, Result};
use crate::kernel::{self, GuestKernel, KernelBuild};
use crate::settings::Settings;

const INIT_SH: &str = include_str!("../guest/init.sh");
const SHUTDOWN_SH: &str = include_str!("../guest/shutdown.sh");
const HOSTILE_QGA_SH: &str = include_str!("../guest/hostile-qga.sh");
const MEMHOG_C: &str = include_str!("../guest/memhog.c");
const FRAGHOG_C: &str = include_str!("../guest/fraghog.c");
/// Bump when the build recipe below changes in a way the key would not see
/// (4: `virtio_mem` joined [`MODULES`]).
const RECIPE_VERSION: &str = "4";
const BUSYBOX: &str = "/bin/busybox";
const QEMU_GA: &str = "/usr/sbin/qemu-ga";
/// Loaded by `/init` in this order (with their dependencies first); `virtio_mem`
/// (`=m` in Debian's 6.1 and 6.12) binds to a virtio-mem device when the guest has one.
const MODULES: [&str; 5] = [
    "virtio_pci",
    "virtio_balloon",
    "virtio_console",
    "virtio_blk",
    "virtio_mem",
];

/// A built guest image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    pub kernel: GuestKernel,
    /// The kernel release, e.g. `6.1.0-56-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
    /// How long the build took; `None` when the image came from the cache.
    pub build_time: Option<Duration>,
}

/// Host tools an image build runs (`qemu-ga` is copied from [`QEMU_GA`]).
pub(crate) const TOOLS: [&str; 6] = ["busybox", "gcc", "cpio", "gzip", "modprobe", "xz"];

/// The guest image of `kernel` without a [`crate::Lab`] (no libvirt involved):
/// checks the build tools, then returns the cached image or builds it, under the
/// lab directory of [`Settings::from_env`]. The quickstart's Proxmox demo boots it
/// with `qm` (`examples/demo_image.rs`).
pub fn build_image(kernel: GuestKernel) -> Result<GuestImage> {
    let settings = Settings::from_env();
    cmd::require_tools(&TOOLS)?;
    ensure(&settings, kernel)
}

/// Returns the cached image for `kernel`, building it first if needed.
pub(crate) fn ensure(settings: &Settings, kernel: GuestKernel) -> Result<GuestImage> {
    let images_dir = settings.images_dir();
    for dir in [&settings.lab_dir, &images_dir] {
        crate::settings::create_shared_dir(dir).map_err(Error::io(dir))?;
    }
    let images_dir = images_dir.as_path();
    let build = kernel::find(kernel, &settings.kernels_dir())?;
    let key = cache_key(&build.release, &build.vmlinuz);
    let dir = images_dir.join(format!("{}-{key:016x}", build.release));
    let mut image = GuestImage {
        kernel,
        release: build.release.clone(),
        vmlinuz: dir.join("vmlinuz"),
        initramfs: dir.join("initramfs.cpio.gz"),
        build_time: None,
    };
    if image.initramfs.is_file() && image.vmlinuz.is_file() {
        return Ok(image);
    }
    let start = Instant::now();
    let tmp = images_dir.join(format!(".build-{}-{}", build.release, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let built = build_into(&tmp, &build);
    if let Err(error) = built {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(error);
    }
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another process finished the same image first; theirs is identical.
        let _ = std::fs::remove_dir_all(&tmp);
        if !image.initramfs.is_file() {
            return Err(Error::Io {
                path: dir,
                source: std::io::Error::other("image folder incomplete after rename race"),
            });
        }
    }
    image.build_time = Some(start.elapsed());
    Ok(image)
}

fn build_into(tmp: &Path, build: &KernelBuild) -> Result<()> {
    let root = tmp.join("root");
    for dir in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "lib/lab-modules",
    ] {
        create_dir(&root.join(dir))?;
    }
    for dir in ["dev", "proc", "sys", "run", "tmp", "var"] {
        create_dir(&root.join(dir))?;
    }
    install_busybox(&root)?;
    write_executable(&root.join("init"), INIT_SH)?;
    let shutdown = root.join("sbin/shutdown");
    let _ = std::fs::remove_file(&shutdown);
    write_executable(&shutdown, SHUTDOWN_SH)?;
    write_executable(&root.join("bin/hostile-qga.sh"), HOSTILE_QGA_SH)?;
    build_static(tmp, &root, "memhog", MEMHOG_C)?;
    build_static(tmp, &root, "fraghog", FRAGHOG_C)?;
    install_with_libraries(&root, Path::new(QEMU_GA))?;
    install_modules(&root, build)?;
    copy(&build.vmlinuz, &tmp.join("vmlinuz"))?;
    let script =
        "cd root && find . | cpio -o -H newc -R 0:0 --quiet | gzip -1 > ../initramfs.cpio.gz";
    cmd::run_command(Command::new("sh").arg("-c").arg(script).current_dir(tmp))?;
    std::fs::remove_dir_all(&root).map_err(Error::io(&root))?;
    // QEMU (as libvirt-qemu) opens both files: readable by all, whatever the umask or
    // the mode of the kernel in /boot.
    for file in ["vmlinuz", "initramfs.cpio.gz"] {
        set_mode(&tmp.join(file), 0o644)?;
    }
    set_mode(tmp, 0o755)
}

fn install_busybox(root: &Path) -> Result<()> {
    copy(Path::new(BUSYBOX), &root.join("bin/busybox"))?;
    let applets = cmd::run(BUSYBOX, ["--list-full"])?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
        let link = root.join(applet);
        if link.exists() {
            continue;
        }
        if let Some(parent) = link.parent() {
            create_dir(parent)?;
        }
        std::os::unix::fs::symlink("/bin/busybox", &link).map_err(Error::io(&link))?;
    }
    Ok(())
}

/// Compiles `source` (`gcc -static`) into `/bin/<name>` of the image.
fn build_static(tmp: &Path, root: &Path, name: &str, source_text: &str) -> Result<()> {
    let source = tmp.join(format!("{name}.c"));
    std::fs::write(&source, source_text).map_err(Error::io(&source))?;
    let output = root.join("bin").join(name);
    cmd::run_command(
        Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(&output)
            .arg(&source),
    )?;
    std::fs::remove_file(&source).map_err(Error::io(&source))
}

/// Copies a dynamic binary and every library `ldd` lists to the same paths under `root`.
fn install_with_libraries(root: &Path, binary: &Path) -> Result<()> {
    copy(binary, &under(root, binary))?;
    let ldd = cmd::run("ldd", [binary])?;
    for line in ldd.lines() {
        // `libglib-2.0.so.0 => /lib/x86_64-linux-gnu/libglib-2.0.so.0 (0x...)` or
        // `/lib64/ld-linux-x86-64.so.2 (0x...)`; linux-vdso has no file.
        let target = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = target.filter(|p| p.starts_with('/')) else {
            continue;
        };
        copy(Path::new(path), &under(root, Path::new(path)))?;
    }
    Ok(())
}

/// Decompresses the virtio modules the kernel needs into /lib/lab-modules, in load order.
fn install_modules(root: &Path, build: &KernelBuild) -> Result<()> {
    let mut order: Vec<String> = Vec::new();
    for module in MODULES {
        let mut command = Command::new("modprobe");
        command.arg("-d").arg(&build.modules_root).args([
            "-S",
            &build.release,
            "--show-depends",
            module,
        ]);
        let plan = cmd::run_command(&mut command)?;
        for path in plan.lines().filter_map(|line| line.strip_prefix("insmod ")) {
            let path = Path::new(path.split_whitespace().next().unwrap_or_default());
            let name = module_name(path);
            if name.is_empty() || order.contains(&name) {
                continue;
            }
            let plain = decompress_module(path)?;
            let out = root.join("lib/lab-modules").join(format!("{name}.ko"));
            std::fs::write(&out, plain).map_err(Error::io(&out))?;
            order.push(name);
        }
    }
    let list = root.join("etc/lab-modules");
    std::fs::write(&list, order.join("\n") + "\n").map_err(Error::io(&list))
}

fn module_name(path: &Path) -> String {
    let file = path.file_name().unwrap_or_default().to_string_lossy();
    file.split(".ko").next().unwrap_or_default().to_owned()
}

fn decompress_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else if name.ends_with(".gz") {
        "gzip"
    } else {
        return std::fs::read(path).map_err(Error::io(path));
    };
    let mut command = Command::new(tool);
    command.arg("-dc").arg(path);
    let output = cmd::output_of(&mut command)?;
    if !output.status.success() {
        return Err(Error::CommandFailed {
            command: cmd::describe(&command),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(output.stdout)
}

fn cache_key(release: &str, vmlinuz: &Path) -> u64 {
    let mut hash = Fnv64::default();
    for part in [
        RECIPE_VERSION,
        INIT_SH,
        SHUTDOWN_SH,
        HOSTILE_QGA_SH,
        MEMHOG_C,
        FRAGHOG_C,
        release,
    ] {
        hash.write(part.as_bytes());
    }
    for file in [vmlinuz, Path::new(BUSYBOX), Path::new(QEMU_GA)] {
        hash.write(file_identity(file).as_bytes());
    }
    hash.finish()
}

/// Size and modification time: enough to notice a reinstalled package.
fn file_identity(path: &Path) -> String {
    match path.metadata() {
        Ok(meta) => {
            use std::os::unix::fs::MetadataExt;
            format!("{}:{}:{}", path.display(), meta.len(), meta.mtime())
        }
        Err(_) => format!("{}:missing", path.display()),
    }
}

/// FNV-1a: a stable hash (std's hasher may change between Rust releases).
struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes.iter().chain([&0xff]) {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn under(root: &Path, absolute: &Path) -> PathBuf {
    root.join(absolute.strip_prefix("/").unwrap_or(absolute))
}

fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(Error::io(path))
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        create_dir(parent)?;
    }
    std::fs::copy(from, to).map(|_| ()).map_err(Error::io(from))
}

fn write_executable(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(Error::io(path))?;
    set_mode(path, 0o755)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(Error::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_drop_every_extension() {
        assert_eq!(
            module_name(Path::new("/x/virtio_balloon.ko.xz")),
            "virtio_balloon"
        );
        assert_eq!(module_name(Path::new("/x/virtio_pci.ko")), "virtio_pci");
    }

    #[test]
    fn fnv_separates_parts() {
        let mut ab = Fnv64::default();
        ab.write(b"a");
        ab.write(b"b");
        let mut joined = Fnv64::default();
        joined.write(b"ab");
        assert_ne!(ab.finish(), joined.finish());
    }
}
