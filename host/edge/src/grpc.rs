//! Connections for tonic's `serve_with_incoming*` within [`HttpLimits`]: the connection cap
//! (connections past it are closed at once) and the idle timeout. Pair it with tonic's HTTP/2
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
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::HttpLimits;
use crate::burst::Burst;
use crate::idle::{Activity, IdleIo};

static ACCEPT: Burst = Burst::new("accepting a gRPC connection", Duration::from_secs(10));
static FULL: Burst = Burst::new("taking a gRPC connection", Duration::from_secs(10));

/// One accepted gRPC connection; its slot is freed when it drops.
#[derive(Debug)]
pub struct GrpcConn {
    io: IdleIo<TcpStream>,
    _permit: OwnedSemaphorePermit,
}

/// The accepted connections of `listener`, at most `limits.max_connections` at once, each closed
/// after `limits.idle_timeout` without traffic. Accept errors (out of descriptors) are logged once
/// per burst and retried after a pause; the stream never yields an error.
pub fn incoming(
    listener: TcpListener,
    limits: HttpLimits,
) -> impl Stream<Item = io::Result<GrpcConn>> + Send + 'static {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    futures::stream::unfold((listener, permits), move |(listener, permits)| async move {
        loop {
            let stream = crate::accept(&listener, &ACCEPT).await;
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                FULL.failed(&format!(
                    "{} connections are open (grpc.max_connections)",
                    limits.max_connections
                ));
                continue;
            };
            let conn = GrpcConn {
                io: IdleIo::new(stream, Activity::by_bytes(), limits.idle_timeout),
                _permit: permit,
            };
            return Some((Ok(conn), (listener, permits)));
        }
    })
}

impl Connected for GrpcConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.get_ref().connect_info()
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
