//! `spearlet`: the SPEAR node agent.

use clap::Parser;
use spear_plugin_runtime::{Trigger, logging};
use spear_spearlet::{Cli, SpearletConfig};

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let config = match SpearletConfig::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("spearlet: {e}");
            std::process::exit(2);
        }
    };
    let log = &config.spearlet.logging;
    let log_file = match log.file.as_deref().map(logging::open_log_file) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(e)) => {
            eprintln!("spearlet: configuration: spearlet.logging.file: cannot open it: {e}");
            std::process::exit(2);
        }
    };
    let level = logging::init(&log.level, log.format == "json", "SPEARLET_LOG", log_file)
        .unwrap_or_else(logging::fixed_level);
    for note in &config.notes {
        tracing::warn!("configuration: {note}");
    }
    let in_force = config.clone();
    let running = match spear_spearlet::start(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("spearlet: cannot start: {e}");
            std::process::exit(1);
        }
    };
    // Config reloads check the Spearlet's own keys too (a typo rejects; the log level applies,
    // executors swap live; others need a restart).
    running
        .agent
        .plugins
        .set_host_keys(spear_spearlet::reload::host_keys(
            cli,
            &in_force,
            level,
            std::sync::Arc::downgrade(&running.agent),
        ));
    // Handlers before the ready line: whoever reads it may signal at once.
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        _ => {
            eprintln!("spearlet: cannot install signal handlers");
            std::process::exit(1);
        }
    };
    println!(
        "spearlet: node {} grpc={} http={} sms={} executors={}",
        running.agent.node,
        running.grpc_addr,
        running.http_addr,
        running.agent.sms.addr(),
        running.agent.executors.get().types().join(",")
    );
    let mut fatal = running.agent.fatal.subscribe();
    loop {
        tokio::select! {
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                let host = running.agent.plugins.clone();
                if let Ok(r) = tokio::task::spawn_blocking(move || host.reload(Trigger::Signal)).await {
                    tracing::info!(outcome = ?r.outcome, "SIGHUP reload");
                }
            }
            _ = fatal.changed() => {
                let why = fatal.borrow().clone().unwrap_or_default();
                eprintln!("spearlet: {why}");
                std::process::exit(3);
            }
        }
    }
    tracing::info!("draining");
    running.shutdown().await;
}
