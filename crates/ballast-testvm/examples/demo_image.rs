//! The quickstart's guest image on a host without libvirt (Proxmox VE): builds (or
//! takes from the cache) the tiny guest's kernel + initramfs and prints, one
//! `key=value` per line, `lab_dir`, `release`, `vmlinuz` and `initramfs`.
//!
//! Takes the first guest kernel series found (6.1, then 6.12): in /boot, else
//! unpacked under `<lab_dir>/kernels/` (see crates/ballast-testvm/src/kernel.rs).
//! Exit status 3, after printing `lab_dir`, when there is no kernel of either
//! series (the quickstart then unpacks Debian's package there and asks again).
//!
//! `cargo run -p ballast-testvm --example demo_image`

use std::process::ExitCode;

use ballast_testvm::{build_image, Error, GuestKernel, Settings};

fn main() -> ExitCode {
    let settings = Settings::from_env();
    println!("lab_dir={}", settings.lab_dir.display());
    let mut missing = Vec::new();
    for kernel in [GuestKernel::Debian61, GuestKernel::Backports612] {
        match build_image(kernel) {
            Ok(image) => {
                println!("release={}", image.release);
                println!("vmlinuz={}", image.vmlinuz.display());
                println!("initramfs={}", image.initramfs.display());
                return ExitCode::SUCCESS;
            }
            Err(error @ Error::KernelNotFound { .. }) => missing.push(error.to_string()),
            Err(error) => {
                eprintln!("demo_image: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    for message in missing {
        eprintln!("demo_image: {message}");
    }
    ExitCode::from(3)
}
