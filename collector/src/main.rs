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
use ballast_collector::storage::{self, queries};
use ballast_collector::{auth, server};

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
            eprintln!("ballast-collector: {error:#}");
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
            Command::Token { action, .. } => token(&settings, action).await,
            Command::Report { report, .. } => print_report(&settings, report).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ballast-collector: {error:#}");
            ExitCode::from(1)
        }
    }
}

async fn print_report(settings: &config::Settings, report: ReportKind) -> anyhow::Result<()> {
    let ReportKind::BalloonPolicy { since, format } = report;
    let format = ballast_collector::reports::ReportFormat::parse(&format)?;
    let span_ms = ballast_collector::reports::format::parse_duration_ms(&since)
        .with_context(|| format!("--since {since:?} is not a duration like 30d or 12h"))?;
    let store = storage::open(&settings.storage)
        .await
        .context("Failed to open the store")?;
    let until = ballast_collector::now_ms();
    let text = ballast_collector::reports::balloon_policy(
        store.as_ref(),
        until.saturating_sub(span_ms),
        until,
        &ballast_collector::reports::PolicySettings::default(),
        format,
    )
    .await?;
    print!("{text}");
    Ok(())
}

async fn token(settings: &config::Settings, action: TokenAction) -> anyhow::Result<()> {
    let store = storage::open(&settings.storage)
        .await
        .context("Failed to open the store")?;
    match action {
        TokenAction::Create { host, rotate } => {
            anyhow::ensure!(
                !host.is_empty()
                    && host.len() <= 253
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')),
                "Host name {host:?} may only hold letters, digits, '.', '-' and '_'"
            );
            let token = auth::generate_token()?;
            queries::put_token(
                store.as_ref(),
                &host,
                &auth::token_sha256(&token),
                ballast_collector::now_ms(),
                rotate,
            )
            .await?;
            println!("{token}");
            eprintln!("Token for {host} created; it is shown only now. Put it in the agent's collector.token_file.");
        }
        TokenAction::Revoke { host } => {
            if queries::revoke_token(store.as_ref(), &host).await? {
                eprintln!("Token of {host} revoked.");
            } else {
                anyhow::bail!("{host} has no token");
            }
        }
        TokenAction::List => {
            for info in queries::list_tokens(store.as_ref()).await? {
                println!("{}\t{}", info.host, info.created_ms);
            }
        }
    }
    Ok(())
}
