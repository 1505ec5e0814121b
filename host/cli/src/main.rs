//! `spear`: the SPEAR command-line client.
//!
//! It speaks SMS's REST API (`--sms`, else `SPEAR_SMS`, else `http://127.0.0.1:8080`): nodes,
//! tasks, executions (`spear run` waits and passes output and exit code through), the event log,
//! files and plugins. Two plugin commands need no server: `spear plugin check FILE` validates a
//! plugin file exactly as a host would, and `spear plugin sim` runs a plugin host over a simulated
//! cluster so that strategies, hot reload and containment can be watched live.
//!
//! Exit codes: 0 success; 1 a refused or failed operation (or, for `spear run`, the execution's
//! own code; 128 + signal when killed); 2 a usage or transport error.

mod check;
mod client;
mod dev;
mod error;
mod exec;
mod explain;
mod files;
mod invoke;
mod logs;
mod node;
mod output;
mod plugins;
mod replay;
mod run;
mod shadow;
mod sign;
mod sim;
mod sse;
mod status;
mod task;
mod token;
mod trace;

use clap::{Parser, Subcommand, ValueEnum};

use client::Client;
use error::CliError;

/// The SPEAR command-line client.
#[derive(Debug, Parser)]
#[command(name = "spear", version, about)]
struct Cli {
    /// Output format: text for people, json for scripts (one document, or one per line for
    /// streams).
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// SMS's HTTP address (`http://host:port` or `host:port`).
    #[arg(
        long,
        global = true,
        env = "SPEAR_SMS",
        default_value = "http://127.0.0.1:8080"
    )]
    sms: String,
    /// A token for SMS (`sms token create`, `spear token create`), sent as `Authorization:
    /// Bearer`; needed when SMS has `[auth] enabled = true`.
    #[arg(long, global = true, env = "SPEAR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) that SMS's certificate must chain to, for an `https://` SMS with a
    /// certificate of its own CA (the system's roots are not used then).
    #[arg(long, global = true, env = "SPEAR_CA")]
    ca: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// One JSON document (for scripts); streams print one per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The Spearlets SMS knows.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Registered tasks.
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// Run a task or an inline executable; wait, print its output, exit with its code.
    Run(Box<run::RunArgs>),
    /// Invoke a function of a task on a live instance; print its output.
    Invoke(invoke::InvokeArgs),
    /// One execution, or the cluster at a glance.
    Status {
        /// The execution to show (default: a cluster summary).
        execution_id: Option<String>,
    },
    /// SMS's event log (optionally one execution's), as it happens with --follow.
    Logs(logs::LogsArgs),
    /// Why an execution went where it went: its scheduling round, who decided, every node's
    /// verdict.
    Explain {
        /// The execution to explain (see `spear status`).
        execution_id: String,
    },
    /// Cancel an execution that has not finished.
    Cancel {
        /// The execution to cancel (see `spear status`).
        execution_id: String,
    },
    /// SMS's file store.
    #[command(subcommand)]
    File(files::FileCommand),
    /// A local SMS and one Spearlet with the plugins of a directory (Ctrl-C stops both).
    Dev(dev::Args),
    /// Plugins: SMS's (list, reload, history), or a local file (check) and a simulated host (sim).
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Tokens: make, list and revoke them (admin), or see who yours says you are (whoami).
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Replay a workload trace through strategy plugins on a simulated cluster, in virtual time,
    /// and compare them side by side.
    Sim(replay::Args),
    /// Workload traces for `spear sim`: export SMS's, or generate one.
    #[command(subcommand)]
    Trace(TraceCommand),
}

#[derive(Debug, Subcommand)]
enum TraceCommand {
    /// SMS's nodes and the executions submitted in a window that ran, as a trace.
    Export(trace::ExportArgs),
    /// A synthetic trace from the knobs (same knobs and seed: same trace).
    Generate(trace::GenerateArgs),
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// SMS's plugins: state, sha256, last error; the scheduler slot; the limits.
    List,
    /// Make SMS rescan its plugin directory and config now; exit 1 when the reload is rejected.
    Reload,
    /// SMS's reload reports and plugin events.
    History,
    /// How the shadow strategy (`[scheduler] shadow`) compares with the active one: agreement,
    /// invalid answers, latency, the spread each gives.
    Shadow,
    /// Validate a plugin file exactly as a host would, then print its info or why it is refused.
    Check(check::Args),
    /// Make a key to sign plugins with; prints its public key (for `[plugins.trusted_keys]`).
    Keygen(sign::KeygenArgs),
    /// Sign plugin files: write `FILE.sig` beside each.
    Sign(sign::SignArgs),
    /// Run a plugin host over a simulated cluster, placing continuously; edit the config or the
    /// plugin directory (or send SIGHUP) to hot-reload.
    Sim(sim::Args),
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SPEAR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,extism::plugin=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match cli.command {
        Command::Plugin(PluginCommand::Check(args)) => local(check::run(args, cli.output)),
        Command::Plugin(PluginCommand::Sim(args)) => local(sim::run(args, cli.output)),
        Command::Plugin(PluginCommand::Keygen(args)) => local(sign::keygen(args, cli.output)),
        Command::Plugin(PluginCommand::Sign(args)) => local(sign::sign(args, cli.output)),
        Command::Dev(args) => local(dev::run(args, cli.output)),
        Command::Sim(args) => local(replay::run(args, cli.output).map_err(Into::into)),
        Command::Trace(TraceCommand::Generate(args)) => {
            local(trace::run_generate(args).map_err(Into::into))
        }
        command => match remote(
            command,
            &cli.sms,
            cli.token.as_deref(),
            cli.ca.as_deref(),
            cli.output,
        ) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("spear: error: {e}");
                e.exit_code()
            }
        },
    };
    std::process::exit(code);
}

/// The exit code of a command that needs no server.
fn local(result: anyhow::Result<i32>) -> i32 {
    result.unwrap_or_else(|e| {
        eprintln!("spear: error: {e:#}");
        2
    })
}

/// Run a command against SMS.
fn remote(
    command: Command,
    sms: &str,
    token: Option<&str>,
    ca: Option<&std::path::Path>,
    output: Output,
) -> Result<i32, CliError> {
    // Without a token, the one `spear dev` left for this very SMS, if any.
    let dev_token = match token {
        Some(_) => None,
        None => dev::handoff::token_for(&client::normalize(sms)?),
    };
    let client = Client::new(sms, token.or(dev_token.as_deref()), ca)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        match command {
            Command::Node(cmd) => node::run(cmd, &client, output).await,
            Command::Task(cmd) => task::run(cmd, &client, output).await,
            Command::Run(args) => run::run(*args, &client, output).await,
            Command::Invoke(args) => invoke::run(args, &client, output).await,
            Command::Status { execution_id } => status::run(execution_id, &client, output).await,
            Command::Logs(args) => logs::run(args, &client, output).await,
            Command::Explain { execution_id } => explain::run(&execution_id, &client, output).await,
            Command::Cancel { execution_id } => run::cancel(&execution_id, &client, output).await,
            Command::File(cmd) => files::run(cmd, &client, output).await,
            Command::Plugin(PluginCommand::List) => plugins::list(&client, output).await,
            Command::Plugin(PluginCommand::Reload) => plugins::reload(&client, output).await,
            Command::Plugin(PluginCommand::History) => plugins::history(&client, output).await,
            Command::Plugin(PluginCommand::Shadow) => shadow::run(&client, output).await,
            Command::Token(cmd) => token::run(cmd, &client, output).await,
            Command::Trace(TraceCommand::Export(args)) => {
                trace::export(args, &client, output).await
            }
            Command::Dev(_)
            | Command::Sim(_)
            | Command::Trace(TraceCommand::Generate(_))
            | Command::Plugin(
                PluginCommand::Check(_)
                | PluginCommand::Sim(_)
                | PluginCommand::Keygen(_)
                | PluginCommand::Sign(_),
            ) => {
                unreachable!("local commands are run by main")
            }
        }
    })
}
