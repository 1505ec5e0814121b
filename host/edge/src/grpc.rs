//! Connections for tonic's `serve_with_incoming*` within [`HttpLimits`], plain or under TLS: the
//! connection cap (connections past it are closed at once) and the idle timeout. Pair it with tonic's HTTP/2
//! keep-alive set below the idle timeout, so that a live but quiet client (a node's assignment
//! stream) keeps its connection by answering pings.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use crate::HttpLimits;
use crate::burst::Burst;
use crate::either::Either;
use crate::idle::{Activity, IdleIo};
use crate::tls::{self, ClientCert, ServerTls};

static ACCEPT: Burst = Burst::new("accepting a gRPC connection", Duration::from_secs(10));
static FULL: Burst = Burst::new("taking a gRPC connection", Duration::from_secs(10));

static HANDSHAKE: Burst = Burst::new(
    "completing a TLS handshake on the gRPC listener",
    Duration::from_secs(10),
);

static HANDSHAKES: Burst = Burst::new(
    "starting a TLS handshake on the gRPC listener",
    Duration::from_secs(10),
);

/// Time a client has to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections whose handshake is done and that wait for tonic to take them.
const READY: usize = 64;

/// One accepted gRPC connection; its slot is freed when it drops.
#[derive(Debug)]
pub struct GrpcConn {
    io: IdleIo<Either<TcpStream, TlsStream<TcpStream>>>,
    client_cert: Option<ClientCert>,
    _permit: OwnedSemaphorePermit,
}

/// What tonic hands each request of a [`GrpcConn`] (a request extension): the peer's address
/// and, under TLS, the certificate it presented.
#[derive(Debug, Clone)]
pub struct GrpcPeer {
    /// The peer's address.
    pub remote: Option<std::net::SocketAddr>,
    /// The leaf certificate the peer presented in its TLS handshake.
    pub client_cert: Option<ClientCert>,
}

/// The accepted connections of `listener` (under TLS when `tls` is given), at most
/// `limits.max_connections` at once, each closed after `limits.idle_timeout` without traffic.
/// Accept errors (out of descriptors) are logged once per burst and retried after a pause; the
/// stream never yields an error.
pub fn incoming(
    listener: TcpListener,
    limits: HttpLimits,
    tls: Option<Arc<ServerTls>>,
) -> Pin<Box<dyn Stream<Item = io::Result<GrpcConn>> + Send + 'static>> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let Some(tls) = tls else {
        return Box::pin(futures::stream::unfold(
            (listener, permits),
            move |(listener, permits)| async move {
                let (stream, permit) = next(&listener, &permits, &limits).await;
                let conn = GrpcConn::new(Either::Left(stream), permit, &limits);
                Some((Ok(conn), (listener, permits)))
            },
        ));
    };
    // Under TLS each handshake runs in a task of its own (a slow client must not hold up the
    // accept loop), holding a handshake slot; the connection takes its slot once the handshake
    // is done. Finished connections reach tonic through a channel.
    let handshakes = Arc::new(Semaphore::new(crate::MAX_HANDSHAKES));
    let (ready, taken) = tokio::sync::mpsc::channel(READY);
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                s = crate::accept(&listener, &ACCEPT) => s,
                () = ready.closed() => return,
            };
            let Ok(shaking) = handshakes.clone().try_acquire_owned() else {
                HANDSHAKES.failed(&format!(
                    "{} TLS handshakes are in progress",
                    crate::MAX_HANDSHAKES
                ));
                continue;
            };
            let (ready, acceptor, permits) = (ready.clone(), tls.acceptor(), permits.clone());
            tokio::spawn(async move {
                let done = tls::handshake(acceptor, stream, HANDSHAKE_TIMEOUT).await;
                drop(shaking);
                let stream = match done {
                    Ok(stream) => stream,
                    Err(e) => {
                        HANDSHAKE.failed(&e);
                        return;
                    }
                };
                let Some(permit) = slot(&permits, &limits) else {
                    return;
                };
                let conn = GrpcConn::new(Either::Right(Box::new(stream)), permit, &limits);
                let _ = ready.send(Ok(conn)).await;
            });
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(taken))
}

/// The next accepted connection with a slot.
async fn next(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    limits: &HttpLimits,
) -> (TcpStream, OwnedSemaphorePermit) {
    loop {
        let stream = crate::accept(listener, &ACCEPT).await;
        if let Some(permit) = slot(permits, limits) {
            return (stream, permit);
        }
    }
}

/// A connection slot, or None (logged) when every one is taken.
fn slot(permits: &Arc<Semaphore>, limits: &HttpLimits) -> Option<OwnedSemaphorePermit> {
    let permit = permits.clone().try_acquire_owned().ok();
    if permit.is_none() {
        FULL.failed(&format!(
            "{} connections are open (grpc.max_connections)",
            limits.max_connections
        ));
    }
    permit
}

impl GrpcConn {
    fn new(
        stream: Either<TcpStream, TlsStream<TcpStream>>,
        permit: OwnedSemaphorePermit,
        limits: &HttpLimits,
    ) -> Self {
        let client_cert = match &stream {
            Either::Left(_) => None,
            Either::Right(tls) => ClientCert::of(tls.get_ref().1),
        };
        Self {
            io: IdleIo::new(stream, Activity::by_bytes(), limits.idle_timeout),
            client_cert,
            _permit: permit,
        }
    }
}

impl Connected for GrpcConn {
    type ConnectInfo = GrpcPeer;

    fn connect_info(&self) -> GrpcPeer {
        let tcp = match self.io.get_ref() {
            Either::Left(tcp) => tcp,
            Either::Right(tls) => tls.get_ref().0,
        };
        GrpcPeer {
            remote: tcp.peer_addr().ok(),
            client_cert: self.client_cert.clone(),
        }
    }
}

impl AsyncRead for GrpcConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for GrpcConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    #[tokio::test]
    async fn clients_stuck_in_their_tls_handshake_do_not_take_the_connection_slots() {
        let dir = tempfile::tempdir().unwrap();
        let (tls, cert_pem) = crate::tls::self_signed(dir.path(), crate::tls::ALPN_GRPC);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = HttpLimits {
            max_connections: 2,
            ..HttpLimits::default()
        };
        let (_reporter, health) = tonic_health::server::health_reporter();
        let incoming = incoming(listener, limits, Some(tls));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(incoming),
        );
        // More connections than slots, none of which ever starts its handshake.
        let mut stuck = Vec::new();
        for _ in 0..4 {
            stuck.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&cert_pem))
                    .domain_name("127.0.0.1"),
            )
            .unwrap()
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("a handshake while others hang in theirs");
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .expect("served");
        drop(stuck);
    }
}
