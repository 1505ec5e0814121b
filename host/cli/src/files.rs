//! `spear file upload|download|list`: SMS's content-addressed file store.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::Output;
use crate::client::{Client, Subject};
use crate::error::{CliError, Result};
use crate::output::{self, cell, time_of};

/// `spear file …`.
#[derive(Debug, clap::Subcommand)]
pub enum FileCommand {
    /// Upload a local file; prints its id and its `sms+file://` uri.
    Upload {
        /// The file to upload.
        path: PathBuf,
        /// The name SMS records (default: the file's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Download a file's bytes, to standard output or to `-o PATH`.
    Download {
        /// The file's id (its sha256; see `spear file list`).
        file_id: String,
        /// Write here instead of standard output.
        #[arg(short = 'o', long = "out-file", value_name = "PATH")]
        out_file: Option<PathBuf>,
    },
    /// List stored files.
    List,
}

/// Upload `path` under `name` (default: its file name); returns SMS's metadata.
pub async fn upload(client: &Client, path: &Path, name: Option<&str>) -> Result<Value> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| CliError::io(path.display(), e))?;
    let default = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "upload".into());
    let name = name.map(str::to_owned).unwrap_or(default);
    client
        .post_bytes(&format!("/api/v1/files?name={}", encode(&name)), bytes)
        .await
}

/// Percent-encode a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Run a file command.
pub async fn run(cmd: FileCommand, client: &Client, out: Output) -> Result<i32> {
    match cmd {
        FileCommand::Upload { path, name } => {
            let meta = upload(client, &path, name.as_deref()).await?;
            match out {
                Output::Json => output::json(&meta),
                Output::Text => output::out(&output::fields(&[
                    ("file_id", cell(&meta["file_id"])),
                    ("uri", cell(&meta["uri"])),
                    ("name", cell(&meta["name"])),
                    ("size", format!("{} bytes", cell(&meta["size"]))),
                ])),
            }
        }
        FileCommand::Download { file_id, out_file } => {
            let bytes = client
                .get_bytes(
                    &format!("/api/v1/files/{file_id}"),
                    Some(Subject::file(&file_id)),
                )
                .await?;
            match out_file {
                None => output::out_bytes(&bytes),
                Some(path) => {
                    tokio::fs::write(&path, &bytes)
                        .await
                        .map_err(|e| CliError::io(path.display(), e))?;
                    let report = json!({"file_id": file_id, "path": path, "size": bytes.len()});
                    match out {
                        Output::Json => output::json(&report),
                        Output::Text => output::out(&format!(
                            "wrote {} bytes to {}\n",
                            bytes.len(),
                            path.display()
                        )),
                    }
                }
            }
        }
        FileCommand::List => {
            let v = client.get("/api/v1/files", None).await?;
            match out {
                Output::Json => output::json(&v),
                Output::Text => {
                    let rows: Vec<Vec<String>> = v["files"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|f| {
                            vec![
                                cell(&f["file_id"]),
                                cell(&f["name"]),
                                cell(&f["size"]),
                                time_of(&f["uploaded_at_ms"]),
                            ]
                        })
                        .collect();
                    output::out(&output::table(
                        &["FILE_ID", "NAME", "SIZE", "UPLOADED (UTC)"],
                        &rows,
                    ));
                }
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_percent_encoded() {
        assert_eq!(super::encode("a b&c.wasm"), "a%20b%26c.wasm");
    }
}
