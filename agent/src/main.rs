//! `ballast-agent`: the host agent's command line.
//!
//! - `run [--config FILE]`: watch every VM of this host (the daemon).
//! - `check-config FILE`: validate a configuration file, check that `collector.url`
//!   answers as a collector (a 404 on its health check is an error), and exit.
//! - `status [--config FILE] [--json]`: the running agent's table of VMs and whether
//!   delivery to the collector is held.
//! - `spool replay-dead-letters [--config FILE]`: hand the dead-lettered events back to
//!   the agent for delivery.
//! - `explain [--json] [FILE|-]`: analyze a pasted kernel OOM report offline.
//! - `--print-default-config`: the defaults as YAML.
//!
//! Exit codes: 0 when the command ran (also when `explain` found no report), 2 when
//! the input or configuration could not be read or is invalid, 1 on other errors.
//!
//! `run` under systemd (`Type=notify`): READY=1 once the first poll is done; SIGHUP
//! re-reads the configuration file, SIGTERM/SIGINT stop.
//!
//! This file parses the command line and dispatches: `run` is
//! [`ballast_agent::daemon`], the other subcommands [`ballast_agent::cli`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use ballast_agent::cli::{self, UsageError};
use ballast_agent::config::RawConfig;
use ballast_agent::daemon;

#[derive(Parser)]
#[command(
    name = "ballast-agent",
    version,
    about = "ballast host agent for QEMU/KVM hypervisors"
)]
struct Cli {
    /// Print the default configuration as YAML and exit.
    #[arg(long)]
    print_default_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Watch every VM of this host: balloon stats, guest OOM reports.
    Run {
        /// Configuration file (default /etc/ballast/agent.yaml when it exists).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and exit.
    CheckConfig { file: PathBuf },
    /// Show the running agent's VMs.
    Status {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Work on the agent's spool.
    Spool {
        #[command(subcommand)]
        command: SpoolCommand,
    },
    /// Analyze a kernel OOM report (a file, or `-` / nothing for standard input).
    Explain {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The kernel log or pasted report; `-` reads standard input.
        file: Option<String>,
    },
}

#[derive(Subcommand)]
enum SpoolCommand {
    /// Move the events of the dead-letter files back into the spool; the running agent
    /// delivers them (again refused ones return to the dead-letter file). Safe to
    /// repeat: the collector stores each event once.
    ReplayDeadLetters {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    ballast_agent::allocator::fix_mmap_threshold();
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
    if cli.print_default_config {
        print!("{}", RawConfig::default_yaml());
        return ExitCode::SUCCESS;
    }
    let result = match cli.command {
        None => Err(anyhow::Error::new(UsageError(
            "a subcommand is needed; see --help".into(),
        ))),
        Some(Command::Explain { json, file }) => {
            return cli::explain::run_explain(json, file.as_deref())
        }
        Some(Command::CheckConfig { file }) => cli::check_config::check_config(&file),
        Some(Command::Status { config, json }) => cli::status::status(config.as_deref(), json),
        Some(Command::Spool {
            command: SpoolCommand::ReplayDeadLetters { config },
        }) => cli::spool::replay_dead_letters(config.as_deref()),
        Some(Command::Run { config }) => daemon::run(config.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ballast-agent: {}", ballast_daemon::error_chain(&*error));
            cli::exit_code(&error)
        }
    }
}
