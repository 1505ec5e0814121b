//! What a client may send, checked at the edge before anything is stored: the documented range of
//! every number (docs/api.md, "Limits"), and the shape of every string (no NUL or control
//! characters where a name is expected, bounded lengths and counts), and artifact URIs parsed.
//!
//! Every error names the field at fault.

use std::collections::BTreeMap;

use crate::error::{Result, SmsError};
use crate::model::{Executable, Resources};

/// Longest per-attempt timeout: 7 days (0 means none).
pub const MAX_TIMEOUT_MS: u64 = 7 * 24 * 3600 * 1000;
/// Most CPU one execution may need: 1,024 cores.
pub const MAX_CPU_MILLIS: u64 = 1024 * 1000;
/// Most memory one execution may need: 16 TiB.
pub const MAX_MEMORY_MB: u64 = 16 * 1024 * 1024;
/// Most disk one execution may need: 1 PiB.
pub const MAX_DISK_MB: u64 = 1024 * 1024 * 1024;
/// Most executions one may depend on.
pub const MAX_DEPENDS_ON: usize = 1000;
/// Longest name, URI, label or other one-line text, in bytes.
pub const MAX_LINE: usize = 4096;
/// Longest argument or environment value, in bytes.
pub const MAX_VALUE: usize = 64 * 1024;
/// Most arguments, environment variables, labels or capabilities.
pub const MAX_ENTRIES: usize = 1024;

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SmsError {
    SmsError::invalid(field, reason)
}

/// One-line text: at most `max` bytes, no control characters.
pub fn check_line(field: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(invalid(
            field,
            format!("at most {max} bytes, not {}", value.len()),
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(invalid(
            field,
            format!(
                "must not contain control characters (found U+{:04X})",
                c as u32
            ),
        ));
    }
    Ok(())
}

/// Free text (newlines and tabs allowed): at most `max` bytes, no NUL.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(invalid(
            field,
            format!("at most {max} bytes, not {}", value.len()),
        ));
    }
    if value.contains('\0') {
        return Err(invalid(field, "must not contain NUL bytes"));
    }
    Ok(())
}

/// Labels: at most [`MAX_ENTRIES`]; keys 1 to 253 bytes, values at most 1,024; no control
/// characters.
pub fn check_labels(field: &str, labels: &BTreeMap<String, String>) -> Result<()> {
    if labels.len() > MAX_ENTRIES {
        return Err(invalid(field, format!("at most {MAX_ENTRIES} labels")));
    }
    for (k, v) in labels {
        if k.is_empty() || k.len() > 253 {
            return Err(invalid(field, "label keys must be 1 to 253 bytes"));
        }
        check_line(&format!("{field}.{k}"), k, 253)?;
        check_line(&format!("{field}.{k}"), v, 1024)?;
    }
    Ok(())
}

/// Resources within their documented ranges.
pub fn check_resources(field: &str, r: &Resources) -> Result<()> {
    let over = |name: &str, v: u64, max: u64, unit: &str| {
        if v > max {
            Err(invalid(
                format!("{field}.{name}"),
                format!("at most {max} {unit}, not {v}"),
            ))
        } else {
            Ok(())
        }
    };
    over(
        "cpu_millis",
        r.cpu_millis,
        MAX_CPU_MILLIS,
        "thousandths of a core",
    )?;
    over("memory_mb", r.memory_mb, MAX_MEMORY_MB, "MiB")?;
    over("disk_mb", r.disk_mb, MAX_DISK_MB, "MiB")
}

/// A per-attempt timeout: 0 (none) to [`MAX_TIMEOUT_MS`].
pub fn check_timeout(field: &str, ms: u64) -> Result<()> {
    if ms > MAX_TIMEOUT_MS {
        return Err(invalid(
            field,
            format!("at most {MAX_TIMEOUT_MS} ms (7 days; 0 for none), not {ms}"),
        ));
    }
    Ok(())
}

/// An artifact URI: `sms+file://<id>` or `sms+file://<host:port>/<id>`, `file:///<absolute path>` without `..`, or an
/// `http(s)://` URL with a host, or `s3://`/`minio://<bucket>/<key>`. A container's `uri` may instead be an
/// image reference.
pub fn check_uri(field: &str, uri: &str, kind: &str) -> Result<()> {
    check_line(field, uri, MAX_LINE)?;
    if let Some(rest) = uri.strip_prefix("sms+file://") {
        return check_sms_file(field, uri, rest);
    }
    if let Some(path) = uri.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(invalid(
                field,
                format!("`{uri}`: file:// takes an absolute path"),
            ));
        }
        if path.split('/').any(|c| c == "..") {
            return Err(invalid(
                field,
                format!("`{uri}`: the path must not contain `..`"),
            ));
        }
        return Ok(());
    }
    if uri.starts_with("https://") || uri.starts_with("http://") {
        let url = url::Url::parse(uri).map_err(|e| invalid(field, format!("`{uri}`: {e}")))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid(field, format!("`{uri}`: the URL has no host")));
        }
        return Ok(());
    }
    for scheme in ["s3://", "minio://"] {
        if let Some(rest) = uri.strip_prefix(scheme) {
            return check_object_uri(field, uri, rest);
        }
    }
    if kind == "container" {
        // An image reference: registry/name:tag@digest.
        let ok = uri
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b));
        if ok && !uri.is_empty() {
            return Ok(());
        }
        return Err(invalid(
            field,
            format!("`{uri}` is not an image reference or a sms+file://, file:// or https:// URI"),
        ));
    }
    Err(invalid(
        field,
        format!(
            "`{uri}`: use sms+file://<id>, file:///<path>, https://, s3://<bucket>/<key> or minio://<bucket>/<key>"
        ),
    ))
}

/// `s3://` and `minio://`: `<bucket>/<key>[#sha256=<hex>]`, a bucket name as S3 allows (3 to 63
/// lowercase letters, digits, `.` and `-`, starting and ending with a letter or digit) and a key
/// of 1 to 1,024 bytes.
fn check_object_uri(field: &str, uri: &str, rest: &str) -> Result<()> {
    let (path, pin) = match rest.split_once('#') {
        Some((path, pin)) => (path, Some(pin)),
        None => (rest, None),
    };
    if let Some(pin) = pin {
        let sha = pin.strip_prefix("sha256=").unwrap_or_default();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                field,
                format!("`{uri}`: the only fragment is #sha256=<64 hex digits>"),
            ));
        }
    }
    let Some((bucket, key)) = path.split_once('/').filter(|(_, k)| !k.is_empty()) else {
        return Err(invalid(
            field,
            format!("`{uri}`: write <scheme>://<bucket>/<key>"),
        ));
    };
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && edge(bucket.as_bytes().first())
        && edge(bucket.as_bytes().last());
    if !bucket_ok {
        return Err(invalid(
            field,
            format!("`{uri}`: `{bucket}` is not a bucket name (3 to 63 of a-z, 0-9, `.`, `-`)"),
        ));
    }
    if key.len() > 1024
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(invalid(
            field,
            format!("`{uri}`: the key must be 1 to 1,024 bytes without empty, `.` or `..` parts"),
        ));
    }
    Ok(())
}

/// A file id in an `sms+file://` URI: 1 to 128 visible ASCII characters other than `/ \ ? #`,
/// and not `.` or `..` (a sha256 here; SPEAR's README writes the placeholder `<file_id>`, which is
/// accepted as upstream accepts it, and fails at fetch).
fn is_file_ref(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"/\\?#".contains(&b))
}

/// `host:port`: a DNS name or IPv4 address (letters, digits, `.`, `-`) or a bracketed IPv6
/// address, and a port 0 to 65535.
fn is_host_port(authority: &str) -> bool {
    let Some((host, port)) = authority.rsplit_once(':') else {
        return false;
    };
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    host_ok
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok()
}

/// `sms+file://<id>` or `sms+file://<host:port>/<id>` (that SMS's REST gateway).
fn check_sms_file(field: &str, uri: &str, rest: &str) -> Result<()> {
    let bad = |why: &str| Err(invalid(field, format!("`{uri}`: {why}")));
    let id = match rest.rsplit_once('/') {
        None => rest,
        Some((authority, id)) => {
            if !is_host_port(authority) {
                return bad("sms+file://<host:port>/<id> takes a host and a port");
            }
            id
        }
    };
    if !is_file_ref(id) {
        return bad(
            "a file id is 1 to 128 visible ASCII characters other than / \\ ? #, not . or ..",
        );
    }
    Ok(())
}

/// Longest executable type name, in bytes.
pub const MAX_TYPE_NAME: usize = 32;

/// An executable type's name: 1 to [`MAX_TYPE_NAME`] bytes of lowercase ASCII letters, digits,
/// `-` and `_`, starting with a letter. Besides the built-in `wasm`, `process` and `container`,
/// an executor plugin serves the type its capabilities name, and nodes register the types they
/// run: SMS takes any well-formed name, and an execution of a type no node runs waits (or is
/// refused, with `unschedulable = "refuse"`) saying so.
pub fn check_executable_type(field: &str, name: &str) -> Result<()> {
    let well_formed = !name.is_empty()
        && name.len() <= MAX_TYPE_NAME
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if well_formed {
        return Ok(());
    }
    let shown: String = name.chars().take(MAX_TYPE_NAME + 1).collect();
    Err(invalid(
        field,
        format!(
            "`{}` is not an executable type: 1 to {MAX_TYPE_NAME} lowercase letters, digits, \
             `-` or `_`, starting with a letter (wasm, process, container, or an executor \
             plugin's type such as http)",
            shown.escape_debug()
        ),
    ))
}

/// Check an executable, naming fields under `prefix` (`executable`).
pub fn check_executable(prefix: &str, e: &Executable) -> Result<()> {
    check_executable_type(&format!("{prefix}.type"), &e.kind)?;
    if e.uri.is_empty() && e.name.is_empty() {
        return Err(invalid(
            format!("{prefix}.uri"),
            "give the artifact's uri (or, for a program or image, its name)",
        ));
    }
    if !e.uri.is_empty() {
        check_uri(&format!("{prefix}.uri"), &e.uri, &e.kind)?;
    }
    check_line(&format!("{prefix}.name"), &e.name, MAX_LINE)?;
    if e.args.len() > MAX_ENTRIES {
        return Err(invalid(
            format!("{prefix}.args"),
            format!("at most {MAX_ENTRIES} arguments"),
        ));
    }
    for (i, a) in e.args.iter().enumerate() {
        check_text(&format!("{prefix}.args[{i}]"), a, MAX_VALUE)?;
    }
    if e.env.len() > MAX_ENTRIES {
        return Err(invalid(
            format!("{prefix}.env"),
            format!("at most {MAX_ENTRIES} variables"),
        ));
    }
    for (k, v) in &e.env {
        let field = format!("{prefix}.env.{k}");
        if k.is_empty() || k.contains('=') {
            return Err(invalid(
                field,
                "a variable name is not empty and has no `=`",
            ));
        }
        check_line(&field, k, 256)?;
        check_text(&field, v, MAX_VALUE)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exe(kind: &str, uri: &str) -> Executable {
        Executable {
            kind: kind.into(),
            uri: uri.into(),
            ..Executable::default()
        }
    }

    #[test]
    fn uris_are_parsed() {
        let id = "ab".repeat(32);
        for ok in [
            format!("sms+file://{id}"),
            format!("sms+file://10.0.0.1:8080/{id}"),
            "sms+file://sms.local:8080/abc".into(),
            "sms+file://sms.local:80/abc".into(),
            "sms+file://[::1]:8080/abc".into(),
            "file:///opt/app.wasm".into(),
            "https://example.com/a.wasm".into(),
            "s3://my-bucket.v2/tools/a.wasm".into(),
            format!("minio://art/a.wasm#sha256={id}"),
        ] {
            assert!(
                check_executable("executable", &exe("wasm", &ok)).is_ok(),
                "{ok}"
            );
        }
        assert!(check_executable("e", &exe("container", "docker.io/library/busybox:1.36")).is_ok());
        for bad in [
            "sms+file://../../etc/passwd",
            "sms+file://a/b/c",
            "sms+file://host/abc",
            "sms+file://h:8080?x/abc",
            "sms+file://u@h:8080/abc",
            "sms+file://h:99999/abc",
            "sms+file://",
            "sms+file://a b",
            "sms+file://..",
            "sms+file://1.2.3.4:80/..",
            "file://relative",
            "file:///a/../etc/passwd",
            "https://",
            "https:// spaces",
            "ftp://x/y",
            "file:///a\nb",
            "s3://bucket",
            "s3://bucket/",
            "s3://Bucket/key",
            "s3://ab/key",
            "s3://-bucket/key",
            "minio://bucket/a//b",
            "minio://bucket/../b",
            "minio://bucket/k#md5=x",
        ] {
            let err = check_executable("executable", &exe("wasm", bad)).unwrap_err();
            assert_eq!(err.field(), Some("executable.uri"), "{bad}: {err}");
        }
        assert!(check_executable("e", &exe("container", "image name")).is_err());
    }

    #[test]
    fn executable_types_are_names_not_a_fixed_list() {
        for ok in [
            "wasm",
            "process",
            "container",
            "http",
            "my-faas_2",
            &"a".repeat(32),
        ] {
            assert!(check_executable_type("t", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Http",
            "2http",
            "-x",
            "ht tp",
            "http/1",
            "h\0",
            &"a".repeat(33),
        ] {
            let err = check_executable_type("executable.type", bad).unwrap_err();
            assert_eq!(err.field(), Some("executable.type"), "{bad:?}");
        }
        let mut e = exe("http", "");
        e.name = "thumbnail".into();
        assert!(check_executable("executable", &e).is_ok());
    }

    #[test]
    fn strings_and_ranges() {
        let mut e = exe("process", "");
        e.name = "/bin/echo".into();
        e.args = vec!["a\nb".into()];
        assert!(check_executable("executable", &e).is_ok());
        e.args = vec!["a\0b".into()];
        let err = check_executable("executable", &e).unwrap_err();
        assert_eq!(err.field(), Some("executable.args[0]"));
        e.args.clear();
        e.name = "/bin/ec\0ho".into();
        assert_eq!(
            check_executable("executable", &e).unwrap_err().field(),
            Some("executable.name")
        );
        e.name = "/bin/echo".into();
        e.env.insert("A=B".into(), "x".into());
        assert!(check_executable("executable", &e).is_err());

        assert!(check_timeout("timeout_ms", MAX_TIMEOUT_MS).is_ok());
        assert!(check_timeout("timeout_ms", u64::MAX).is_err());
        let huge = Resources {
            memory_mb: 1 << 63,
            ..Resources::default()
        };
        assert_eq!(
            check_resources("needs", &huge).unwrap_err().field(),
            Some("needs.memory_mb")
        );
        let mut labels = BTreeMap::new();
        labels.insert("zone".into(), "a\u{7}".into());
        assert!(check_labels("labels", &labels).is_err());
    }
}
