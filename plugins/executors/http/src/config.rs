//! The executor's configuration (`[executors.config.http]`) and what it makes of an execution:
//! the request to send, and the result an answer maps to. Plain Rust, tested on the host.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use spear_plugin_api::PluginError;
use spear_plugin_api::executor::{ExecResult, ExecSpec, ExitStatus};

/// The most a request body may hold (an execution's spec or its stdin), in bytes.
pub const MAX_BODY: usize = 1024 * 1024;
/// Output kept when the execution asks for no cap (and the most kept however large a cap it
/// asks for), in bytes.
pub const DEFAULT_OUTPUT_CAP: u64 = 16 * 1024 * 1024;
/// The response header that sets the exit code.
pub const EXIT_CODE_HEADER: &str = "x-spear-exit-code";

/// How an execution is put in the request body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A JSON object: `execution_id`, `task`, `entry`, `args`, `env`, `stdin` (base64).
    #[default]
    Json,
    /// The execution's stdin as it is; its id and task in `x-spear-execution-id` and
    /// `x-spear-task`.
    Raw,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    endpoint: String,
    #[serde(default)]
    format: Format,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default = "default_connect_timeout_ms")]
    connect_timeout_ms: u64,
}

fn default_connect_timeout_ms() -> u64 {
    10_000
}

/// The parsed configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `http` or `https`.
    pub https: bool,
    /// `host[:port]`.
    pub authority: String,
    /// Path and query, `{entry}` standing for the execution's entry.
    pub path: String,
    /// The body's form.
    pub format: Format,
    /// Extra request headers (an `Authorization`, say).
    pub headers: Vec<(String, String)>,
    /// Connect timeout in milliseconds.
    pub connect_timeout_ms: u64,
}

/// The request for one execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Path and query.
    pub path: String,
    /// Headers, the configured ones first.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

#[derive(Serialize)]
struct JsonBody<'a> {
    execution_id: &'a str,
    task: &'a str,
    entry: &'a str,
    args: &'a [String],
    env: BTreeMap<&'a str, &'a str>,
    stdin: String,
}

fn refuse(why: impl std::fmt::Display) -> PluginError {
    PluginError(why.to_string())
}

impl Config {
    /// Parse the JSON configuration; every error names its key.
    pub fn parse(json: &str) -> Result<Self, PluginError> {
        let raw: Raw = serde_json::from_str(json).map_err(|e| refuse(format!("config: {e}")))?;
        let (https, rest) = if let Some(r) = raw.endpoint.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = raw.endpoint.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(refuse(format!(
                "endpoint: `{}` is not an http:// or https:// URL",
                raw.endpoint
            )));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(refuse(format!(
                "endpoint: `{}` needs a host (and no user info)",
                raw.endpoint
            )));
        }
        if path.contains('#') || path.chars().any(char::is_control) || path.contains(' ') {
            return Err(refuse(format!(
                "endpoint: `{}`: no fragment, spaces or control characters",
                raw.endpoint
            )));
        }
        if !(1..=600_000).contains(&raw.connect_timeout_ms) {
            return Err(refuse("connect_timeout_ms: must be 1 to 600000"));
        }
        for (name, value) in &raw.headers {
            let name_ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
            if !name_ok || value.chars().any(char::is_control) {
                return Err(refuse(format!(
                    "headers.{name}: a header name is letters, digits, - and _; its value one line"
                )));
            }
        }
        Ok(Self {
            https,
            authority: authority.to_ascii_lowercase(),
            path: path.to_owned(),
            format: raw.format,
            headers: raw.headers.into_iter().collect(),
            connect_timeout_ms: raw.connect_timeout_ms,
        })
    }

    /// The request that runs `spec`.
    pub fn request(&self, spec: &ExecSpec) -> Result<Request, PluginError> {
        // Path segments of letters, digits, `-._~`; none empty, `.` or `..` (the entry must not
        // climb out of the configured path).
        let entry_ok = spec.entry.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        });
        if self.path.contains("{entry}") && !entry_ok {
            return Err(refuse(format!(
                "the entry `{}` cannot go in a URL path (segments of letters, digits, - . _ ~, \
                 none empty, . or ..)",
                spec.entry.escape_debug()
            )));
        }
        let path = self.path.replace("{entry}", &spec.entry);
        let mut headers: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), v.clone().into_bytes()))
            .collect();
        let body = match self.format {
            Format::Json => {
                headers.push(("content-type".into(), b"application/json".to_vec()));
                serde_json::to_vec(&JsonBody {
                    execution_id: &spec.execution_id,
                    task: &spec.task,
                    entry: &spec.entry,
                    args: &spec.args,
                    env: spec
                        .env
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect(),
                    stdin: base64::engine::general_purpose::STANDARD.encode(&spec.stdin),
                })
                .map_err(refuse)?
            }
            Format::Raw => {
                headers.push(("content-type".into(), b"application/octet-stream".to_vec()));
                headers.push((
                    "x-spear-execution-id".into(),
                    spec.execution_id.clone().into_bytes(),
                ));
                headers.push(("x-spear-task".into(), spec.task.clone().into_bytes()));
                spec.stdin.clone()
            }
        };
        if body.len() > MAX_BODY {
            return Err(refuse(format!(
                "the request body would be {} bytes; the http executor sends at most {MAX_BODY}",
                body.len()
            )));
        }
        Ok(Request {
            path,
            headers,
            body,
        })
    }
}

/// The output cap an execution asked for (0: [`DEFAULT_OUTPUT_CAP`]).
pub fn output_cap(spec: &ExecSpec) -> usize {
    let cap = match spec.output_cap_bytes {
        0 => DEFAULT_OUTPUT_CAP,
        n => n.min(DEFAULT_OUTPUT_CAP),
    };
    usize::try_from(cap).unwrap_or(usize::MAX)
}

/// The result an answer maps to: a 2xx answer exits 0 with its body as stdout; any other exits 1
/// with `HTTP <status>: <body>` as stderr (cut to `cap` bytes with its prefix). An
/// `x-spear-exit-code` header sets the exit code.
pub fn result(
    status: u16,
    exit_header: Option<&[u8]>,
    body: Vec<u8>,
    truncated: bool,
    cap: usize,
    duration_ms: u64,
) -> ExecResult {
    let ok = (200..300).contains(&status);
    let code = exit_header
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<i32>().ok())
        .unwrap_or(if ok { 0 } else { 1 });
    let (stdout, stderr, stdout_truncated, stderr_truncated) = if ok {
        (body, Vec::new(), truncated, false)
    } else {
        let mut e = format!("HTTP {status}: ").into_bytes();
        e.extend_from_slice(&body);
        let cut = e.len() > cap;
        e.truncate(cap);
        (Vec::new(), e, false, truncated || cut)
    };
    ExecResult {
        status: ExitStatus::Exited(code),
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
        duration_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ExecSpec {
        ExecSpec {
            execution_id: "e1".into(),
            task: "t".into(),
            entry: "resize".into(),
            args: vec!["a".into()],
            env: vec![("K".into(), "V".into())],
            stdin: b"hi".to_vec(),
            ..ExecSpec::default()
        }
    }

    #[test]
    fn endpoints_parse_and_bad_ones_name_their_key() {
        let c = Config::parse(r#"{"endpoint": "http://127.0.0.1:8099/function/{entry}"}"#).unwrap();
        assert!(!c.https);
        assert_eq!(c.authority, "127.0.0.1:8099");
        assert_eq!(c.path, "/function/{entry}");
        let c = Config::parse(r#"{"endpoint": "https://gw.example.com"}"#).unwrap();
        assert!(c.https && c.path == "/");
        for (bad, key) in [
            (r#"{"endpoint": "ftp://x/"}"#, "endpoint"),
            (r#"{"endpoint": "http:///x"}"#, "endpoint"),
            (r#"{"endpoint": "http://u@h/"}"#, "endpoint"),
            (r#"{"endpoint": "http://h/#f"}"#, "endpoint"),
            (r#"{"endpoint": "http://h/", "colour": 1}"#, "colour"),
            (
                r#"{"endpoint": "http://h/", "connect_timeout_ms": 0}"#,
                "connect_timeout_ms",
            ),
            (
                r#"{"endpoint": "http://h/", "headers": {"a b": "x"}}"#,
                "headers.a b",
            ),
            (r#"{}"#, "endpoint"),
        ] {
            let e = Config::parse(bad).unwrap_err().0;
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn a_request_carries_the_execution() {
        let c = Config::parse(
            r#"{"endpoint": "http://h:1/fn/{entry}?x=1", "headers": {"Authorization": "Bearer t"}}"#,
        )
        .unwrap();
        let r = c.request(&spec()).unwrap();
        assert_eq!(r.path, "/fn/resize?x=1");
        assert_eq!(r.headers[0], ("Authorization".into(), b"Bearer t".to_vec()));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["execution_id"], "e1");
        assert_eq!(body["env"]["K"], "V");
        assert_eq!(body["stdin"], "aGk=");
        for entry in ["../admin", "a/../../b", "a//b", "./x", "", "x y", "a/.."] {
            let mut bad = spec();
            bad.entry = entry.into();
            assert!(c.request(&bad).is_err(), "{entry:?}");
        }
        let mut nested = spec();
        nested.entry = "img/v1.2/resize".into();
        assert_eq!(c.request(&nested).unwrap().path, "/fn/img/v1.2/resize?x=1");
        let raw = Config::parse(r#"{"endpoint": "http://h/", "format": "raw"}"#).unwrap();
        let r = raw.request(&spec()).unwrap();
        assert_eq!(r.body, b"hi");
        assert!(
            r.headers
                .contains(&("x-spear-execution-id".into(), b"e1".to_vec()))
        );
        let mut big = spec();
        big.stdin = vec![0; MAX_BODY + 1];
        assert!(raw.request(&big).unwrap_err().0.contains("at most"));
    }

    #[test]
    fn answers_map_to_results() {
        let ok = result(200, None, b"out".to_vec(), false, 100, 3);
        assert_eq!(ok.status, ExitStatus::Exited(0));
        assert_eq!(ok.stdout, b"out");
        let failed = result(503, None, b"busy".to_vec(), true, 100, 3);
        assert_eq!(failed.status, ExitStatus::Exited(1));
        assert_eq!(failed.stderr, b"HTTP 503: busy");
        assert!(failed.stderr_truncated && !failed.stdout_truncated);
        // The prefix counts against the cap; a body that fit is not marked cut.
        let fit = result(500, None, b"ab".to_vec(), false, 12, 0);
        assert_eq!(
            (fit.stderr.as_slice(), fit.stderr_truncated),
            (&b"HTTP 500: ab"[..], false)
        );
        let cut = result(500, None, b"abc".to_vec(), false, 12, 0);
        assert_eq!(
            (cut.stderr.as_slice(), cut.stderr_truncated),
            (&b"HTTP 500: ab"[..], true)
        );
        let coded = result(200, Some(b" 7 "), Vec::new(), false, 100, 0);
        assert_eq!(coded.status, ExitStatus::Exited(7));
    }
}
