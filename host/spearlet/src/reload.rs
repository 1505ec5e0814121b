//! The Spearlet's own keys at a config reload (the plugin runtime re-reads the plugin sections and
//! asks this check for the rest): the file is loaded with the same layering as at start and
//! compared key by key with the configuration in force. A typo or a bad value rejects the reload
//! with the key named; `spearlet.logging.level` is applied at once; any other changed key is
//! reported as needing a restart.

use std::collections::BTreeMap;

use spear_plugin_runtime::{HostKeys, LiveKey, config_diff_check};

use crate::config::{Cli, SpearletConfig};

/// The check the Spearlet gives its plugin host: `cli` as it was started, `running` the
/// configuration in force, `level` the live log level (from
/// [`spear_plugin_runtime::logging::init`]).
pub fn host_keys(cli: Cli, running: &SpearletConfig, level: LiveKey) -> HostKeys {
    let live = BTreeMap::from([("spearlet.logging.level", level)]);
    config_diff_check(
        running,
        &["plugins", "scheduler", "reclaimer"],
        move |path| {
            let mut cli = cli.clone();
            cli.config = Some(path.to_path_buf());
            SpearletConfig::load(&cli).map_err(|e| e.messages())
        },
        live,
    )
}
