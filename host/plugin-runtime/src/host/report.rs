//! What a reload reports: its trigger, its outcome, what changed, and the plugins active after it.

use serde::Serialize;

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// Host start.
    Start,
    /// The watcher saw the plugin directory change.
    Directory,
    /// The watcher saw the config file change.
    ConfigFile,
    /// SIGHUP.
    Signal,
    /// The API or `spear plugin reload`.
    Api,
}

/// How a reload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReloadOutcome {
    /// Everything changed was applied.
    Applied,
    /// Nothing changed.
    Unchanged,
    /// The config was invalid; the previous one stays in force.
    Rejected,
    /// Reloadable changes were applied; some keys need a restart.
    RestartRequired,
}

/// An active plugin, as reports show it.
#[derive(Debug, Clone, Serialize)]
pub struct ActiveRef {
    /// Role.
    pub role: String,
    /// Plugin name.
    pub name: String,
    /// Version.
    pub version: String,
    /// sha256 of its file.
    pub sha256: String,
}

/// What one reload did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What started it.
    pub trigger: Trigger,
    /// How it ended.
    pub outcome: ReloadOutcome,
    /// What changed (files loaded or refused, selections, limits).
    pub changes: Vec<String>,
    /// Why it was rejected, if it was.
    pub error: Option<String>,
    /// Keys that need a restart.
    pub restart_keys: Vec<String>,
    /// The plugins active afterwards.
    pub active: Vec<ActiveRef>,
}

/// Reports kept in the history.
pub(super) const REPORTS: usize = 256;
