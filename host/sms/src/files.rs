//! The file store: bytes content-addressed on disk (`<dir>/<sha256>`), metadata in storage,
//! addressed as `sms+file://<id>`.
//!
//! An upload writes its bytes to a temporary file of its own, then, under the lock of its content
//! id, renames it into place and stores the metadata; a delete takes the same lock to remove both.
//! So concurrent uploads of the same bytes never share a path, and an upload racing a delete of the
//! same content leaves metadata and bytes together or neither.

use std::io::Write;
use std::path::PathBuf;

use serde_json::json;
use sha2::{Digest, Sha256};
use spear_plugin_api::storage::BatchOp;

use crate::error::{Result, SmsError};
use crate::model::{FileMeta, now_ms};
use crate::service::Sms;

/// Longest file name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

fn is_file_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// File `id`'s metadata as `db` stores it.
pub async fn stored_meta(db: &crate::db::Db, id: &str) -> Result<FileMeta> {
    if !is_file_id(id) {
        return Err(SmsError::invalid(
            "file_id",
            "a file id is 64 lowercase hex digits (its sha256)",
        ));
    }
    db.get::<FileMeta>(format!("file/{id}"))
        .await?
        .ok_or_else(|| SmsError::not_found("file", id))
}

/// Check a file name given at upload: 1 to 255 bytes, no `/` or `\`, no control character, not
/// `.` or `..`.
pub fn check_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(SmsError::invalid("name", why.to_owned()));
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return bad("must be 1 to 255 bytes");
    }
    if name.contains(['/', '\\']) {
        return bad("must not contain '/' or '\\'");
    }
    if name.chars().any(char::is_control) {
        return bad("must not contain control characters");
    }
    if name == "." || name == ".." {
        return bad("must not be `.` or `..`");
    }
    Ok(())
}

/// The `Content-Disposition` of a download (RFC 6266): an ASCII fallback `filename` and the exact
/// name as `filename*` in UTF-8, percent-encoded. Always a valid header value, whatever the
/// stored name holds.
pub fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        // RFC 5987 attr-char.
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

impl Sms {
    fn file_path(&self, id: &str) -> PathBuf {
        self.files_dir.join(id)
    }

    /// Store bytes; the same bytes uploaded twice are one file.
    pub async fn upload_file(&self, name: &str, content: Vec<u8>) -> Result<FileMeta> {
        if content.len() as u64 > self.max_upload_bytes {
            return Err(SmsError::TooLarge {
                limit: self.max_upload_bytes,
            });
        }
        check_name(name)?;
        if content.is_empty() {
            return Err(SmsError::invalid(
                "body",
                "an upload holds at least one byte",
            ));
        }
        let id: String = Sha256::digest(&content)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let meta = FileMeta {
            file_id: id.clone(),
            name: name.into(),
            size: content.len() as u64,
            uri: format!("sms+file://{id}"),
            uploaded_at_ms: now_ms(),
        };
        // Write aside and sync, outside any lock: a crash never leaves a partial file under the id.
        let dir = self.files_dir.clone();
        let tmp = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            std::fs::create_dir_all(&dir)?;
            let mut tmp = tempfile::Builder::new()
                .prefix(".upload-")
                .suffix(".tmp")
                .tempfile_in(&dir)?;
            tmp.write_all(&content)?;
            tmp.as_file().sync_all()?;
            Ok(tmp)
        })
        .await
        .map_err(|e| SmsError::Storage(e.to_string()))?
        .map_err(|e| SmsError::Storage(format!("cannot store file: {e}")))?;
        let _file = self.file_locks.lock(&id).await;
        let (path, dir) = (self.file_path(&id), self.files_dir.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            tmp.persist(&path).map_err(|e| e.error)?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(|e| SmsError::Storage(e.to_string()))?
        .map_err(|e| SmsError::Storage(format!("cannot store file: {e}")))?;
        // The record and its event in one batch.
        self.events
            .append_with(
                vec![crate::db::put_op(format!("file/{id}"), &meta)?],
                vec![(
                    "file.uploaded",
                    id.clone(),
                    json!({"name": meta.name, "size": meta.size}),
                )],
            )
            .await?;
        Ok(meta)
    }

    /// A file's metadata.
    pub async fn file_meta(&self, id: &str) -> Result<FileMeta> {
        stored_meta(&self.db, id).await
    }

    /// A file's metadata and bytes. A file deleted while it is read is not found.
    pub async fn download_file(&self, id: &str) -> Result<(FileMeta, Vec<u8>)> {
        let meta = self.file_meta(id).await?;
        match tokio::fs::read(self.file_path(id)).await {
            Ok(bytes) => Ok((meta, bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(SmsError::not_found("file", id))
            }
            Err(e) => Err(SmsError::Storage(format!("file {id}: {e}"))),
        }
    }

    /// Every file's metadata.
    pub async fn files(&self) -> Result<Vec<FileMeta>> {
        self.db.load_all("file/").await
    }

    /// How many files are stored (their keys counted, their records unread).
    pub async fn file_count(&self) -> Result<usize> {
        const PAGE: u32 = 10_000;
        let (mut count, mut after) = (0, None);
        loop {
            let keys = self.db.keys("file/", after, PAGE).await?;
            count += keys.len();
            if keys.len() < PAGE as usize {
                return Ok(count);
            }
            after = keys.last().cloned();
        }
    }

    /// Remove a file: its metadata first, then its bytes, under its content lock.
    pub async fn delete_file(&self, id: &str) -> Result<()> {
        let _file = self.file_locks.lock(id).await;
        // Checked under the lock: a delete that raced this one may have won.
        self.file_meta(id).await?;
        self.events
            .append_with(
                vec![BatchOp::Delete {
                    key: format!("file/{id}").into_bytes(),
                }],
                vec![("file.deleted", id.to_owned(), json!({}))],
            )
            .await?;
        match tokio::fs::remove_file(self.file_path(id)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("file {id}: metadata deleted, bytes left behind: {e}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_any_stored_name_makes_a_valid_header() {
        assert!(check_name("a b.wasm").is_ok());
        assert!(check_name("résumé.txt").is_ok());
        for bad in ["", "a/b", "a\\b", "a\nb", "a\0b", "..", "\u{7f}"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"x".repeat(256)).is_err());
        for name in ["plain.wasm", "a\"b", "a\nb\r\0", "résumé ☃.txt"] {
            let v = content_disposition(name);
            assert!(axum::http::HeaderValue::from_str(&v).is_ok(), "{v}");
        }
        assert_eq!(
            content_disposition("résumé.txt"),
            "attachment; filename=\"r_sum_.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9.txt"
        );
    }
}
