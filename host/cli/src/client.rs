//! A thin client of SMS's REST API: JSON in and out, SMS's error bodies and transport failures
//! turned into [`CliError`]s that say what to do.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

use crate::error::{CliError, Result};

/// The deadline of one ordinary request (a plugin reload may take a while).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Time past what SMS may hold a request (an invocation's deadline) for its answer to arrive.
const HELD_MARGIN: Duration = Duration::from_secs(10);

/// The deadline of a request SMS may hold for `held` (an invocation waits for its node up to
/// its own deadline, at most 300 s): that and a margin, and never less than an ordinary one.
pub fn held_timeout(held: Duration) -> Duration {
    REQUEST_TIMEOUT.max(held.saturating_add(HELD_MARGIN))
}

/// An id given on the command line, so that a 404 can name it and the command that lists them.
#[derive(Debug, Clone)]
pub struct Subject {
    what: &'static str,
    id: String,
    list: &'static str,
}

impl Subject {
    /// An execution id.
    pub fn execution(id: &str) -> Self {
        Self {
            what: "execution",
            id: id.to_owned(),
            list: "spear status",
        }
    }

    /// A task id.
    pub fn task(id: &str) -> Self {
        Self {
            what: "task",
            id: id.to_owned(),
            list: "spear task list",
        }
    }

    /// A node uuid.
    pub fn node(id: &str) -> Self {
        Self {
            what: "node",
            id: id.to_owned(),
            list: "spear node list",
        }
    }

    /// A token id or name.
    pub fn token(id: &str) -> Self {
        Self {
            what: "token",
            id: id.to_owned(),
            list: "spear token list",
        }
    }

    /// A file id.
    pub fn file(id: &str) -> Self {
        Self {
            what: "file",
            id: id.to_owned(),
            list: "spear file list",
        }
    }
}

/// A connection to SMS: one address, or those of SMS replicas (comma-separated), of which the
/// client uses the one that answered last. A request that cannot connect goes to the next
/// address; a standby replica's redirect (`307`, `not_leader`) is followed to the leader with the
/// token (a replica is trusted as much as the address it was given for).
#[derive(Debug, Clone)]
pub struct Client {
    bases: Arc<Vec<String>>,
    current: Arc<AtomicUsize>,
    http: reqwest::Client,
}

/// Moves between SMS addresses (connection failures and redirects) one request may make.
const MAX_HOPS: usize = 8;

/// `host:port` → `http://host:port`; no trailing slash.
pub fn normalize(sms: &str) -> Result<String> {
    let sms = sms.trim().trim_end_matches('/');
    if sms.is_empty() {
        return Err(CliError::Usage(
            "--sms / SPEAR_SMS is empty; give SMS's HTTP address, e.g. http://127.0.0.1:8080"
                .into(),
        ));
    }
    Ok(if sms.contains("://") {
        sms.to_owned()
    } else {
        format!("http://{sms}")
    })
}

/// The certificates in the PEM file at `path` (`--ca`).
fn ca_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>> {
    use std::io::Read;
    let usage = |what: String| CliError::Usage(format!("--ca {}: {what}", path.display()));
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(1024 * 1024 + 1).read_to_end(&mut pem))
        .map_err(|e| usage(format!("cannot read: {e}")))?;
    if pem.len() > 1024 * 1024 {
        return Err(usage("larger than 1 MiB; not a PEM CA file".into()));
    }
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| usage(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(usage("holds no PEM certificate".into()));
    }
    Ok(certs)
}

impl Client {
    /// A client of the SMS at `sms` (`http://host:port` or `host:port`; several, comma-separated,
    /// for SMS replicas), sending `token` (when given) as `Authorization: Bearer` and, with `ca`,
    /// trusting only that CA's certificates.
    pub fn new(sms: &str, token: Option<&str>, ca: Option<&Path>) -> Result<Self> {
        let mut bases = sms
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(normalize)
            .collect::<Result<Vec<_>>>()?;
        if bases.is_empty() {
            // The message that says what to give.
            bases.push(normalize("")?);
        }
        for base in &bases {
            if !base.starts_with("http://") && !base.starts_with("https://") {
                return Err(CliError::Usage(format!(
                    "--sms {base}: use an http:// or https:// address (SMS's `http.addr`)"
                )));
            }
            if ca.is_some() && !base.starts_with("https://") {
                return Err(CliError::Usage(format!(
                    "--ca / SPEAR_CA: {base} is not an https:// address; give --sms https://host:port"
                )));
            }
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| {
                    CliError::Usage("--token / SPEAR_TOKEN holds characters a header cannot".into())
                })?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        // Redirects are followed here, not by reqwest (which would drop the token on the way to
        // another port): only a replica's redirect to its leader is.
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if let Some(path) = ca {
            builder = builder.tls_certs_only(ca_certificates(path)?);
        }
        let http = builder
            .build()
            .map_err(|e| CliError::Usage(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            bases: Arc::new(bases),
            current: Arc::new(AtomicUsize::new(0)),
            http,
        })
    }

    /// The base URL in use, e.g. `http://127.0.0.1:8080`.
    pub fn base(&self) -> &str {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    fn request(&self, method: Method, path: &str) -> impl Fn(&str) -> RequestBuilder {
        let (http, path) = (self.http.clone(), path.to_owned());
        move |base| {
            http.request(method.clone(), format!("{base}{path}"))
                .timeout(REQUEST_TIMEOUT)
        }
    }

    /// `GET path` → JSON.
    pub async fn get(&self, path: &str, subject: Option<Subject>) -> Result<Value> {
        let r = self.send(self.request(Method::GET, path), subject).await?;
        self.json(r).await
    }

    /// `POST path` with a JSON body → JSON.
    pub async fn post(&self, path: &str, body: &Value, subject: Option<Subject>) -> Result<Value> {
        let request = self.request(Method::POST, path);
        let r = self.send(move |b| request(b).json(body), subject).await?;
        self.json(r).await
    }

    /// [`post`](Self::post) for a request SMS may hold for up to `held` ([`held_timeout`]).
    pub async fn post_held(
        &self,
        path: &str,
        body: &Value,
        subject: Option<Subject>,
        held: Duration,
    ) -> Result<Value> {
        let request = self.request(Method::POST, path);
        let timeout = held_timeout(held);
        let r = self
            .send(move |b| request(b).json(body).timeout(timeout), subject)
            .await?;
        self.json(r).await
    }

    /// `POST path` with raw bytes → JSON.
    pub async fn post_bytes(&self, path: &str, bytes: Vec<u8>) -> Result<Value> {
        let request = self.request(Method::POST, path);
        let make = move |b: &str| {
            request(b)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(bytes.clone())
        };
        let r = self.send(make, None).await?;
        self.json(r).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str, subject: Option<Subject>) -> Result<()> {
        self.send(self.request(Method::DELETE, path), subject)
            .await
            .map(drop)
    }

    /// `DELETE path` → its JSON answer (`null` for 204).
    pub async fn delete_json(&self, path: &str, subject: Option<Subject>) -> Result<Value> {
        let r = self
            .send(self.request(Method::DELETE, path), subject)
            .await?;
        self.json(r).await
    }

    /// `GET path` → raw bytes.
    pub async fn get_bytes(&self, path: &str, subject: Option<Subject>) -> Result<Vec<u8>> {
        let r = self.send(self.request(Method::GET, path), subject).await?;
        r.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| self.transport(e))
    }

    /// `GET path` without a deadline, for a stream (Server-Sent Events).
    pub async fn stream(&self, path: &str, subject: Option<Subject>) -> Result<Response> {
        let (http, path) = (self.http.clone(), path.to_owned());
        let make = move |base: &str| {
            http.get(format!("{base}{path}"))
                .header(reqwest::header::ACCEPT, "text/event-stream")
        };
        self.send(make, subject).await
    }

    /// Send the request `make` builds for a base URL; a non-2xx answer becomes an error. A
    /// request that could not connect goes to the next address; a replica's redirect to its
    /// leader is followed (and the leader used from then on).
    async fn send(
        &self,
        make: impl Fn(&str) -> RequestBuilder,
        subject: Option<Subject>,
    ) -> Result<Response> {
        let n = self.bases.len();
        let mut at = self.current.load(Ordering::Relaxed) % n;
        let mut base = self.bases[at].clone();
        let mut hop = 0;
        loop {
            hop += 1;
            let r = match make(&base).send().await {
                Ok(r) => r,
                Err(e) if e.is_connect() && hop < n.min(MAX_HOPS) => {
                    at = (at + 1) % n;
                    base = self.bases[at].clone();
                    continue;
                }
                Err(e) => return Err(self.transport_at(&base, e)),
            };
            if r.status() == StatusCode::TEMPORARY_REDIRECT
                && hop <= MAX_HOPS
                && let Some(leader) = leader_of(&r)
            {
                base = leader;
                if let Some(i) = self.bases.iter().position(|b| *b == base) {
                    at = i;
                }
                continue;
            }
            if self.bases[at] == base {
                self.current.store(at, Ordering::Relaxed);
            }
            if r.status().is_success() {
                return Ok(r);
            }
            return Err(self.refusal(r, subject).await);
        }
    }

    async fn json(&self, r: Response) -> Result<Value> {
        if r.status() == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let url = r.url().to_string();
        let bytes = r.bytes().await.map_err(|e| self.transport(e))?;
        serde_json::from_slice(&bytes).map_err(|e| CliError::Protocol {
            url,
            reason: format!("not JSON ({e}): {}", snippet(&bytes)),
        })
    }

    /// Turn a non-2xx answer into an error, reading SMS's `{error: {code, message, field}}`.
    async fn refusal(&self, r: Response, subject: Option<Subject>) -> CliError {
        let status = r.status();
        let url = r.url().to_string();
        let bytes = r.bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let error = &body["error"];
        let (Some(code), Some(message)) = (error["code"].as_str(), error["message"].as_str())
        else {
            return CliError::Protocol {
                url,
                reason: format!("HTTP {status}: {}", snippet(&bytes)),
            };
        };
        // A missing route (an older SMS, or not SMS at all) is not a missing id.
        let route = message.starts_with("route ");
        if status == StatusCode::NOT_FOUND
            && !route
            && let Some(s) = subject
        {
            return CliError::NotFound {
                what: s.what,
                id: s.id,
                list: s.list,
            };
        }
        if route {
            return CliError::Protocol {
                url,
                reason: format!("HTTP {status}: {message}"),
            };
        }
        if code == "compacted"
            && let Some(resume_from) = error["resume_from"].as_u64()
        {
            return CliError::Compacted {
                message: message.to_owned(),
                resume_from,
            };
        }
        CliError::Api {
            status: status.as_u16(),
            code: code.to_owned(),
            message: message.to_owned(),
            field: error["field"].as_str().map(str::to_owned),
        }
    }

    /// A transport failure, said plainly (`connection refused`, not the whole error chain).
    pub fn transport(&self, e: reqwest::Error) -> CliError {
        self.transport_at(&self.bases.join(","), e)
    }

    /// A transport failure talking to `base`.
    fn transport_at(&self, base: &str, e: reqwest::Error) -> CliError {
        let reason = if e.is_timeout() {
            "no answer in time".to_owned()
        } else if let Some(io) = io_cause(&e) {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                _ => io.to_string(),
            }
        } else {
            innermost(&e)
        };
        CliError::Unreachable {
            url: base.to_owned(),
            reason,
        }
    }
}

/// The base URL of the leader a standby replica's `307` names (its `Location`'s origin).
fn leader_of(r: &Response) -> Option<String> {
    let location = r.headers().get(reqwest::header::LOCATION)?.to_str().ok()?;
    let url = reqwest::Url::parse(location).ok()?;
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    Some(format!("{}://{host}:{port}", url.scheme()))
}

/// The `std::io::Error` somewhere in an error's chain.
fn io_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cur = err.source();
    }
    None
}

/// The last message of an error's chain (the most specific).
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The start of a body, for messages.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None if text.is_empty() => "(empty body)".to_owned(),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_gets_a_scheme_and_trailing_slashes_go() {
        assert_eq!(
            normalize("127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            normalize("https://sms.example/").unwrap(),
            "https://sms.example"
        );
        assert!(normalize(" ").is_err());
    }

    #[test]
    fn a_request_held_past_the_ordinary_deadline_gets_its_own() {
        assert_eq!(held_timeout(Duration::from_secs(30)), REQUEST_TIMEOUT);
        assert_eq!(
            held_timeout(Duration::from_millis(300_000)),
            Duration::from_secs(310)
        );
        assert_eq!(held_timeout(Duration::MAX), Duration::MAX);
    }
}
