//! Images from artifact tarballs: a `docker save`/`podman save` archive (docker-archive) is loaded
//! into the engine through the Engine API (`POST /images/load`), once per file version.
//!
//! The image is then run by the id its manifest names (`sha256:<id>`, which no tag can move), and
//! tagged `localhost/spear-artifact:<id>` for people; never by the tags inside the tarball:
//! another tarball naming the same tag (`app:latest`) moves that tag, not what this artifact
//! runs. A tarball naming a tag of that repository itself is refused.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use bollard::Docker;
use bollard::query_parameters::{ImportImageOptionsBuilder, TagImageOptionsBuilder};
use futures_util::StreamExt;
use spear_plugin_api::PluginError;

use crate::engine::Engine;

/// A file version: path, length and modification time.
type FileKey = (PathBuf, u64, SystemTime);

/// The repository of the tags this executor gives loaded images.
const OWN_REPO: &str = "localhost/spear-artifact";

/// A loaded tarball's image: the reference to run it by, and the tags inside the tarball.
#[derive(Debug, Clone)]
struct Image {
    run: String,
    tags: Vec<String>,
}

/// The tag of the image with config id `id` (hex): the id itself, as far as a tag may hold.
fn own_tag(id: &str) -> String {
    id.chars().take(64).collect()
}

/// Whether two image references name the same tag (`busybox:1` = `docker.io/library/busybox:1`
/// and `localhost/x:1` = `x:1`, as engines default them).
fn same_tag(a: &str, b: &str) -> bool {
    let bare = |r: &str| {
        let r = r
            .trim_start_matches("docker.io/")
            .trim_start_matches("library/")
            .trim_start_matches("localhost/");
        if r.rsplit('/').next().is_some_and(|last| last.contains(':')) {
            r.to_string()
        } else {
            format!("{r}:latest")
        }
    };
    bare(a) == bare(b)
}

/// Whether reference `r` is in repository `repo` (`localhost/x:1` is in `localhost/x`, and so is
/// `x:1`, as engines default it).
fn same_repo(r: &str, repo: &str) -> bool {
    let name = |s: &str| {
        let s = s.split('@').next().unwrap_or(s);
        let s = match s.rsplit_once(':') {
            Some((n, tag)) if !tag.contains('/') => n,
            _ => s,
        };
        s.trim_start_matches("localhost/").to_string()
    };
    name(r) == name(repo)
}

/// Tarballs already loaded, and the image each yielded.
#[derive(Default)]
pub(crate) struct LoadedImages {
    loaded: Mutex<HashMap<FileKey, Image>>,
}

impl LoadedImages {
    /// Load the tarball at `path` unless this version of it was loaded already (or `force`), and
    /// return the image to run: `entry` when it names another image than the tarball's, else the
    /// tarball's image by its own tag (`localhost/spear-artifact:<id>`).
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
                let manifest = tarball_image(Path::new(path)).map_err(|e| {
                    PluginError::new(format!(
                        "the artifact {path} is not an image tarball (docker-archive, as \
                         `docker save`/`podman save` write): {e}"
                    ))
                })?;
                if let Some(tag) = manifest.tags.iter().find(|t| same_repo(t, OWN_REPO)) {
                    return Err(PluginError::new(format!(
                        "the image tarball {path} names `{tag}`: tags of {OWN_REPO} are this \
                         executor's own"
                    )));
                }
                load(engine, docker, path).await?;
                let id = manifest.id.ok_or_else(|| {
                    PluginError::new(format!(
                        "the image tarball {path} names no image config in its manifest.json"
                    ))
                })?;
                let tag = own_tag(&id);
                let options = TagImageOptionsBuilder::new()
                    .repo(OWN_REPO)
                    .tag(&tag)
                    .build();
                docker
                    .tag_image(&format!("sha256:{id}"), Some(options))
                    .await
                    .map_err(|e| engine.error(&format!("tag the image of {path}"), e))?;
                let image = Image {
                    run: format!("sha256:{id}"),
                    tags: manifest.tags,
                };
                self.lock().insert(key, image.clone());
                image
            }
        };
        Ok(
            if entry.is_empty() || image.tags.iter().any(|t| same_tag(t, entry)) {
                image.run
            } else {
                entry.to_string()
            },
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileKey, Image>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Stream the tarball to the engine, failing with what the engine says went wrong. (What it says
/// it loaded is not used: the image is run by the id its manifest names.)
async fn load(engine: &Engine, docker: &Docker, path: &str) -> Result<(), PluginError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| PluginError::new(format!("cannot open the image tarball {path}: {e}")))?;
    let body = bollard::body_try_stream(tokio_util::io::ReaderStream::with_capacity(
        file,
        256 * 1024,
    ));
    let options = ImportImageOptionsBuilder::new().quiet(true).build();
    let mut answers = docker.import_image(options, body, None);
    while let Some(answer) = answers.next().await {
        answer.map_err(|e| match e {
            bollard::errors::Error::DockerStreamError { error } => PluginError::new(format!(
                "the container engine could not load the image tarball {path}: {error}"
            )),
            other => engine.error(&format!("load image tarball {path}"), other),
        })?;
    }
    Ok(())
}

/// What a docker-archive `manifest.json` says of its (first) image.
#[derive(Debug, Default, PartialEq, Eq)]
struct Manifest {
    /// Its tags.
    tags: Vec<String>,
    /// Its config id (hex), which is the image id.
    id: Option<String>,
}

/// The `manifest.json` of a docker-archive tarball. Reads only the tar headers and the manifest,
/// seeking over everything else.
fn tarball_image(path: &Path) -> std::io::Result<Manifest> {
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

/// The image a docker-archive `manifest.json` describes; its id only when it is plain hex.
fn image_of_manifest(text: &[u8]) -> Manifest {
    let Ok(manifest) = serde_json::from_slice::<serde_json::Value>(text) else {
        return Manifest::default();
    };
    let Some(first) = manifest.get(0) else {
        return Manifest::default();
    };
    let tags = first
        .get("RepoTags")
        .and_then(|t| t.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let id = first
        .get("Config")
        .and_then(|c| c.as_str())
        .and_then(|c| c.rsplit('/').next())
        .map(|c| c.trim_end_matches(".json").to_string())
        .filter(|id| {
            !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_hexdigit())
        });
    Manifest { tags, id }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_names_the_image() {
        let m = br#"[{"Config":"abc.json","RepoTags":["localhost/x:1"],"Layers":[]}]"#;
        let got = image_of_manifest(m);
        assert_eq!(got.tags, ["localhost/x:1"]);
        assert_eq!(got.id.as_deref(), Some("abc"));
        let m = br#"[{"Config":"blobs/sha256/abc","RepoTags":null,"Layers":[]}]"#;
        assert_eq!(image_of_manifest(m).id.as_deref(), Some("abc"));
        let m = br#"[{"Config":"../../etc/x y","RepoTags":[]}]"#;
        assert_eq!(image_of_manifest(m).id, None, "only a hex id is used");
    }

    #[test]
    fn this_executors_repository_is_recognised() {
        assert!(same_repo("localhost/spear-artifact:abc", OWN_REPO));
        assert!(same_repo("spear-artifact:abc", OWN_REPO));
        assert!(!same_repo("localhost/other:abc", OWN_REPO));
    }

    #[test]
    fn tags_compare_as_engines_default_them() {
        assert!(same_tag("localhost/x:1", "x:1"));
        assert!(same_tag("docker.io/library/busybox", "busybox:latest"));
        assert!(!same_tag("x:1", "x:2"));
        assert!(!same_tag("a/x:1", "x:1"));
    }

    #[test]
    fn a_file_that_is_not_a_tarball_is_refused() {
        let dir = std::env::temp_dir().join(format!("spear-img-{}", std::process::id()));
        std::fs::write(&dir, vec![b'x'; 1024]).unwrap();
        assert!(tarball_image(&dir).is_err());
        std::fs::remove_file(&dir).unwrap();
    }
}
