//! SMS's own keys at a config reload (the plugin runtime re-reads the plugin sections and asks this
//! check for the rest): the file is loaded with the same layering as at start (defaults,
//! environment, file, flags) and compared key by key with the configuration in force. A typo or a
//! bad value rejects the whole reload with the key named; `log.level` is applied at once; any other
//! changed key is reported as needing a restart.

use std::collections::BTreeMap;

use spear_plugin_runtime::{HostKeys, LiveKey, config_diff_check};

use crate::config::{Cli, SmsConfig};

/// The check SMS gives its plugin host: `cli` as SMS was started, `running` the configuration in
/// force, `level` the live log level (from [`spear_plugin_runtime::logging::init`]).
pub fn host_keys(cli: Cli, running: &SmsConfig, level: LiveKey) -> HostKeys {
    let live = BTreeMap::from([("log.level", level)]);
    config_diff_check(
        running,
        &["plugins", "scheduler", "reclaimer"],
        move |path| {
            let mut cli = cli.clone();
            cli.config = Some(path.to_path_buf());
            SmsConfig::load(&cli).map_err(|e| e.messages())
        },
        live,
    )
}
