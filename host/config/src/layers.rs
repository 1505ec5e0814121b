//! The sources of a configuration and the load that layers them: [`Layers`] in, [`Loaded`] out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use config::{Config, ConfigBuilder, File, FileFormat, builder::DefaultState};
use serde::de::DeserializeOwned;

use crate::compat::Compat;
use crate::error::{ConfigError, Origin, Problem, Problems};

/// The sources of one configuration; see the crate docs.
#[derive(Debug, Clone)]
pub struct Layers<'a> {
    defaults: &'a str,
    /// (variable, key, value) of the variables that are set.
    env: Vec<(String, String, String)>,
    file: Option<FileSource>,
    /// (flag as written, key, value) of the flags given.
    flags: Vec<(String, String, String)>,
    /// Keys of other programs' configs taken in the file.
    compat: &'a [Compat],
}

#[derive(Debug, Clone)]
enum FileSource {
    /// Read at the load.
    Path(PathBuf),
    /// Given as text, named for messages.
    Text(PathBuf, String),
}

impl<'a> Layers<'a> {
    /// Built-in `defaults` (TOML) and nothing over them yet.
    pub fn new(defaults: &'a str) -> Self {
        Self {
            defaults,
            env: Vec::new(),
            file: None,
            flags: Vec::new(),
            compat: &[],
        }
    }

    /// Keys of other programs' configs (SPEAR's) that the config file may hold: read as the
    /// host's own keys or accepted without effect, each named in [`Loaded::notes`].
    pub fn compat(mut self, rules: &'a [Compat]) -> Self {
        self.compat = rules;
        self
    }

    /// The environment: each `(variable, key)` of `vars` whose variable `lookup` finds sets that
    /// key, above the defaults and below the file.
    pub fn env(mut self, vars: &[(&str, &str)], lookup: impl Fn(&str) -> Option<String>) -> Self {
        for (var, key) in vars {
            if let Some(value) = lookup(var) {
                self.env.push(((*var).to_owned(), (*key).to_owned(), value));
            }
        }
        self
    }

    /// The config file: `explicit` when given (it must exist), else `home` when it is a file.
    pub fn file(mut self, explicit: Option<PathBuf>, home: Option<PathBuf>) -> Self {
        self.file = explicit
            .or(home.filter(|h| h.is_file()))
            .map(FileSource::Path);
        self
    }

    /// A config file's `text`, named `name` in messages (a file already read, or a test's).
    pub fn file_text(mut self, name: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        self.file = Some(FileSource::Text(name.into(), text.into()));
        self
    }

    /// A command-line flag (`--grpc-addr`) that, when given, sets `key` above everything else.
    pub fn flag(mut self, flag: &str, key: &str, value: Option<String>) -> Self {
        if let Some(value) = value {
            self.flags.push((flag.to_owned(), key.to_owned(), value));
        }
        self
    }

    /// Layer the sources and deserialize `T` from them. Unknown keys do not stop the load: they
    /// come back in [`Loaded::problems`], so that the host's own checks add theirs and every
    /// problem is reported at once. A file that cannot be read or parsed, or a value of the wrong
    /// type, stops it (with the unknown keys found before it).
    pub fn load<T: DeserializeOwned>(self) -> Result<Loaded<T>, ConfigError> {
        let (file, text) = match self.file {
            None => (None, None),
            Some(FileSource::Text(name, text)) => (Some(name), Some(text)),
            Some(FileSource::Path(path)) => match std::fs::read_to_string(&path) {
                Ok(text) => (Some(path), Some(text)),
                Err(e) => {
                    return Err(Problem::Unreadable {
                        path,
                        message: e.to_string(),
                    }
                    .into());
                }
            },
        };
        let table =
            match (&file, &text) {
                (Some(path), Some(text)) => Some(toml::from_str::<toml::Table>(text).map_err(
                    |e| Problem::Syntax {
                        path: path.clone(),
                        message: e.to_string().trim().to_owned(),
                    },
                )?),
                _ => None,
            };
        let mut notes = Vec::new();
        let (table, text) = match (table, text) {
            (Some(mut table), Some(text)) if !self.compat.is_empty() => {
                let applied = crate::compat::apply(&mut table, self.compat);
                if applied.is_empty() {
                    (Some(table), Some(text))
                } else {
                    let name = file.as_ref().map(|p| p.display().to_string());
                    notes.extend(
                        applied
                            .into_iter()
                            .map(|n| format!("{}: {n}", name.as_deref().unwrap_or("config"))),
                    );
                    let text = toml::to_string(&table).map_err(|e| Problem::Other {
                        origin: Origin::Default,
                        message: format!("cannot rewrite the config file's compatible keys: {e}"),
                    })?;
                    (Some(table), Some(text))
                }
            }
            other => other,
        };
        let origins = Origins {
            flags: self
                .flags
                .iter()
                .map(|(flag, key, _)| (key.clone(), flag.clone()))
                .collect(),
            file: file.clone().zip(table),
            env: self
                .env
                .iter()
                .map(|(var, key, _)| (key.clone(), var.clone()))
                .collect(),
        };
        let fail = |key: &str, message: String| -> ConfigError {
            Problem::Invalid {
                key: key.to_owned(),
                origin: origins.of(key),
                message,
            }
            .into()
        };
        // The layering itself failing (a key both a table and a value in two sources).
        let layering = |e: config::ConfigError| -> ConfigError {
            Problem::Other {
                origin: Origin::Default,
                message: e.to_string(),
            }
            .into()
        };
        // The environment is a source of its own between the defaults and the file.
        let mut env = Config::builder();
        for (_, key, value) in &self.env {
            env = env
                .set_override(key.as_str(), value.as_str())
                .map_err(|e| fail(key, e.to_string()))?;
        }
        let env = env.build().map_err(layering)?;
        let mut builder: ConfigBuilder<DefaultState> = Config::builder()
            .add_source(File::from_str(self.defaults, FileFormat::Toml))
            .add_source(env);
        if let Some(text) = &text {
            builder = builder.add_source(File::from_str(text, FileFormat::Toml));
        }
        for (_, key, value) in &self.flags {
            builder = builder
                .set_override(key.as_str(), value.as_str())
                .map_err(|e| fail(key, e.to_string()))?;
        }
        let built = builder.build().map_err(layering)?;

        let mut ignored: Vec<String> = Vec::new();
        let mut note = |path: serde_ignored::Path<'_>| ignored.push(dotted(&path.to_string()));
        let value = serde_path_to_error::deserialize::<_, T>(serde_ignored::Deserializer::new(
            built, &mut note,
        ));
        // The layered map's order is not the file's: sorted, the report is the same every time.
        ignored.sort();
        ignored.dedup();
        let unknown = ignored
            .into_iter()
            .map(|key| Problem::Unknown {
                origin: origins.of(&key),
                key,
            })
            .collect::<Vec<_>>();
        match value {
            Ok(value) => Ok(Loaded {
                value,
                file,
                origins,
                unknown,
                notes,
            }),
            Err(e) => {
                let key = dotted(&e.path().to_string());
                // The config crate ends its messages with the key, which the problem names.
                let message = e.into_inner().to_string();
                let message = match message.rfind(" for key `") {
                    Some(at) => message[..at].to_owned(),
                    None => message,
                };
                let mut problems = unknown;
                problems.push(if key.is_empty() {
                    Problem::Other {
                        origin: Origin::Default,
                        message,
                    }
                } else {
                    Problem::Invalid {
                        origin: origins.of(&key),
                        message,
                        key,
                    }
                });
                Err(ConfigError { problems })
            }
        }
    }
}

/// Which source set each key.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    /// key → flag.
    flags: HashMap<String, String>,
    /// The file and its content.
    file: Option<(PathBuf, toml::Table)>,
    /// key → variable.
    env: HashMap<String, String>,
}

impl Origins {
    /// The highest source that sets `key` (or a key under it).
    pub fn of(&self, key: &str) -> Origin {
        if let Some(flag) = self.flags.get(key) {
            return Origin::Flag(flag.clone());
        }
        if let Some((path, table)) = &self.file
            && lookup(table, key)
        {
            return Origin::File(path.clone());
        }
        if let Some(var) = self.env.get(key) {
            return Origin::Env(var.clone());
        }
        Origin::Default
    }

    /// The config file, if one was used.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_ref().map(|(p, _)| p.as_path())
    }
}

/// A serde path as a config key: serde_ignored's `?` (inside an `Option`) dropped, and the root
/// (`.`) empty.
fn dotted(path: &str) -> String {
    path.split('.')
        .filter(|part| !part.is_empty() && *part != "?")
        .collect::<Vec<_>>()
        .join(".")
}

/// Whether the dotted `key` is in `table`: table keys by name, list items by index (`a.0` and
/// `a[0]` both look up the first item of `a`). A key whose own name holds a dot is not found (its
/// problem is then reported without a source).
fn lookup(table: &toml::Table, key: &str) -> bool {
    let mut at: Option<&toml::Value> = None;
    for part in key.split(['.', '[', ']']).filter(|p| !p.is_empty()) {
        let next = match at {
            None => table.get(part),
            Some(toml::Value::Table(t)) => t.get(part),
            Some(toml::Value::Array(items)) => {
                part.parse::<usize>().ok().and_then(|i| items.get(i))
            }
            Some(_) => None,
        };
        match next {
            Some(v) => at = Some(v),
            None => return false,
        }
    }
    at.is_some()
}

/// A loaded configuration: the value, the file it came from, and what the load found wrong so
/// far (unknown keys).
#[derive(Debug)]
pub struct Loaded<T> {
    /// The configuration.
    pub value: T,
    /// The config file, if one was used.
    pub file: Option<PathBuf>,
    origins: Origins,
    unknown: Vec<Problem>,
    /// Warnings about keys of other programs' configs (see [`Layers::compat`]), for the host to
    /// log once its logging is up.
    pub notes: Vec<String>,
}

impl<T> Loaded<T> {
    /// Where each key came from.
    pub fn origins(&self) -> &Origins {
        &self.origins
    }

    /// The problems found so far, for the host's checks to add to.
    pub fn problems(&self) -> Problems {
        let mut problems = Problems::new(self.origins.clone());
        for p in &self.unknown {
            problems.push(p.clone());
        }
        problems
    }

    /// Resolve the relative `path` held at `key`: a path from the file or the defaults is
    /// relative to the config file's directory (when a file is used); one from a flag or the
    /// environment, to the working directory, as a shell would take it.
    pub fn resolve_path(&self, key: &str, path: &mut PathBuf) {
        if path.is_relative()
            && matches!(self.origins.of(key), Origin::File(_) | Origin::Default)
            && let Some(base) = self.origins.file().and_then(Path::parent)
        {
            *path = base.join(&*path);
        }
    }
}

#[cfg(test)]
mod tests;
