//! `ballast-collector`: the central collector's command line (skeleton).
//!
//! The ingest API, the fleet store, correlation and the dashboard arrive with their
//! issues; today the binary only reports its version and usage.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "ballast-collector",
    version,
    about = "ballast central collector: fleet store, balloon-vs-OOM correlation, dashboard"
)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    println!(
        "ballast-collector {}: no subcommands yet",
        env!("CARGO_PKG_VERSION")
    );
}
