//! The network edge of the SPEAR hosts (SMS and Spearlet).
//!
//! Everything that reaches a listener is hostile until proven otherwise, so each listener here is
//! bounded:
//! - [`http::serve`] serves an axum router with a connection cap (connections past it get a
//!   `503` JSON answer and are closed), hyper's header-read timeout (which also bounds the wait for
//!   the next request on a kept-alive connection), an idle timeout (no byte moved either way while
//!   no request is being handled) and a deadline on reading each request body
//!   ([`body::BodyTimeout`]).
//! - [`grpc::incoming`] gives tonic the same connection cap and idle timeout.
//! - [`tls::ServerTls`] puts a listener under TLS (rustls), its certificate reloaded when its
//!   files change.
//! - [`burst::Burst`] logs a repeating failure once per burst at `warn`, with a count of the rest.
//!
//! The limits come from the host's configuration ([`HttpLimits`]).

pub mod body;
pub mod burst;
pub mod either;
pub mod grpc;
pub mod http;
pub mod idle;
pub mod origin;
pub mod tls;

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::burst::Burst;

/// The next connection of `listener`, with `TCP_NODELAY` set: requests and answers are small and
/// latency-bound, and Nagle's algorithm would hold each one back for the peer's delayed ACK
/// (tens of ms). Accept errors (out of descriptors, most likely) are logged once per burst and
/// retried after a pause, without spinning; none is returned.
pub(crate) async fn accept(listener: &TcpListener, failures: &Burst) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                failures.recovered();
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!("TCP_NODELAY not set: {e}");
                }
                return stream;
            }
            Err(e) => {
                failures.failed(&e);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// TLS handshakes in progress at once on one listener. A connection in its handshake holds one of
/// these, not a connection slot: clients that open connections and never finish their handshake
/// cannot take the slots of established ones. Past it, new connections are closed at once.
pub const MAX_HANDSHAKES: usize = 256;

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time a client has to send a request's headers, counted from the connection's start or from
    /// the end of the previous response.
    pub header_read_timeout: Duration,
    /// A connection on which no byte moves either way for this long, while no request is being
    /// handled, is closed.
    pub idle_timeout: Duration,
    /// Time a client has to send a whole request body.
    pub body_timeout: Duration,
    /// Connections served at once; more are answered `503` and closed.
    pub max_connections: usize,
    /// At shutdown, time in-flight requests get to finish before every connection is closed.
    pub drain: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(300),
            max_connections: 1024,
            drain: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_tcp_nodelay() {
        static FAILURES: Burst = Burst::new("accepting", Duration::from_secs(10));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(TcpStream::connect(addr));
        let accepted = accept(&listener, &FAILURES).await;
        // getsockopt(TCP_NODELAY) on the server's side of a real connection.
        assert!(accepted.nodelay().unwrap());
        drop(client.await.unwrap().unwrap());
    }
}
