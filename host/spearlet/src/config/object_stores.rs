//! `[spearlet.artifacts.s3]` and `[spearlet.artifacts.minio]`: the S3-compatible stores that
//! `s3://bucket/key` and `minio://bucket/key` artifacts are fetched from.
//!
//! Each names an endpoint (S3's default is AWS's for the region; MinIO has none), a region, the
//! URL style (path style by default for MinIO, virtual-hosted for S3) and credentials:
//! `access_key_id` and `secret_access_key_file` (a file holding the secret, read at start), or,
//! when neither is given, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
//! `anonymous = true` sends unsigned requests (public buckets). Without the `[s3]` section, s3://
//! uses AWS with the `AWS_*` variables; without `[minio]`, minio:// is refused (no endpoint).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use spear_config::Problems;

/// One S3-compatible store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ObjectStoreConfig {
    /// `http(s)://host:port` of the store (S3: default `https://s3.<region>.amazonaws.com`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The region requests are signed for (default `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// `true`: `endpoint/bucket/key`; `false`: `bucket.endpoint/key` (default: `true` for MinIO,
    /// `false` for S3).
    #[serde(default)]
    pub path_style: Option<bool>,
    /// The access key id (with `secret_access_key_file`).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// A file whose content (trimmed) is the secret access key.
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// Send unsigned requests (public buckets); no credentials then.
    #[serde(default)]
    pub anonymous: bool,
}

/// Credentials requests are signed with.
#[derive(Clone)]
pub struct Credentials {
    /// Access key id.
    pub key_id: String,
    /// Secret access key.
    pub secret: String,
    /// Session token of temporary credentials.
    pub token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret, not even in a debug print.
        f.debug_struct("Credentials")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A store ready to use: where, how, and as whom.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    /// `s3` or `minio`.
    pub scheme: &'static str,
    /// The endpoint (None: AWS's for the region).
    pub endpoint: Option<String>,
    /// The region.
    pub region: String,
    /// Path-style URLs.
    pub path_style: bool,
    /// Unsigned requests, as configured.
    pub anonymous: bool,
    /// The credentials found (None and not `anonymous`: a fetch says how to give some).
    pub credentials: Option<Credentials>,
}

impl ObjectStoreConfig {
    /// Check the section at `key` (`spearlet.artifacts.s3`), adding problems to `problems`.
    pub fn validate(&self, key: &str, problems: &mut Problems) {
        if let Some(e) = &self.endpoint {
            match url::Url::parse(e) {
                // No user:password@ (errors name URLs) and no query or fragment.
                Ok(u) if matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.username().is_empty()
                    && u.password().is_none()
                    && u.query().is_none()
                    && u.fragment().is_none() => {}
                _ => problems.invalid(
                    &format!("{key}.endpoint"),
                    format!("`{e}` is not an http:// or https:// URL with a host and no user, query or fragment"),
                ),
            }
        }
        if let Some(r) = &self.region
            && (r.is_empty()
                || r.len() > 64
                || !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            problems.invalid(
                &format!("{key}.region"),
                format!("`{r}` is not a region name"),
            );
        }
        if self.anonymous && (self.access_key_id.is_some() || self.secret_access_key_file.is_some())
        {
            problems.invalid(
                &format!("{key}.anonymous"),
                "anonymous requests take no access_key_id or secret_access_key_file",
            );
        }
        if self.access_key_id.is_some() != self.secret_access_key_file.is_some() {
            problems.invalid(
                &format!("{key}.access_key_id"),
                "give access_key_id and secret_access_key_file together",
            );
        }
    }

    /// The store this section describes for `scheme` (`s3`, `minio`), its secret read and the
    /// environment `env` consulted for credentials it does not name; the error names the key.
    pub fn resolve(
        &self,
        scheme: &'static str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ObjectStore, (String, String)> {
        let key = format!("spearlet.artifacts.{scheme}");
        let credentials = if self.anonymous {
            None
        } else if let (Some(id), Some(file)) = (&self.access_key_id, &self.secret_access_key_file) {
            let secret = std::fs::read_to_string(file)
                .map_err(|e| {
                    (
                        format!("{key}.secret_access_key_file"),
                        format!("cannot read {}: {e}", file.display()),
                    )
                })?
                .trim()
                .to_owned();
            if secret.is_empty() {
                return Err((
                    format!("{key}.secret_access_key_file"),
                    format!("{} is empty", file.display()),
                ));
            }
            Some(Credentials {
                key_id: id.clone(),
                secret,
                token: None,
            })
        } else {
            match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
                    Some(Credentials {
                        key_id: id,
                        secret,
                        token: env("AWS_SESSION_TOKEN").filter(|t| !t.is_empty()),
                    })
                }
                // Known at the first fetch: the store may never be used.
                _ => None,
            }
        };
        Ok(ObjectStore {
            scheme,
            endpoint: self.endpoint.clone(),
            region: self.region.clone().unwrap_or_else(|| "us-east-1".into()),
            path_style: self.path_style.unwrap_or(scheme == "minio"),
            anonymous: self.anonymous,
            credentials,
        })
    }
}
