//! Flags shared by `spear task register` and `spear run`: what to run (an executable, possibly a
//! local file uploaded first) and the resources it needs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::client::Client;
use crate::error::{CliError, Result};
use crate::files;

/// What to run: `--type` with `--name`, `--uri` or `--file`, `--env`, and arguments after `--`.
#[derive(Debug, Default, clap::Args)]
pub struct ExecutableArgs {
    /// Executable type: wasm, process, container, or the type an executor plugin serves, such as
    /// http (with --file: wasm unless given).
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// Where the artifact is: sms+file://ID, file://PATH, https://URL, or a container image.
    #[arg(long, conflicts_with = "file")]
    pub uri: Option<String>,
    /// Program (process), entry point (wasm) or image (container).
    #[arg(long)]
    pub name: Option<String>,
    /// A local file to upload to SMS's file store first; runs with its sms+file:// uri.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// An environment variable, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub env: Vec<(String, String)>,
    /// Arguments of the executable, after `--`.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

impl ExecutableArgs {
    /// Whether any executable flag was given.
    pub fn given(&self) -> bool {
        self.kind.is_some()
            || self.uri.is_some()
            || self.name.is_some()
            || self.file.is_some()
            || !self.env.is_empty()
            || !self.args.is_empty()
    }

    /// The `executable` object, uploading `--file` first.
    pub async fn build(&self, client: &Client) -> Result<Value> {
        let mut uri = self.uri.clone().unwrap_or_default();
        let mut kind = self.kind.clone();
        if let Some(path) = &self.file {
            let meta = files::upload(client, path, None).await?;
            uri = meta["uri"].as_str().unwrap_or_default().to_owned();
            kind.get_or_insert_with(|| "wasm".into());
        }
        let Some(kind) = kind else {
            return Err(CliError::Usage(
                "say what to run: --type wasm|process|container|<plugin type> with --name, --uri or --file \
                 (e.g. --type process --name /bin/echo -- hello)"
                    .into(),
            ));
        };
        Ok(json!({
            "type": kind,
            "uri": uri,
            "name": self.name.clone().unwrap_or_default(),
            "args": self.args,
            "env": map(&self.env),
        }))
    }
}

/// The resources one execution needs.
#[derive(Debug, Default, clap::Args)]
pub struct NeedsArgs {
    /// CPU needed, in thousandths of a core.
    #[arg(long)]
    pub cpu_millis: Option<u64>,
    /// Memory needed, in MiB.
    #[arg(long)]
    pub memory_mb: Option<u64>,
    /// Disk needed, in MiB.
    #[arg(long)]
    pub disk_mb: Option<u64>,
}

impl NeedsArgs {
    /// `{cpu_millis, memory_mb, disk_mb}` when any was given.
    pub fn to_json(&self) -> Option<Value> {
        if self.cpu_millis.is_none() && self.memory_mb.is_none() && self.disk_mb.is_none() {
            return None;
        }
        Some(json!({
            "cpu_millis": self.cpu_millis.unwrap_or(0),
            "memory_mb": self.memory_mb.unwrap_or(0),
            "disk_mb": self.disk_mb.unwrap_or(0),
        }))
    }
}

/// Parse `KEY=VALUE`.
pub fn parse_kv(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// Pairs as a JSON object.
pub fn map(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    pairs.iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_pairs_need_a_key_and_an_equals_sign() {
        assert_eq!(parse_kv("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_kv("a=").unwrap(), ("a".into(), String::new()));
        assert!(parse_kv("=b").is_err());
        assert!(parse_kv("ab").is_err());
    }
}
