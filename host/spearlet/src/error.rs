//! Errors of the Spearlet, each naming its subject.

/// A Spearlet error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The plugin runtime refused something.
    #[error("plugins: {0}")]
    Plugins(#[from] spear_plugin_runtime::Error),
    /// The state store failed.
    #[error("state store: {0}")]
    Storage(String),
    /// SMS could not be reached or refused a call.
    #[error("sms {addr}: {message}")]
    Sms {
        /// The SMS address.
        addr: String,
        /// What went wrong.
        message: String,
    },
    /// An artifact could not be fetched.
    #[error("artifact {uri}: {reason}")]
    Artifact {
        /// The URI.
        uri: String,
        /// Why.
        reason: String,
    },
    /// An execution cannot run here.
    #[error("{0}")]
    Execution(String),
    /// No instance became free in time (the task is at its instance limit, each one busy).
    #[error("{0}")]
    OverCapacity(String),
    /// The TLS files of a listener (`[spearlet.tls]`) do not load.
    #[error("spearlet.tls: {0}")]
    Tls(String),
    /// A listener could not be bound or served.
    #[error("{what} {addr}: {source}")]
    Listen {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
