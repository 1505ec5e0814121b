//! Serving an axum router within [`HttpLimits`]: a connection cap, hyper's header-read timeout, an
//! idle timeout ([`crate::idle`]) and a deadline on each request body ([`crate::body`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Version, header};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::HttpLimits;
use crate::body::TimedBody;
use crate::burst::Burst;
use crate::idle::{Activity, IdleIo};
use crate::tls::{self, ClientCert, ServerTls};

static ACCEPT: Burst = Burst::new("accepting an HTTP connection", Duration::from_secs(10));
static FULL: Burst = Burst::new("taking an HTTP connection", Duration::from_secs(10));
static HANDSHAKES: Burst = Burst::new(
    "starting a TLS handshake on an HTTP listener",
    Duration::from_secs(10),
);
static HANDSHAKE: Burst = Burst::new(
    "completing a TLS handshake on an HTTP listener",
    Duration::from_secs(10),
);

/// Refused connections closed gracefully at once (past it, they are just dropped).
const LINGERING: usize = 64;

/// Serve `app` on `listener` (under TLS when `tls` is given) until `shutdown` resolves, then let
/// in-flight requests finish (up to `limits.drain`) and close every connection still open.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    tls: Option<Arc<ServerTls>>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let lingering = Arc::new(Semaphore::new(LINGERING));
    let graceful = GracefulShutdown::new();
    // Set when the drain time is over: connections still open then are closed.
    let (close_all, closing) = tokio::sync::watch::channel(false);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    let handshakes = Arc::new(Semaphore::new(crate::MAX_HANDSHAKES));
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            stream = crate::accept(&listener, &ACCEPT) => stream,
            () = &mut shutdown => break,
        };
        // Under TLS a connection holds a handshake slot during its handshake and takes its
        // connection slot after it (see the TLS branch below); in plain HTTP, at once.
        let slot = match &tls {
            None => match permits.clone().try_acquire_owned() {
                Ok(permit) => Slot::Plain(permit),
                Err(_) => {
                    refuse(stream, limits.max_connections, &lingering);
                    continue;
                }
            },
            Some(tls) => match handshakes.clone().try_acquire_owned() {
                Ok(shaking) => Slot::Tls {
                    shaking,
                    permits: permits.clone(),
                    acceptor: tls.acceptor(),
                },
                Err(_) => {
                    HANDSHAKES.failed(&format!(
                        "{} TLS handshakes are in progress",
                        crate::MAX_HANDSHAKES
                    ));
                    continue;
                }
            },
        };
        let activity = Activity::by_requests();
        let io = IdleIo::new(stream, activity.clone(), limits.idle_timeout);
        let mut service = Service {
            app: app.clone(),
            activity,
            body_timeout: limits.body_timeout,
            client_cert: None,
        };
        let (builder, watcher, closing) = (builder.clone(), graceful.watcher(), closing.clone());
        tokio::spawn(async move {
            let (shaking, permits, acceptor) = match slot {
                Slot::Plain(permit) => {
                    connection(&builder, watcher, io, service, closing).await;
                    drop(permit);
                    return;
                }
                Slot::Tls {
                    shaking,
                    permits,
                    acceptor,
                } => (shaking, permits, acceptor),
            };
            // The handshake runs here, not in the accept loop: a slow client delays only
            // itself, and holds its handshake slot at most the header-read timeout.
            let done = tls::handshake(acceptor, io, limits.header_read_timeout).await;
            drop(shaking);
            let io = match done {
                Ok(io) => io,
                Err(e) => {
                    HANDSHAKE.failed(&e);
                    return;
                }
            };
            service.client_cert = ClientCert::of(io.get_ref().1);
            let Ok(permit) = permits.try_acquire_owned() else {
                FULL.failed(&format!(
                    "{} connections are open (http.max_connections)",
                    limits.max_connections
                ));
                return;
            };
            connection(&builder, watcher, io, service, closing).await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "http: requests still in flight after {} ms; closing",
            limits.drain.as_millis()
        );
    }
    let _ = close_all.send(true);
}

/// How a connection holds its place: a connection slot (plain HTTP), or, under TLS, a handshake
/// slot and where to take its connection slot once the handshake is done.
enum Slot {
    Plain(tokio::sync::OwnedSemaphorePermit),
    Tls {
        shaking: tokio::sync::OwnedSemaphorePermit,
        permits: Arc<Semaphore>,
        acceptor: tokio_rustls::TlsAcceptor,
    },
}

/// Serve one connection until it ends, the drain ends it or the server closes it.
async fn connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    io: I,
    service: Service,
    mut closing: tokio::sync::watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = watcher.watch(
        builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned(),
    );
    tokio::select! {
        r = conn => if let Err(e) = r {
            tracing::debug!("http connection closed: {e}");
        },
        _ = closing.wait_for(|closed| *closed) => {}
    }
}

/// Answer a connection past the cap with a `503` and close it. The close lingers (reading and
/// dropping what the client sent, for at most a second) so that the client reads the answer
/// instead of a reset; at most [`LINGERING`] refused connections linger at once, the rest are
/// dropped at once.
fn refuse(stream: TcpStream, max: usize, lingering: &Arc<Semaphore>) {
    FULL.failed(&format!(
        "{max} connections are open (http.max_connections)"
    ));
    let body = format!(
        r#"{{"error":{{"code":"unavailable","message":"too many connections: the limit is {max}","field":null}}}}"#
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(answer.as_bytes());
    let Ok(slot) = lingering.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = stream;
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let mut left: usize = 64 * 1024;
            while left > 0 {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
        drop(slot);
    });
}

/// The router, with each request counted in flight and its body under a deadline; under TLS,
/// each request carries the certificate the client presented ([`ClientCert`], an extension).
#[derive(Clone)]
struct Service {
    app: Router,
    activity: Arc<Activity>,
    body_timeout: Duration,
    client_cert: Option<ClientCert>,
}

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let guard = self.activity.begin();
        let limit = self.body_timeout;
        let http1 = req.version() <= Version::HTTP_11;
        let (mut parts, body) = req.into_parts();
        if let Some(cert) = &self.client_cert {
            parts.extensions.insert(cert.clone());
        }
        let body = TimedBody::new(body, limit);
        let ended = body.ended();
        let req = Request::from_parts(parts, axum::body::Body::new(body));
        let answer = self.app.clone().oneshot(req);
        Box::pin(async move {
            // The request stays in flight until its answer's body is sent (or dropped).
            let mut r = answer.await?;
            // Answered before its body was read to the end (a 413 from the headers, a 408, a
            // handler that ignores the body): the connection cannot be reused, so say so. A
            // client told nothing would put it back in its pool and send its next request into
            // the close that follows.
            if http1 && !ended.load(Ordering::Acquire) {
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(r.map(|body| {
                axum::body::Body::new(Guarded {
                    body,
                    _guard: guard,
                })
            }))
        })
    }
}

/// A response body that keeps its request in flight until it is dropped.
struct Guarded {
    body: axum::body::Body,
    _guard: crate::idle::InFlight,
}

impl http_body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn shutdown_closes_a_connection_whose_request_outlives_the_drain() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/stuck", axum::routing::get(std::future::pending::<()>));
        let limits = HttpLimits {
            drain: Duration::from_millis(200),
            ..HttpLimits::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, limits, None, async {
            let _ = stopped.await;
        }));
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET /stuck HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returns after the drain")
            .unwrap();
        // The handler never answers; the connection is closed, not left to the client.
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("the connection is closed after the drain");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }

    /// Reads one answer's head (up to the blank line) from `s`.
    async fn head(s: &mut TcpStream) -> String {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
                .await
                .expect("an answer")
                .unwrap();
            assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&got));
            got.push(byte[0]);
        }
        String::from_utf8(got).unwrap().to_ascii_lowercase()
    }

    #[tokio::test]
    async fn an_answer_given_before_the_body_is_read_closes_the_connection_and_says_so() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route(
                "/refuse",
                axum::routing::post(|| async { (axum::http::StatusCode::PAYLOAD_TOO_LARGE, "no") }),
            )
            .route(
                "/read",
                axum::routing::post(|body: String| async move { body }),
            );
        tokio::spawn(serve(
            listener,
            app,
            HttpLimits::default(),
            None,
            std::future::pending(),
        ));

        // Refused from its headers with most of the body unsent: `connection: close`, so that
        // the client does not reuse a connection the server is about to close.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /refuse HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\nxxxx")
            .await
            .unwrap();
        let answer = head(&mut s).await;
        assert!(answer.starts_with("http/1.1 413"), "{answer}");
        assert!(answer.contains("connection: close"), "{answer}");

        // A body read to its end keeps the connection: a second request is answered on it.
        let mut s = TcpStream::connect(addr).await.unwrap();
        for _ in 0..2 {
            s.write_all(b"POST /read HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
                .await
                .unwrap();
            let answer = head(&mut s).await;
            assert!(answer.starts_with("http/1.1 200"), "{answer}");
            assert!(!answer.contains("connection: close"), "{answer}");
            let mut body = [0u8; 2];
            s.read_exact(&mut body).await.unwrap();
            assert_eq!(&body, b"hi");
        }

        // Through a pooling client: each refused upload is followed by a request that succeeds.
        let c = reqwest::Client::new();
        for _ in 0..20 {
            let r = c
                .post(format!("http://{addr}/refuse"))
                .body(vec![0u8; 1 << 20])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 413);
            let r = c
                .post(format!("http://{addr}/read"))
                .body("ok")
                .send()
                .await
                .expect("not sent into a closing connection");
            assert_eq!(r.text().await.unwrap(), "ok");
        }
    }

    #[tokio::test]
    async fn clients_stuck_in_their_tls_handshake_do_not_take_the_connection_slots() {
        let dir = tempfile::tempdir().unwrap();
        let (tls, cert_pem) = crate::tls::self_signed(dir.path(), crate::tls::ALPN_HTTP);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/ok", axum::routing::get(|| async { "ok" }));
        let limits = HttpLimits {
            max_connections: 2,
            ..HttpLimits::default()
        };
        tokio::spawn(serve(
            listener,
            app,
            limits,
            Some(tls),
            std::future::pending(),
        ));
        // More connections than slots, none of which ever starts its handshake.
        let mut stuck = Vec::new();
        for _ in 0..4 {
            stuck.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap()])
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let r = client
            .get(format!("https://{addr}/ok"))
            .send()
            .await
            .expect("served while others hang in their handshake");
        assert_eq!(r.text().await.unwrap(), "ok");
        drop(stuck);
    }
}
