//! `sms token …`: make, list and revoke tokens on SMS's state while SMS is stopped (the first
//! admin token of a cluster is made this way, or comes from `SMS_ADMIN_TOKEN`). A running SMS
//! does the same through `spear token …`.

use std::sync::Arc;

use anyhow::Context;
use spear_plugin_runtime::PluginHost;

use super::{Role, Tokens};
use crate::config::SmsConfig;
use crate::db::Db;

/// `sms` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Tokens: create, list, revoke (opens SMS's database: SMS must be stopped).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Storage: migrate SMS's state between backends (SMS stopped on both).
    #[command(subcommand)]
    Storage(crate::migrate::StorageCommand),
}

/// `sms token …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TokenCommand {
    /// Make a token and print it (the only time it is shown) on standard output.
    Create {
        /// `reader`, `operator`, `admin` or `node`.
        #[arg(long)]
        role: String,
        /// A unique name (letters, digits, `-`, `_`, `.`).
        #[arg(long)]
        name: String,
        /// For a node token: the node uuid it may act as (else: its first registration's).
        #[arg(long)]
        node: Option<String>,
        /// Seconds until it stops working (default: never).
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
    /// Every token (never the secrets), one JSON document per line.
    List,
    /// Revoke a token by id or name.
    Revoke {
        /// The token's id or name.
        token: String,
    },
}

/// Run `command` against the state `config` names.
pub async fn run(config: SmsConfig, command: Command) -> anyhow::Result<()> {
    let command = match command {
        Command::Token(command) => command,
        Command::Storage(command) => return crate::migrate::run(config, command).await,
    };
    // redb's lock keeps this away from a running SMS; etcd has no such lock, and the leader
    // keeps its tokens in memory: a change made here would not reach it (a revoked token would
    // still be taken).
    if config.database.db_type == "etcd" {
        anyhow::bail!(
            "`sms token` works on a stopped SMS's own store; on etcd the replicas keep running: \
             use `spear token` against the leader"
        );
    }
    let runtime = config.runtime_config()?;
    let source = config.source.clone();
    let plugins: Arc<PluginHost> = tokio::task::spawn_blocking(move || {
        PluginHost::with_builtins(runtime, source, crate::builtins::modules())
    })
    .await?
    .context("plugins")?;
    let backend = crate::service::open_backend(&config, &plugins)
        .await
        .with_context(|| {
            format!(
                "opening {} (is SMS running? stop it, or use `spear token` against it)",
                config.database.path.display()
            )
        })?;
    let tokens = Tokens::open(Db::new(backend), Vec::new()).await?;
    match command {
        TokenCommand::Create {
            role,
            name,
            node,
            ttl_secs,
        } => {
            let role = Role::parse(&role)?;
            let (info, token) = tokens
                .create(&name, role, node, ttl_secs, "sms token", None)
                .await?;
            eprintln!(
                "sms: token `{}` ({}, id {}); it is shown only now:",
                info.name, info.role, info.id
            );
            println!("{token}");
        }
        TokenCommand::List => {
            for info in tokens.list() {
                println!("{}", serde_json::to_string(&info)?);
            }
        }
        TokenCommand::Revoke { token } => {
            let info = tokens.revoke(&token, None).await?;
            eprintln!("sms: token `{}` ({}) revoked", info.name, info.id);
        }
    }
    Ok(())
}
