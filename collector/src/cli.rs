//! The collector's one-shot subcommands over the configured store: per-host ingest
//! tokens (`token create|revoke|list`) and reports (`report balloon-policy`). The
//! binary's edge (messages for a person, `anyhow`), kept out of `main.rs`, which
//! only parses the command line and dispatches.

use anyhow::Context;

use crate::reports::{self, format::parse_duration_ms, PolicySettings, ReportFormat};
use crate::storage::{self, queries, StorageSettings};

/// What `token` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCommand {
    /// Create a token for the host and print it once (only its hash is stored).
    Create { host: String, rotate: bool },
    /// Revoke the host's token.
    Revoke { host: String },
    /// List hosts that have a token.
    List,
}

/// Runs a token command: a new token on stdout, confirmations on stderr.
pub async fn token(storage: &StorageSettings, command: TokenCommand) -> anyhow::Result<()> {
    let store = storage::open(storage)
        .await
        .context("Failed to open the store")?;
    match command {
        TokenCommand::Create { host, rotate } => {
            anyhow::ensure!(
                !host.is_empty()
                    && host.len() <= 253
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')),
                "Host name {host:?} may only hold letters, digits, '.', '-' and '_'"
            );
            let token = crate::auth::generate_token()?;
            queries::put_token(
                store.as_ref(),
                &host,
                &crate::auth::token_sha256(&token),
                crate::now_ms(),
                rotate,
            )
            .await?;
            println!("{token}");
            eprintln!("Token for {host} created; it is shown only now. Put it in the agent's collector.token_file.");
        }
        TokenCommand::Revoke { host } => {
            if queries::revoke_token(store.as_ref(), &host).await? {
                eprintln!("Token of {host} revoked.");
            } else {
                anyhow::bail!("{host} has no token");
            }
        }
        TokenCommand::List => {
            for info in queries::list_tokens(store.as_ref()).await? {
                println!("{}\t{}", info.host, info.created_ms);
            }
        }
    }
    Ok(())
}

/// Prints the balloon-policy report of the last `since` (`30d`, `12h`) in `format`
/// (md, html, json, csv) on stdout.
pub async fn balloon_policy_report(
    storage: &StorageSettings,
    since: &str,
    format: &str,
) -> anyhow::Result<()> {
    let format = ReportFormat::parse(format)?;
    let span_ms = parse_duration_ms(since)
        .with_context(|| format!("--since {since:?} is not a duration like 30d or 12h"))?;
    let store = storage::open(storage)
        .await
        .context("Failed to open the store")?;
    let until = crate::now_ms();
    let text = reports::balloon_policy(
        store.as_ref(),
        until.saturating_sub(span_ms),
        until,
        &PolicySettings::default(),
        format,
    )
    .await?;
    print!("{text}");
    Ok(())
}
