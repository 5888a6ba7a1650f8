//! `ballast-collector`: the central collector's command line.
//!
//! - `serve [--config FILE]`: run the collector (default 127.0.0.1:8470).
//! - `token create HOST [--rotate]` / `token revoke HOST` / `token list`:
//!   manage agents' ingest tokens in the configured store (the server may run).
//! - `report balloon-policy [--since 30d] [--format md|html|json|csv]`: the
//!   balloon-policy report over the configured store, on stdout.
//! - `--print-default-config`: print every setting with its default as YAML.
//!
//! Exit codes: 0 success, 2 configuration or usage error, 1 any other failure.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use ballast_collector::config::{self, RawConfig};
use ballast_collector::{cli, server};

#[derive(Parser)]
#[command(
    name = "ballast-collector",
    version,
    about = "ballast central collector: fleet store, balloon-vs-OOM correlation, query API"
)]
struct Cli {
    /// Print the default configuration (YAML) and exit.
    #[arg(long)]
    print_default_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector.
    Serve {
        /// The YAML configuration (defaults when absent).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Manage per-host ingest tokens.
    Token {
        /// The YAML configuration naming the store (defaults when absent).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Print a report over the stored history.
    Report {
        /// The YAML configuration naming the store (defaults when absent).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        report: ReportKind,
    },
}

#[derive(Subcommand)]
enum ReportKind {
    /// Per-VM balloon floors, balloon-induced OOMs and near misses, settings to change.
    BalloonPolicy {
        /// How far back to look (`30d`, `12h`).
        #[arg(long, default_value = "30d")]
        since: String,
        /// md, html, json or csv.
        #[arg(long, default_value = "md", value_parser = ["md", "html", "json", "csv"])]
        format: String,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Create a token for HOST and print it (once: only its hash is stored).
    Create {
        host: String,
        /// Replace an existing token of HOST.
        #[arg(long)]
        rotate: bool,
    },
    /// Revoke HOST's token.
    Revoke { host: String },
    /// List hosts that have a token.
    List,
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
    if cli.print_default_config {
        print!("{}", RawConfig::default_yaml());
        return ExitCode::SUCCESS;
    }
    let Some(command) = cli.command else {
        eprintln!("ballast-collector: a command is needed (serve, token); see --help");
        return ExitCode::from(2);
    };
    ballast_daemon::logging::init(ballast_daemon::logging::filter_from("RUST_LOG", "info"));
    let config_path = match &command {
        Command::Serve { config }
        | Command::Token { config, .. }
        | Command::Report { config, .. } => config.clone(),
    };
    let settings = match config::load(config_path.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("ballast-collector: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ballast-collector: failed to start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Serve { .. } => server::run(
                settings,
                ballast_collector::reload::ConfigSource { file: config_path },
                server::shutdown_signal(),
            )
            .await
            .context("The collector stopped with an error"),
            Command::Token { action, .. } => cli::token(&settings.storage, action.into()).await,
            Command::Report {
                report: ReportKind::BalloonPolicy { since, format },
                ..
            } => cli::balloon_policy_report(&settings.storage, &since, &format).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "ballast-collector: {}",
                ballast_daemon::error_chain(&*error)
            );
            ExitCode::from(1)
        }
    }
}

impl From<TokenAction> for cli::TokenCommand {
    fn from(action: TokenAction) -> Self {
        match action {
            TokenAction::Create { host, rotate } => Self::Create { host, rotate },
            TokenAction::Revoke { host } => Self::Revoke { host },
            TokenAction::List => Self::List,
        }
    }
}
