//! Where an artifact comes from: a URI parsed into its source and, when the URI tells it, the
//! content's sha256.

use std::collections::HashSet;
use std::path::PathBuf;

/// Where an artifact comes from.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Source {
    Sms {
        addr: Option<String>,
        id: String,
    },
    File(PathBuf),
    Web(String),
    /// `s3://` or `minio://` (the scheme), a bucket and a key.
    Object {
        scheme: &'static str,
        bucket: String,
        key: String,
    },
}

/// Parse a URI into its source and, when the URI tells it, the content's sha256.
pub(super) fn parse(uri: &str) -> std::result::Result<(Option<String>, Source), String> {
    let is_sha = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(rest) = uri.strip_prefix("sms+file://") {
        let (addr, id) = match rest.rsplit_once('/') {
            Some((addr, id)) => (Some(addr.to_owned()), id),
            None => (None, rest),
        };
        if id.is_empty() {
            return Err("no file id after sms+file://".into());
        }
        let id = id.to_ascii_lowercase();
        let known = is_sha(&id).then(|| id.clone());
        return Ok((known, Source::Sms { addr, id }));
    }
    if let Some(path) = uri.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err("file:// URIs need an absolute path (file:///…)".into());
        }
        return Ok((None, Source::File(PathBuf::from(path))));
    }
    let (bare, known) = match uri.split_once("#sha256=") {
        Some((bare, sha)) if is_sha(sha) => (bare, Some(sha.to_ascii_lowercase())),
        Some(_) => return Err("#sha256= must be followed by 64 hex digits".into()),
        None => (uri, None),
    };
    for scheme in ["s3", "minio"] {
        if let Some(rest) = bare
            .strip_prefix(scheme)
            .and_then(|r| r.strip_prefix("://"))
        {
            let (bucket, key) = rest
                .split_once('/')
                .filter(|(b, k)| !b.is_empty() && !k.is_empty())
                .ok_or_else(|| format!("{scheme}:// URIs are {scheme}://<bucket>/<key>"))?;
            // The bucket may become part of a host name: only what S3 allows in one.
            let edge =
                |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            if !(3..=63).contains(&bucket.len())
                || !bucket
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
                || !edge(bucket.as_bytes().first())
                || !edge(bucket.as_bytes().last())
            {
                return Err(format!(
                    "`{bucket}` is not a bucket name (3 to 63 of a-z, 0-9, `.`, `-`)"
                ));
            }
            return Ok((
                known,
                Source::Object {
                    scheme,
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                },
            ));
        }
    }
    if uri.starts_with("https://") || uri.starts_with("http://") {
        let url = bare;
        if known.is_none() && uri.starts_with("http://") {
            return Err(
                "plain http:// artifacts need a #sha256=<hex> pin (or use https://)".into(),
            );
        }
        return Ok((known, Source::Web(url.to_owned())));
    }
    Err(
        "unsupported URI scheme (use sms+file://, file://, https://, http://, s3:// or minio://)"
            .into(),
    )
}

/// Whether two `host:port` addresses are the same: equal as written, or resolving to a common
/// socket address.
pub(super) async fn same_address(a: &str, b: &str) -> bool {
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    let resolve = |s: &str| {
        let s = s.to_owned();
        async move {
            match tokio::net::lookup_host(s).await {
                Ok(addrs) => addrs.collect::<HashSet<_>>(),
                Err(_) => HashSet::new(),
            }
        }
    };
    let (a, b) = tokio::join!(resolve(a), resolve(b));
    !a.is_disjoint(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme_and_refuses_the_rest() {
        let sha = "a".repeat(64);
        assert_eq!(
            parse(&format!("sms+file://{sha}")).unwrap(),
            (
                Some(sha.clone()),
                Source::Sms {
                    addr: None,
                    id: sha.clone()
                }
            )
        );
        assert_eq!(
            parse("sms+file://10.0.0.1:8080/abc").unwrap(),
            (
                None,
                Source::Sms {
                    addr: Some("10.0.0.1:8080".into()),
                    id: "abc".into()
                }
            )
        );
        assert_eq!(
            parse("file:///bin/true").unwrap().1,
            Source::File("/bin/true".into())
        );
        assert_eq!(
            parse(&format!("https://x/y.wasm#sha256={sha}")).unwrap(),
            (Some(sha), Source::Web("https://x/y.wasm".into()))
        );
        assert!(
            parse("http://x/y.wasm")
                .unwrap_err()
                .contains("need a #sha256=")
        );
        assert!(parse("file://relative").unwrap_err().contains("absolute"));
        assert!(parse("ftp://x").unwrap_err().contains("unsupported"));
        assert!(parse("https://x#sha256=zz").unwrap_err().contains("64 hex"));
        assert!(parse("sms+file://").unwrap_err().contains("no file id"));
        assert_eq!(
            parse(&format!("s3://art/tools/a.sh#sha256={}", "B".repeat(64))).unwrap(),
            (
                Some("b".repeat(64)),
                Source::Object {
                    scheme: "s3",
                    bucket: "art".into(),
                    key: "tools/a.sh".into()
                }
            )
        );
        assert_eq!(
            parse("minio://art/a").unwrap().1,
            Source::Object {
                scheme: "minio",
                bucket: "art".into(),
                key: "a".into()
            }
        );
        for bad in ["s3://art", "s3://art/", "minio:///key"] {
            assert!(parse(bad).unwrap_err().contains("<bucket>/<key>"), "{bad}");
        }
        for bad in ["s3://evil.com#/k", "s3://ab/k", "s3://Art/k", "s3://-art/k"] {
            assert!(parse(bad).unwrap_err().contains("bucket name"), "{bad}");
        }
    }

    #[tokio::test]
    async fn addresses_are_the_same_as_written_or_resolved() {
        assert!(same_address("127.0.0.1:8080", "127.0.0.1:8080").await);
        assert!(same_address("localhost:8080", "127.0.0.1:8080").await);
        assert!(!same_address("127.0.0.1:8081", "127.0.0.1:8080").await);
        assert!(!same_address("10.1.2.3:8080", "127.0.0.1:8080").await);
    }
}
