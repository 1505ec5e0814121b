//! `sms`: the SPEAR control plane.

use clap::Parser;
use spear_plugin_runtime::Trigger;
use spear_plugin_runtime::logging;
use spear_sms::config::{Cli, SmsConfig};
use spear_sms::ha::{Candidate, LeaderInfo, bound};
use spear_sms::server::{self, Listeners};

/// `sms: listening grpc=… http=… [admin=…]` and, when it leads alone, its session.
fn ready(listeners: &Listeners, session: Option<&str>) -> String {
    let admin = listeners
        .admin_addr()
        .ok()
        .flatten()
        .map(|a| format!(" admin={a}"))
        .unwrap_or_default();
    format!(
        "sms: listening grpc={} http={}{admin}{}",
        bound(listeners.grpc_addr()),
        bound(listeners.http_addr()),
        session
            .map(|s| format!(" (session {s})"))
            .unwrap_or_default()
    )
}

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
    let log_file = match config.log.file.as_deref().map(logging::open_log_file) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(e)) => {
            eprintln!("sms: configuration: log.file: cannot open it: {e}");
            std::process::exit(2);
        }
    };
    let level = logging::init(
        &config.log.level,
        config.log.format == "json",
        "SMS_LOG",
        log_file,
    )
    .unwrap_or_else(logging::fixed_level);
    for note in &config.notes {
        tracing::warn!("configuration: {note}");
    }
    let in_force = config.clone();
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
    let fail = |e: anyhow::Error| -> ! {
        eprintln!("sms: cannot start: {e:#}");
        std::process::exit(1);
    };
    let listeners = Listeners::bind(&config).unwrap_or_else(|e| fail(e));
    let prepared = server::prepare(&config).await.unwrap_or_else(|e| fail(e));
    // With the etcd backend, SMS takes part in the election: it stands by, redirecting clients
    // to the leader, until it leads ([`spear_sms::ha`]).
    let mut elected = None;
    let leadership = if config.database.db_type == "etcd" {
        let mut candidate = Candidate::join(&config).await.unwrap_or_else(|e| fail(e));
        let leader = candidate.observe();
        let reads = prepared.reads(&config).unwrap_or_else(|e| fail(e));
        let standby =
            server::standby(&config, &listeners, leader, reads).unwrap_or_else(|e| fail(e));
        println!(
            "{} (standing by: the election decides who leads)",
            ready(&listeners, None)
        );
        let me = LeaderInfo::of(&config, &listeners);
        let won = tokio::select! {
            won = candidate.campaign(&me) => won.unwrap_or_else(|e| fail(e)),
            _ = int.recv() => return,
            _ = term.recv() => return,
        };
        standby.stop();
        tracing::info!(term = won.term, id = %me.id, "leading");
        elected = Some(candidate);
        Some(won)
    } else {
        None
    };
    let running = server::start_on(config, prepared, &listeners, leadership.as_ref())
        .await
        .unwrap_or_else(|e| fail(e));
    // Config reloads check SMS's own keys too (a typo rejects; log.level applies; others: restart).
    running
        .sms
        .plugins()
        .set_host_keys(spear_sms::reload::host_keys(cli, &in_force, level));
    if leadership.is_none() {
        println!("{}", ready(&listeners, Some(&running.sms.session)));
    }
    // A leader that lost its lease stops at once: another SMS leads, and this one may write nothing.
    let deposed = spear_sms::ha::deposed(elected.as_ref(), running.sms.fenced());
    tokio::pin!(deposed);
    // A write whose outcome the store cannot tell leaves memory perhaps unlike storage: stop, to
    // be started again from storage.
    let mut unsure = running.sms.unsure();
    loop {
        tokio::select! {
            Ok(_) = unsure.wait_for(|u| *u) => {
                eprintln!(
                    "sms: a storage write's outcome is unknown (the store did not answer); \
                     stopping, so that it starts again from what storage holds"
                );
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                std::process::exit(3);
            }
            why = &mut deposed => {
                eprintln!("sms: no longer the leader ({why}); stopping so that it writes nothing");
                // Its writes are refused by the fence already: a moment for the answers saying so
                // to reach their clients, then out.
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                std::process::exit(3);
            }
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
    // Give up the lead at once (rather than when the lease would expire): another SMS leads now.
    if let Some(candidate) = &elected {
        candidate.resign().await;
    }
}
