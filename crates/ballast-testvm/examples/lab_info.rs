//! Sets the lab up and prints what it found and how long each step took:
//! libvirt start, guest image builds, the KVM probe. A quick machine check:
//! `cargo run -p ballast-testvm --example lab_info`.

use std::time::Instant;

use ballast_testvm::{GuestKernel, Lab};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let lab = Lab::get()?;
    println!("Lab::get: {:.2?}; {:?}", start.elapsed(), lab.startup());
    println!("settings: {:?}", lab.settings());
    for kernel in [GuestKernel::Debian61, GuestKernel::Backports612] {
        let t = Instant::now();
        match lab.image(kernel) {
            Ok(image) => println!(
                "{kernel:?}: image {} in {:.2?} (built: {:?})",
                image.release,
                t.elapsed(),
                image.build_time
            ),
            Err(error) => {
                println!("{kernel:?}: {error}");
                continue;
            }
        }
        let t = Instant::now();
        println!(
            "{kernel:?}: accel {:?} decided in {:.2?}",
            lab.accel(kernel)?,
            t.elapsed()
        );
    }
    Ok(())
}
