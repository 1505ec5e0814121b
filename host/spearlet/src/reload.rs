//! The Spearlet's own keys at a config reload (the plugin runtime re-reads the plugin sections and
//! asks this check for the rest): the file is loaded with the same layering as at start and
//! compared key by key with the configuration in force. A typo or a bad value rejects the reload
//! with the key named; `spearlet.logging.level` is applied at once; `[executors]` swaps the
//! executors live (below); any other changed key is reported as needing a restart.
//!
//! A changed `[executors]` section is tried at once: the new set is made (executors whose name,
//! configuration and file are unchanged kept as they are, the others loaded and configured), and
//! any executor that cannot be loaded or refuses its configuration rejects the reload, naming
//! it. When the reload is accepted the new set is put in force ([`LiveExecutors`]): running work
//! finishes on the executors it started on, new work starts on the new ones.
//!
//! [`LiveExecutors`]: crate::executors::LiveExecutors

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use spear_plugin_runtime::{HostKeys, LiveKey, config_diff_check};

use crate::agent::Agent;
use crate::config::{Cli, SpearletConfig};

/// The check the Spearlet gives its plugin host: `cli` as it was started, `running` the
/// configuration in force, `level` the live log level (from
/// [`spear_plugin_runtime::logging::init`]), `agent` the agent whose executors a reload swaps.
pub fn host_keys(
    cli: Cli,
    running: &SpearletConfig,
    level: LiveKey,
    agent: Weak<Agent>,
) -> HostKeys {
    let live = BTreeMap::from([("spearlet.logging.level", level)]);
    // The configuration the key check loaded, for the executors' part below.
    let loaded: Arc<Mutex<Option<SpearletConfig>>> = Arc::default();
    let stash = loaded.clone();
    let keys = config_diff_check(
        running,
        &["plugins", "scheduler", "reclaimer", "executors"],
        move |path| {
            let mut cli = cli.clone();
            cli.config = Some(path.to_path_buf());
            let config = SpearletConfig::load(&cli).map_err(|e| e.messages())?;
            *stash.lock().unwrap_or_else(|p| p.into_inner()) = Some(config.clone());
            Ok(config)
        },
        live,
    );
    let in_force = Arc::new(Mutex::new(running.executors.clone()));
    Box::new(move |path| {
        let mut change = keys(path)?;
        let Some(new) = loaded.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Ok(change);
        };
        if new.executors == *in_force.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(change);
        }
        let Some(agent) = agent.upgrade() else {
            change.restart.push("executors".into());
            return Ok(change);
        };
        let set = agent.executors.get().rebuilt(&new, &agent.plugins);
        if !set.problems.is_empty() {
            return Err(set.problems);
        }
        change.applied.push(format!(
            "executors: {} (swapped live)",
            set.all()
                .map(|l| format!("{} {}", l.name, l.version))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let before = std::mem::replace(&mut change.commit, Box::new(|| {}));
        let in_force = in_force.clone();
        change.commit = Box::new(move || {
            before();
            agent.executors.replace(set);
            *in_force.lock().unwrap_or_else(|p| p.into_inner()) = new.executors;
        });
        Ok(change)
    })
}
