//! `ballast-agent`: the host agent's command line.
//!
//! Subcommands:
//! - `explain [--json] [FILE|-]`: analyze a pasted kernel OOM report offline.
//!
//! Exit codes: 0 when the command ran (even when it found no report), 2 when the
//! input could not be read or the arguments are wrong, 1 on other errors.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use ballast_agent::explain;

#[derive(Parser)]
#[command(
    name = "ballast-agent",
    version,
    about = "ballast host agent for QEMU/KVM hypervisors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Analyze a kernel OOM report (a file, or `-` / nothing for standard input).
    Explain {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The kernel log or pasted report; `-` reads standard input.
        file: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Explain { json, file } => run_explain(json, file.as_deref()),
    }
}

fn run_explain(json: bool, file: Option<&str>) -> ExitCode {
    let input = match explain::read_input(file) {
        Ok(input) => input,
        Err(error) => {
            eprintln!("ballast-agent explain: {error:#}");
            return ExitCode::from(2);
        }
    };
    let explanation = ballast_oom::explain(&input);
    let output = if json {
        explain::render_json(&explanation)
    } else {
        Ok(explain::render_text(&explanation, file.unwrap_or("-")))
    };
    match output {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("ballast-agent explain: {error:#}");
            ExitCode::from(1)
        }
    }
}
