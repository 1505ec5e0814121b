//! `sms`: the SPEAR control plane.

use clap::Parser;
use spear_plugin_runtime::Trigger;
use spear_plugin_runtime::logging;
use spear_sms::config::{Cli, SmsConfig};

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let config = match SmsConfig::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sms: {e}");
            std::process::exit(2);
        }
    };
    if let Some(command) = cli.command.clone() {
        if let Err(e) = spear_sms::auth::offline::run(config, command).await {
            eprintln!("sms: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let level = logging::init(&config.log.level, config.log.format == "json", "SMS_LOG")
        .unwrap_or_else(logging::fixed_level);
    let in_force = config.clone();
    let running = match spear_sms::server::start(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sms: cannot start: {e:#}");
            std::process::exit(1);
        }
    };
    // Config reloads check SMS's own keys too (a typo rejects; log.level applies; others: restart).
    running
        .sms
        .plugins()
        .set_host_keys(spear_sms::reload::host_keys(cli, &in_force, level));
    // Handlers before the ready line: whoever reads it may signal at once.
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        _ => {
            eprintln!("sms: cannot install signal handlers");
            std::process::exit(1);
        }
    };
    println!(
        "sms: listening grpc={} http={}{} (session {})",
        running.grpc_addr,
        running.http_addr,
        running
            .admin_addr
            .map(|a| format!(" admin={a}"))
            .unwrap_or_default(),
        running.sms.session
    );
    loop {
        tokio::select! {
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                let host = running.sms.plugins().clone();
                let report = tokio::task::spawn_blocking(move || host.reload(Trigger::Signal)).await;
                if let Ok(r) = report {
                    tracing::info!(outcome = ?r.outcome, "SIGHUP reload");
                }
            }
        }
    }
    tracing::info!("shutting down");
    running.shutdown().await;
}
