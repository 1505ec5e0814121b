//! Errors of the plugin runtime. Each variant names its subject (the file, the plugin, the key).

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a plugin file, a config or a call was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a plugin this host can load.
    #[error("{file}: refused: {reason}")]
    Refused {
        /// The file.
        file: PathBuf,
        /// Why, in words an operator can act on.
        reason: String,
    },
    /// A native plugin was built against an incompatible plugin ABI.
    #[error("{file}: refused: built against plugin ABI {found}, this host speaks {expected}")]
    AbiMismatch {
        /// The file.
        file: PathBuf,
        /// The host's ABI version.
        expected: String,
        /// The library's ABI version.
        found: String,
    },
    /// The plugin is not of the kind it was used as.
    #[error("{subject}: is a {found} plugin, not a {expected}")]
    WrongKind {
        /// The file or plugin name.
        subject: String,
        /// The kind needed.
        expected: spear_plugin_api::PluginKind,
        /// The kind it is.
        found: spear_plugin_api::PluginKind,
    },
    /// Another file already provides a plugin of this kind and name.
    #[error("{file}: refused: plugin {kind} `{name}` is already provided by {other}")]
    Duplicate {
        /// The file refused.
        file: PathBuf,
        /// The kind.
        kind: spear_plugin_api::PluginKind,
        /// The name.
        name: String,
        /// The file that holds the name.
        other: PathBuf,
    },
    /// The configuration is invalid; every problem is listed.
    #[error("invalid configuration: {}", .errors.join("; "))]
    Config {
        /// Each problem, naming its key.
        errors: Vec<String>,
    },
    /// A selected plugin is not registered.
    #[error("no {kind} plugin named `{name}` is registered")]
    UnknownPlugin {
        /// The kind.
        kind: spear_plugin_api::PluginKind,
        /// The name.
        name: String,
    },
    /// A call into a plugin failed (trap, deadline, memory limit, error value, invalid answer).
    #[error("plugin `{plugin}`: {failure}")]
    Call {
        /// The plugin name.
        plugin: String,
        /// What went wrong.
        failure: CallFailure,
    },
}

/// How a call into a plugin failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    /// The guest trapped (including panics and a failed memory grow).
    #[error("trapped: {0}")]
    Trap(String),
    /// The call ran past its deadline.
    #[error("exceeded its {0} ms deadline")]
    Deadline(u64),
    /// The call used its CPU budget, passed its wall-clock ceiling, or blocked past it (the text
    /// says which).
    #[error("stopped: {0}")]
    Budget(String),
    /// The guest grew past its memory limit.
    #[error("exceeded its memory limit of {0} MiB")]
    Memory(u64),
    /// The plugin returned an error value.
    #[error("returned an error: {0}")]
    Plugin(String),
    /// The plugin's answer broke a host rule.
    #[error("invalid answer: {0}")]
    Invalid(String),
    /// The host could not give the instance what it is granted (its scratch directory).
    #[error("the host could not set it up: {0}")]
    Host(String),
}

impl Error {
    pub(crate) fn refused(file: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Self::Refused {
            file: file.into(),
            reason: reason.to_string(),
        }
    }
}
