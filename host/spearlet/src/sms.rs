//! The link to SMS: a gRPC channel per SMS address (tonic reconnects each by itself), typed
//! clients over the current one, and the connect-with-retry used at start and after a loss.
//!
//! With SMS replicas (several addresses in `spearlet.sms_grpc_addr`), one leads and the others
//! answer `UNAVAILABLE` naming it in their `spear-leader` metadata: the link then moves to that
//! address ([`SmsLink::follow`]); an address that does not answer makes it move to the next.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use spear_proto::v1;
use spear_proto::v1::execution_service_client::ExecutionServiceClient;
use spear_proto::v1::file_service_client::FileServiceClient;
use spear_proto::v1::node_service_client::NodeServiceClient;
use spear_proto::v1::task_service_client::TaskServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::SmsTls;

use crate::error::{Error, Result};

/// Largest message accepted from SMS (file downloads carry whole artifacts).
const MAX_MESSAGE: usize = 1 << 30;

/// Adds `authorization: Bearer <token>` to every call, when there is a token.
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

/// The channel to SMS with the token added.
pub type Link = InterceptedService<Channel, Bearer>;

/// A cloneable handle on SMS (its `Debug` shows the addresses, never the token).
#[derive(Clone)]
pub struct SmsLink {
    targets: Arc<Vec<Target>>,
    /// The target calls go to.
    current: Arc<AtomicUsize>,
    bearer: Bearer,
    token: Option<String>,
    tls: Option<SmsTls>,
}

/// One SMS address and its channel.
struct Target {
    addr: String,
    endpoint: Endpoint,
    channel: Channel,
}

/// Backoff between attempts: `first`, doubling, at most 30 s.
pub fn backoff(first: Duration, attempt: u32) -> Duration {
    first
        .saturating_mul(1u32 << attempt.min(16))
        .min(Duration::from_secs(30))
}

impl std::fmt::Debug for SmsLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsLink")
            .field("addr", &self.addr())
            .field("token", &self.token.as_ref().map(|_| "<secret>"))
            .finish_non_exhaustive()
    }
}

impl SmsLink {
    /// A lazily connected link to `endpoints` (`http://host:port`, or `https://host:port` with
    /// `tls`; several for SMS replicas) that sends `token` with every call.
    pub fn new(
        endpoints: &[String],
        connect_timeout: Duration,
        token: Option<String>,
        tls: Option<SmsTls>,
    ) -> Result<Self> {
        let first = endpoints.first().ok_or_else(|| Error::Sms {
            addr: String::new(),
            message: "no SMS address (spearlet.sms_grpc_addr)".into(),
        })?;
        let bearer = match &token {
            Some(t) => {
                let mut v: MetadataValue<Ascii> =
                    format!("Bearer {t}").parse().map_err(|_| Error::Sms {
                        addr: first.clone(),
                        message: "the SMS token holds characters a header cannot".into(),
                    })?;
                v.set_sensitive(true);
                Bearer(Some(v))
            }
            None => Bearer(None),
        };
        let targets = endpoints
            .iter()
            .map(|endpoint| target(endpoint, connect_timeout, tls.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            targets: Arc::new(targets),
            current: Arc::new(AtomicUsize::new(0)),
            bearer,
            token,
            tls,
        })
    }

    /// How many SMS addresses the link has.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether the link has no address (never: [`new`](Self::new) refuses that).
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    fn target(&self) -> &Target {
        &self.targets[self.current.load(Ordering::Relaxed) % self.targets.len()]
    }

    /// After a failed call to SMS: move to the leader `status` names (a standby SMS's
    /// `spear-leader`), else, when SMS was unreachable or unavailable, to the next address.
    /// Whether the link moved (never with one address).
    pub fn follow(&self, status: &tonic::Status) -> bool {
        let n = self.targets.len();
        if n < 2 || !transient(status) {
            return false;
        }
        let at = self.current.load(Ordering::Relaxed) % n;
        let hinted = status
            .metadata()
            .get("spear-leader")
            .and_then(|v| v.to_str().ok())
            .filter(|h| !h.is_empty())
            .and_then(|h| self.targets.iter().position(|t| strip_scheme(&t.addr) == h));
        let next = hinted.unwrap_or((at + 1) % n);
        if next == at {
            return false;
        }
        let moved = self
            .current
            .compare_exchange(at, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if moved {
            tracing::info!(
                from = %self.targets[at].addr,
                to = %self.targets[next].addr,
                leader = hinted.is_some(),
                "moving to another SMS"
            );
        }
        moved
    }

    /// The `Authorization` header value for SMS's HTTP API at `http_addr` (`host:port`), when
    /// there is a token and that address is on the host this link dials for gRPC: the token goes
    /// to SMS only, never to whatever else listens at a default `sms_http_addr`.
    pub fn authorization_for(&self, http_addr: &str) -> Option<String> {
        let token = self.token.as_ref()?;
        self.targets
            .iter()
            .any(|t| host_of(&t.addr) == host_of(http_addr))
            .then(|| format!("Bearer {token}"))
    }

    /// How SMS is dialed over TLS, if it is (its HTTP API is then `https://` with the same CA).
    pub fn tls(&self) -> Option<&SmsTls> {
        self.tls.as_ref()
    }

    /// The address calls go to now, for messages.
    pub fn addr(&self) -> String {
        self.target().addr.clone()
    }

    /// Try to connect (to each address in turn) until one works or `total` has passed, waiting
    /// `retry` (backing off) after each round. Used at start with `--sms-addr`.
    pub async fn wait_connected(&self, retry: Duration, total: Duration) -> Result<()> {
        let start = Instant::now();
        let mut attempt = 0;
        loop {
            let n = self.targets.len();
            let first = self.current.load(Ordering::Relaxed) % n;
            let mut failed = None;
            for k in 0..n {
                let at = (first + k) % n;
                match self.targets[at].endpoint.connect().await {
                    Ok(_) => {
                        self.current.store(at, Ordering::Relaxed);
                        return Ok(());
                    }
                    Err(e) => failed = Some(e),
                }
            }
            let Some(e) = failed else { return Ok(()) };
            match e {
                e if start.elapsed() >= total => {
                    let cause = chain(&e);
                    let hint = if self.tls.is_some() && !cause.contains("refused") {
                        "check spearlet.tls: SMS's certificate must chain to sms_ca_file and \
                         name the host dialed (or sms_server_name), and SMS may ask for \
                         client_cert_file"
                    } else {
                        "is SMS running there?"
                    };
                    return Err(self.error(format!(
                        "cannot connect within {} ms: {cause} ({hint})",
                        total.as_millis()
                    )));
                }
                e => {
                    tracing::debug!(sms = %self.addr(), error = %chain(&e), "SMS not reachable yet");
                    tokio::time::sleep(backoff(retry, attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// An error about this SMS.
    pub fn error(&self, message: impl Into<String>) -> Error {
        Error::Sms {
            addr: self
                .targets
                .iter()
                .map(|t| t.addr.as_str())
                .collect::<Vec<_>>()
                .join(","),
            message: message.into(),
        }
    }

    /// The node service.
    pub fn nodes(&self) -> NodeServiceClient<Link> {
        NodeServiceClient::with_interceptor(self.target().channel.clone(), self.bearer.clone())
    }

    /// The execution service.
    pub fn executions(&self) -> ExecutionServiceClient<Link> {
        ExecutionServiceClient::with_interceptor(self.target().channel.clone(), self.bearer.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// The task service.
    pub fn tasks(&self) -> TaskServiceClient<Link> {
        TaskServiceClient::with_interceptor(self.target().channel.clone(), self.bearer.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    /// The file service.
    pub fn files(&self) -> FileServiceClient<Link> {
        FileServiceClient::with_interceptor(self.target().channel.clone(), self.bearer.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }
}

/// A lazily connected channel to `endpoint`.
fn target(endpoint: &str, connect_timeout: Duration, tls: Option<&SmsTls>) -> Result<Target> {
    let e = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| Error::Sms {
            addr: endpoint.to_owned(),
            message: format!("not a valid address: {e}"),
        })?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let e = match tls {
        Some(t) => {
            let name = t
                .server_name
                .clone()
                .unwrap_or_else(|| host_of(endpoint).to_owned());
            let mut c = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&t.ca))
                .domain_name(name);
            if let Some((cert, key)) = &t.identity {
                c = c.identity(Identity::from_pem(cert, key));
            }
            e.tls_config(c).map_err(|e| Error::Sms {
                addr: endpoint.to_owned(),
                message: format!("TLS settings (spearlet.tls): {e}"),
            })?
        }
        None => e,
    };
    Ok(Target {
        addr: endpoint.to_owned(),
        channel: e.connect_lazy(),
        endpoint: e,
    })
}

/// `host:port` of `http://host:port` (or of `host:port`).
fn strip_scheme(addr: &str) -> &str {
    addr.split_once("://").map_or(addr, |(_, rest)| rest)
}

/// What to add to an error of SMS's that is about the token.
pub fn token_hint(status: &tonic::Status) -> &'static str {
    match status.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
            " (SMS checks tokens: set spearlet.sms_token_file or SPEARLET_SMS_TOKEN to a node \
             token, made with `spear token create --role node --name NAME`)"
        }
        _ => "",
    }
}

/// An error and its causes, `: `-separated (tonic's "transport error" alone says nothing).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cur = c.source();
    }
    text
}

/// The host of `http://host:port`, `host:port` or `[v6]:port`.
pub fn host_of(addr: &str) -> &str {
    let rest = addr.split_once("://").map_or(addr, |(_, r)| r);
    let rest = rest.split('/').next().unwrap_or(rest);
    match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => rest.rsplit_once(':').map_or(rest, |(h, _)| h),
    }
}

/// Whether a failed call may succeed later (SMS away, overloaded), as opposed to a definite "no".
pub fn transient(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::ResourceExhausted
            | tonic::Code::Internal
            | tonic::Code::Cancelled
            | tonic::Code::Aborted
    )
}

/// This node's registration request.
pub fn register_request(
    uuid: &str,
    ip: &str,
    port: u16,
    name: &str,
    labels: &std::collections::BTreeMap<String, String>,
    capacity: v1::Resources,
    executors: Vec<String>,
) -> v1::RegisterNodeRequest {
    v1::RegisterNodeRequest {
        uuid: uuid.to_owned(),
        ip_address: ip.to_owned(),
        port: i32::from(port),
        metadata: [
            ("name".to_owned(), name.to_owned()),
            ("agent".to_owned(), "spearlet".to_owned()),
            ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ]
        .into_iter()
        .collect(),
        labels: labels.clone().into_iter().collect(),
        capacity: Some(capacity),
        executors,
        slots: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_token_goes_to_the_sms_host_only_and_is_never_printed() {
        let link = SmsLink::new(
            &["http://10.0.0.5:50051".to_owned()],
            Duration::from_secs(1),
            Some("spear.a.b".into()),
            None,
        )
        .unwrap();
        assert_eq!(
            link.authorization_for("10.0.0.5:8080").as_deref(),
            Some("Bearer spear.a.b")
        );
        assert_eq!(link.authorization_for("127.0.0.1:8080"), None);
        assert!(!format!("{link:?}").contains("spear.a.b"));
        assert_eq!(host_of("[::1]:80"), "::1");
        assert_eq!(host_of("http://h:1/x"), "h");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let first = Duration::from_millis(100);
        assert_eq!(backoff(first, 0), first);
        assert_eq!(backoff(first, 3), Duration::from_millis(800));
        assert_eq!(backoff(first, 30), Duration::from_secs(30));
    }

    #[tokio::test]
    async fn connecting_to_nothing_fails_within_the_total_naming_the_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let link = SmsLink::new(
            &[format!("http://{addr}")],
            Duration::from_millis(200),
            None,
            None,
        )
        .unwrap();
        let err = link
            .wait_connected(Duration::from_millis(50), Duration::from_millis(300))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(&addr.to_string()), "{err}");
        assert!(err.contains("cannot connect"), "{err}");
    }
}
