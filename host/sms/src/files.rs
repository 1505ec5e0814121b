//! The file store: bytes content-addressed on disk (`<dir>/<sha256>`), metadata in storage,
//! addressed as `sms+file://<id>`.

use std::path::PathBuf;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::{Result, SmsError};
use crate::model::{FileMeta, now_ms};
use crate::service::Sms;

fn is_file_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
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
        if name.len() > 255 || name.contains('/') {
            return Err(SmsError::invalid("name", "at most 255 characters, no '/'"));
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
        let path = self.file_path(&id);
        let dir = self.files_dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            // Write aside, sync, then rename: a crash never leaves a partial file under the id.
            let tmp = dir.join(format!(
                ".{}.{}.tmp",
                path.file_name().unwrap_or_default().to_string_lossy(),
                std::process::id()
            ));
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&content)?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(|e| SmsError::Storage(e.to_string()))?
        .map_err(|e| SmsError::Storage(format!("cannot store file: {e}")))?;
        let _guard = self.writes.lock().await;
        self.db.put(format!("file/{id}"), &meta).await?;
        self.events
            .append(
                "file.uploaded",
                &id,
                json!({"name": meta.name, "size": meta.size}),
            )
            .await?;
        Ok(meta)
    }

    /// A file's metadata.
    pub async fn file_meta(&self, id: &str) -> Result<FileMeta> {
        if !is_file_id(id) {
            return Err(SmsError::invalid(
                "file_id",
                "a file id is 64 lowercase hex digits (its sha256)",
            ));
        }
        self.db
            .get::<FileMeta>(format!("file/{id}"))
            .await?
            .ok_or_else(|| SmsError::not_found("file", id))
    }

    /// A file's metadata and bytes.
    pub async fn download_file(&self, id: &str) -> Result<(FileMeta, Vec<u8>)> {
        let meta = self.file_meta(id).await?;
        let bytes = tokio::fs::read(self.file_path(id))
            .await
            .map_err(|e| SmsError::Storage(format!("file {id}: {e}")))?;
        Ok((meta, bytes))
    }

    /// Every file's metadata.
    pub async fn files(&self) -> Result<Vec<FileMeta>> {
        self.db.load_all("file/").await
    }

    /// Remove a file.
    pub async fn delete_file(&self, id: &str) -> Result<()> {
        self.file_meta(id).await?;
        let _guard = self.writes.lock().await;
        self.db.delete(format!("file/{id}")).await?;
        let _ = tokio::fs::remove_file(self.file_path(id)).await;
        self.events.append("file.deleted", id, json!({})).await?;
        Ok(())
    }
}
