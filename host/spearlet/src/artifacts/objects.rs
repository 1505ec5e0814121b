//! Fetching `s3://bucket/key` and `minio://bucket/key` artifacts through the S3 API
//! (`object_store`), from the stores `[spearlet.artifacts.s3]` and `[spearlet.artifacts.minio]`
//! configure. Requests are signed (SigV4) with the store's credentials, or unsigned for an
//! `anonymous` store. Errors name the URI, never a credential.

use std::time::Duration;

use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStoreExt, RetryConfig};

use crate::config::object_stores::ObjectStore;

/// Most clients kept (one per store and bucket, each with its connection pool).
const MAX_CLIENTS: usize = 64;

/// Clients by store scheme and bucket.
type Clients = HashMap<(&'static str, String), Arc<AmazonS3>>;

/// The configured stores, and a client per bucket used lately.
#[derive(Debug, Clone)]
pub struct ObjectStores {
    /// `s3://`.
    pub s3: ObjectStore,
    /// `minio://`, when configured.
    pub minio: Option<ObjectStore>,
    clients: Arc<Mutex<Clients>>,
}

impl ObjectStores {
    /// The stores `s3` and `minio`.
    pub fn new(s3: ObjectStore, minio: Option<ObjectStore>) -> Self {
        Self {
            s3,
            minio,
            clients: Arc::default(),
        }
    }

    /// The client of `bucket` in `store`, made on first use (the cache starts over when full).
    fn client(
        &self,
        store: &ObjectStore,
        bucket: &str,
        timeout: Duration,
    ) -> Result<Arc<AmazonS3>, String> {
        let key = (store.scheme, bucket.to_owned());
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let client = Arc::new(build(store, bucket, timeout)?);
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }
    /// The bytes of `key` in `bucket` of the `scheme` store, at most `max` of them, within
    /// `timeout` (a retry included).
    pub async fn download(
        &self,
        scheme: &str,
        bucket: &str,
        key: &str,
        max: u64,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let store = match scheme {
            "minio" => self.minio.as_ref().ok_or(
                "minio:// needs [spearlet.artifacts.minio] with its endpoint in the Spearlet's config",
            )?,
            _ => &self.s3,
        };
        let client = self.client(store, bucket, timeout)?;
        let path =
            ObjectPath::parse(key).map_err(|e| format!("`{key}` is not an object key: {e}"))?;
        let got = client.get(&path).await.map_err(|e| describe(&e))?;
        if got.meta.size > max {
            return Err(too_big(got.meta.size, max));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(got.meta.size).unwrap_or(0));
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("download failed: {}", describe(&e)))?;
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > max {
                return Err(too_big(bytes.len() as u64, max));
            }
        }
        Ok(bytes)
    }
}

fn too_big(size: u64, max: u64) -> String {
    format!("{size} bytes is over spearlet.storage.max_object_size ({max})")
}

/// A client for `bucket` of `store`.
fn build(store: &ObjectStore, bucket: &str, timeout: Duration) -> Result<AmazonS3, String> {
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(&store.region)
        .with_virtual_hosted_style_request(!store.path_style)
        .with_client_options(
            ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(10))
                .with_timeout(timeout)
                .with_allow_http(
                    store
                        .endpoint
                        .as_deref()
                        .is_some_and(|e| e.starts_with("http://")),
                ),
        )
        .with_retry(RetryConfig {
            max_retries: 2,
            retry_timeout: timeout,
            ..RetryConfig::default()
        });
    if let Some(e) = &store.endpoint {
        b = b.with_endpoint(endpoint_for(e, bucket, store.path_style)?);
    }
    match (&store.credentials, store.anonymous) {
        (_, true) => b = b.with_skip_signature(true),
        (Some(c), false) => {
            b = b
                .with_access_key_id(&c.key_id)
                .with_secret_access_key(&c.secret);
            if let Some(t) = &c.token {
                b = b.with_token(t);
            }
        }
        (None, false) => {
            return Err(format!(
                "no credentials for {}://: set access_key_id and secret_access_key_file in [spearlet.artifacts.{}], or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or anonymous = true",
                store.scheme, store.scheme
            ));
        }
    }
    b.build()
        .map_err(|e| format!("cannot reach the {} store: {}", store.scheme, describe(&e)))
}

/// The endpoint requests for `bucket` go to: `endpoint` itself in path style; else the bucket's
/// own host under it (`bucket.host`), which object_store expects to be given whole.
fn endpoint_for(endpoint: &str, bucket: &str, path_style: bool) -> Result<String, String> {
    if path_style {
        return Ok(endpoint.to_owned());
    }
    let mut url = url::Url::parse(endpoint).map_err(|e| format!("the endpoint {endpoint}: {e}"))?;
    let host = url
        .host_str()
        .ok_or_else(|| format!("the endpoint {endpoint} has no host"))?
        .to_owned();
    url.set_host(Some(&format!("{bucket}.{host}")))
        .map_err(|e| format!("`{bucket}` cannot be a host name under {host}: {e}"))?;
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Longest error text kept from the store's answer.
const MAX_ERROR: usize = 300;

/// What went wrong, in a line: object_store's text up to the store's answer body (which may
/// quote signed headers, a session token among them), at most [`MAX_ERROR`] bytes, and the S3
/// error code from that body.
fn describe(e: &object_store::Error) -> String {
    if let object_store::Error::NotFound { .. } = e {
        return "no such object".into();
    }
    let text = e.to_string().replace('\n', " ");
    let code = text
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code)
        .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric()));
    let mut head = text.split('<').next().unwrap_or_default().trim_end();
    if head.len() > MAX_ERROR {
        let mut cut = MAX_ERROR;
        while !head.is_char_boundary(cut) {
            cut -= 1;
        }
        head = &head[..cut];
    }
    let head = head.trim_end_matches(':');
    match code {
        Some(code) => format!("{head} ({code})"),
        None => head.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_virtual_hosted_endpoint_gets_the_bucket_in_its_host() {
        assert_eq!(
            endpoint_for("https://s3.eu-west-1.amazonaws.com", "art", false).unwrap(),
            "https://art.s3.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            endpoint_for("http://127.0.0.1:9000", "art", true).unwrap(),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            endpoint_for("http://minio.local:9000/", "art", false).unwrap(),
            "http://art.minio.local:9000"
        );
    }

    #[test]
    fn errors_keep_no_answer_body_and_name_its_code() {
        let e = object_store::Error::Generic {
            store: "S3",
            source: "Error performing GET http://h/art/k - Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><CanonicalRequest>x-amz-security-token:SECRET-TOKEN</CanonicalRequest></Error>".into(),
        };
        let text = describe(&e);
        assert!(text.contains("403 Forbidden"), "{text}");
        assert!(text.ends_with("(SignatureDoesNotMatch)"), "{text}");
        assert!(!text.contains("SECRET-TOKEN"), "{text}");
        let long = object_store::Error::Generic {
            store: "S3",
            source: "é".repeat(400).into(),
        };
        assert!(describe(&long).len() <= MAX_ERROR);
    }
}
