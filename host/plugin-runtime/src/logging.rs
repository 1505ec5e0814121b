//! Logging as the hosts set it up: to standard error, `pretty` or `json`, filtered by the
//! configured level unless an environment variable fixes it — and the level as a [`LiveKey`], so
//! that a config reload changes it in the running process.

use std::sync::Arc;

use tracing_subscriber::EnvFilter;

use crate::host::LiveKey;

/// Install the global subscriber. `level` is an `EnvFilter` directive (`info`,
/// `spear_sms=debug,warn`, …) used unless `env_var` is set; returns the live key for the level, or
/// `None` when `env_var` fixes it.
pub fn init(level: &str, json: bool, env_var: &str) -> Option<LiveKey> {
    let fixed = std::env::var_os(env_var).is_some();
    let filter = EnvFilter::try_from_env(env_var).unwrap_or_else(|_| EnvFilter::new(level));
    let set: Arc<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync> = if json {
        let builder = tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_filter_reloading();
        let handle = builder.reload_handle();
        builder.init();
        Arc::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
    } else {
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_filter_reloading();
        let handle = builder.reload_handle();
        builder.init();
        Arc::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
    };
    if fixed {
        return None;
    }
    Some(Box::new(move |value| {
        let level = value.as_str().ok_or("must be a string")?.to_owned();
        EnvFilter::try_new(&level).map_err(|e| format!("{level:?}: {e}"))?;
        let set = set.clone();
        Ok(Some(Box::new(move || {
            if let Ok(filter) = EnvFilter::try_new(&level)
                && let Err(e) = set(filter)
            {
                tracing::warn!("cannot apply log level {level:?}: {e}");
            }
        })))
    }))
}

/// The live key for a level that cannot change (fixed by the environment): every change of it
/// is reported as needing a restart.
pub fn fixed_level() -> LiveKey {
    Box::new(|_| Ok(None))
}
