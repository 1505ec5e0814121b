//! Images from artifact tarballs: a `docker save`/`podman save` archive (docker-archive) is loaded
//! into the engine through the Engine API (`POST /images/load`), once per file version.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use bollard::Docker;
use bollard::query_parameters::ImportImageOptionsBuilder;
use futures_util::StreamExt;
use spear_plugin_api::PluginError;

use crate::engine::Engine;

/// A file version: path, length and modification time.
type FileKey = (PathBuf, u64, SystemTime);

/// Tarballs already loaded, and the image reference each yielded.
#[derive(Default)]
pub(crate) struct LoadedImages {
    loaded: Mutex<HashMap<FileKey, String>>,
}

impl LoadedImages {
    /// Load the tarball at `path` unless this version of it was loaded already (or `force`), and
    /// return the image to run: `entry` when given, else the tag the tarball holds (else its id).
    pub async fn ensure(
        &self,
        engine: &Engine,
        docker: &Docker,
        path: &str,
        entry: &str,
        force: bool,
    ) -> Result<String, PluginError> {
        let meta = std::fs::metadata(path).map_err(|e| {
            PluginError::new(format!(
                "cannot read the image tarball (artifact) {path}: {e}"
            ))
        })?;
        let key = (
            PathBuf::from(path),
            meta.len(),
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        );
        let known = self.lock().get(&key).cloned();
        let image = match known {
            Some(image) if !force => image,
            _ => {
                let from_manifest = tarball_image(Path::new(path)).map_err(|e| {
                    PluginError::new(format!(
                        "the artifact {path} is not an image tarball (docker-archive, as \
                         `docker save`/`podman save` write): {e}"
                    ))
                })?;
                let reported = load(engine, docker, path).await?;
                let image = from_manifest.or(reported).ok_or_else(|| {
                    PluginError::new(format!(
                        "loaded {path}, but it names no image: give the image as the entry"
                    ))
                })?;
                self.lock().insert(key, image.clone());
                image
            }
        };
        Ok(if entry.is_empty() {
            image
        } else {
            entry.to_string()
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileKey, String>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Stream the tarball to the engine; returns the image the engine says it loaded, if it says.
async fn load(engine: &Engine, docker: &Docker, path: &str) -> Result<Option<String>, PluginError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| PluginError::new(format!("cannot open the image tarball {path}: {e}")))?;
    let body = bollard::body_try_stream(tokio_util::io::ReaderStream::with_capacity(
        file,
        256 * 1024,
    ));
    let options = ImportImageOptionsBuilder::new().quiet(true).build();
    let mut answers = docker.import_image(options, body, None);
    let mut loaded = None;
    while let Some(answer) = answers.next().await {
        let info = answer.map_err(|e| match e {
            bollard::errors::Error::DockerStreamError { error } => PluginError::new(format!(
                "the container engine could not load the image tarball {path}: {error}"
            )),
            other => engine.error(&format!("load image tarball {path}"), other),
        })?;
        if let Some(line) = info.stream.as_deref()
            && let Some(name) = line
                .trim()
                .strip_prefix("Loaded image: ")
                .or_else(|| line.trim().strip_prefix("Loaded image(s): "))
                .or_else(|| line.trim().strip_prefix("Loaded image ID: "))
        {
            loaded = name.split(',').next().map(|s| s.trim().to_string());
        }
    }
    Ok(loaded)
}

/// The first tag (else the config id) named by `manifest.json` in a docker-archive tarball.
/// Reads only the tar headers and the manifest, seeking over everything else.
fn tarball_image(path: &Path) -> std::io::Result<Option<String>> {
    let mut file = File::open(path)?;
    let mut header = [0u8; 512];
    loop {
        if file.read(&mut header[..1])? == 0 {
            break;
        }
        file.read_exact(&mut header[1..])?;
        if header.iter().all(|b| *b == 0) {
            break;
        }
        let field = |r: std::ops::Range<usize>| {
            let f = &header[r];
            let end = f.iter().position(|b| *b == 0).unwrap_or(f.len());
            String::from_utf8_lossy(&f[..end]).into_owned()
        };
        let size = u64::from_str_radix(field(124..136).trim(), 8).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not a tar archive")
        })?;
        let name = field(0..100);
        let padded = size.div_ceil(512) * 512;
        if name.trim_start_matches("./") == "manifest.json" {
            let mut text = vec![0u8; size.min(16 * 1024 * 1024) as usize];
            file.read_exact(&mut text)?;
            return Ok(image_of_manifest(&text));
        }
        file.seek(SeekFrom::Current(padded as i64))?;
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "no manifest.json in it",
    ))
}

/// The image a docker-archive `manifest.json` names.
fn image_of_manifest(text: &[u8]) -> Option<String> {
    let manifest: serde_json::Value = serde_json::from_slice(text).ok()?;
    let first = manifest.get(0)?;
    if let Some(tag) = first
        .get("RepoTags")
        .and_then(|t| t.get(0))
        .and_then(|t| t.as_str())
    {
        return Some(tag.to_string());
    }
    let config = first.get("Config")?.as_str()?;
    let id = config.rsplit('/').next()?.trim_end_matches(".json");
    Some(format!("sha256:{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_names_the_image() {
        let m = br#"[{"Config":"abc.json","RepoTags":["localhost/x:1"],"Layers":[]}]"#;
        assert_eq!(image_of_manifest(m).as_deref(), Some("localhost/x:1"));
        let m = br#"[{"Config":"blobs/sha256/abc","RepoTags":null,"Layers":[]}]"#;
        assert_eq!(image_of_manifest(m).as_deref(), Some("sha256:abc"));
    }

    #[test]
    fn a_file_that_is_not_a_tarball_is_refused() {
        let dir = std::env::temp_dir().join(format!("spear-img-{}", std::process::id()));
        std::fs::write(&dir, vec![b'x'; 1024]).unwrap();
        assert!(tarball_image(&dir).is_err());
        std::fs::remove_file(&dir).unwrap();
    }
}
