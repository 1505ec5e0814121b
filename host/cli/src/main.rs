//! `spear`: the SPEAR command-line client.
//!
//! Today it holds the plugin commands that need no server: `spear plugin check FILE` validates a
//! plugin file exactly as a host would, and `spear plugin sim` runs a plugin host over a simulated
//! cluster so that strategies, hot reload and containment can be watched live.

mod check;
mod sim;

use clap::{Parser, Subcommand, ValueEnum};

/// The SPEAR command-line client.
#[derive(Debug, Parser)]
#[command(name = "spear", version, about)]
struct Cli {
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// One JSON document (for scripts).
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Plugins: check a file, or run a simulated host.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Validate a plugin file exactly as a host would, then print its info or why it is refused.
    Check(check::Args),
    /// Run a plugin host over a simulated cluster, placing continuously; edit the config or the
    /// plugin directory (or send SIGHUP) to hot-reload.
    Sim(sim::Args),
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SPEAR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Plugin(PluginCommand::Check(args)) => check::run(args, cli.output),
        Command::Plugin(PluginCommand::Sim(args)) => sim::run(args, cli.output),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
