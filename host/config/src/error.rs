//! What a configuration can get wrong: typed [`Problem`]s, each naming its key and the source that
//! set it, gathered by [`Problems`] into one [`ConfigError`].

use std::fmt;
use std::path::PathBuf;

use crate::layers::Origins;

/// The source a key's value came from, highest layer first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag, as written (`--grpc-addr`).
    Flag(String),
    /// The config file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// The built-in defaults.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => f.write_str(flag),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Env(var) => f.write_str(var),
            Origin::Default => f.write_str("the defaults"),
        }
    }
}

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The config file could not be read.
    #[error("{}: cannot read: {message}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The config file is not TOML.
    #[error("{}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (with the line and column).
        message: String,
    },
    /// A key that no setting has.
    #[error("{}{key}: unknown key", at(origin))]
    Unknown {
        /// The key, dotted (`http.max_body`).
        key: String,
        /// Where it was written.
        origin: Origin,
    },
    /// A problem a checker of its own reports, naming its keys itself (the plugin runtime's
    /// sections, say), or one of the layering itself.
    #[error("{}{message}", at(origin))]
    Other {
        /// The source it is in.
        origin: Origin,
        /// What is wrong.
        message: String,
    },
    /// A value refused.
    #[error("{}{key}: {message}", at(origin))]
    Invalid {
        /// The key, dotted (`log.format`).
        key: String,
        /// The source whose value is in force.
        origin: Origin,
        /// Why it is refused.
        message: String,
    },
}

/// `"<origin>: "`, or nothing for the defaults (the key alone says enough).
fn at(origin: &Origin) -> String {
    match origin {
        Origin::Default => String::new(),
        other => format!("{other}: "),
    }
}

impl Problem {
    /// The key the problem is about (None for a file that cannot be read or parsed, and for a
    /// problem that names its keys in its message).
    pub fn key(&self) -> Option<&str> {
        match self {
            Problem::Unknown { key, .. } | Problem::Invalid { key, .. } => Some(key),
            Problem::Unreadable { .. } | Problem::Syntax { .. } | Problem::Other { .. } => None,
        }
    }
}

/// A value refused by a check that does not know where the value came from: the key and why.
/// [`Problems::add`] makes it a [`Problem::Invalid`] naming the source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct Invalid {
    /// The key, dotted.
    pub key: String,
    /// Why it is refused.
    pub message: String,
}

impl Invalid {
    /// `key` refused because of `message`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A configuration refused: every problem found, in the order found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// What is wrong (never empty).
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// Each problem as one line.
    pub fn messages(&self) -> Vec<String> {
        self.problems.iter().map(ToString::to_string).collect()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("configuration: ")?;
        if self.problems.len() > 1 {
            write!(f, "{} problems: ", self.problems.len())?;
        }
        f.write_str(&self.messages().join("; "))
    }
}

impl std::error::Error for ConfigError {}

impl From<Problem> for ConfigError {
    fn from(problem: Problem) -> Self {
        Self {
            problems: vec![problem],
        }
    }
}

impl From<Invalid> for ConfigError {
    /// A problem whose source is not known (a value checked after the load).
    fn from(e: Invalid) -> Self {
        Problem::Invalid {
            key: e.key,
            origin: Origin::Default,
            message: e.message,
        }
        .into()
    }
}

/// The problems of one load, gathered so that all are reported at once.
#[derive(Debug, Clone)]
pub struct Problems {
    origins: Origins,
    list: Vec<Problem>,
}

impl Problems {
    /// None yet, for a configuration loaded from `origins`.
    pub fn new(origins: Origins) -> Self {
        Self {
            origins,
            list: Vec::new(),
        }
    }

    /// `key`'s value is refused because of `message`.
    pub fn invalid(&mut self, key: &str, message: impl Into<String>) {
        self.list.push(Problem::Invalid {
            key: key.to_owned(),
            origin: self.origins.of(key),
            message: message.into(),
        });
    }

    /// A refusal from a check that returns [`Invalid`].
    pub fn add(&mut self, e: Invalid) {
        self.invalid(&e.key, e.message);
    }

    /// The value of `r`, or None with its error added.
    pub fn check<T>(&mut self, r: Result<T, Invalid>) -> Option<T> {
        r.map_err(|e| self.add(e)).ok()
    }

    /// A problem found elsewhere.
    pub fn push(&mut self, problem: Problem) {
        self.list.push(problem);
    }

    /// Where each key came from.
    pub fn origins(&self) -> &Origins {
        &self.origins
    }

    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// `Ok` when nothing is wrong, else every problem.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.list.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                problems: self.list,
            })
        }
    }
}
