//! Logging as the hosts set it up: to standard error (or a file), `pretty` or `json`, filtered by the
//! configured level unless an environment variable fixes it — and the level as a [`LiveKey`], so
//! that a config reload changes it in the running process.

use std::sync::Arc;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::host::LiveKey;

/// Install the global subscriber. `level` is an `EnvFilter` directive (`info`,
/// `spear_sms=debug,warn`, …) used unless `env_var` is set; returns the live key for the level, or
/// `None` when `env_var` fixes it. Logs go to `file` when given (`log.file`, opened by
/// [`open_log_file`]), else to standard error.
pub fn init(
    level: &str,
    json: bool,
    env_var: &str,
    file: Option<std::fs::File>,
) -> Option<LiveKey> {
    let writer = || match &file {
        Some(f) => match f.try_clone() {
            Ok(f) => BoxMakeWriter::new(std::sync::Mutex::new(f)),
            Err(_) => BoxMakeWriter::new(std::io::stderr),
        },
        None => BoxMakeWriter::new(std::io::stderr),
    };
    // Colour codes are for a terminal, not a log file.
    let ansi = file.is_none();
    let fixed = std::env::var_os(env_var).is_some();
    let filter = EnvFilter::try_from_env(env_var).unwrap_or_else(|_| EnvFilter::new(level));
    let set: Arc<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync> = if json {
        let builder = tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(writer())
            .with_filter_reloading();
        let handle = builder.reload_handle();
        builder.init();
        Arc::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
    } else {
        let builder = tracing_subscriber::fmt()
            .with_ansi(ansi)
            .with_env_filter(filter)
            .with_writer(writer())
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

/// Open (appending, creating it and its directory) the log file `path` names.
pub fn open_log_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// The live key for a level that cannot change (fixed by the environment): every change of it
/// is reported as needing a restart.
pub fn fixed_level() -> LiveKey {
    Box::new(|_| Ok(None))
}
