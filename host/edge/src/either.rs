//! A stream that is one of two stream types (a connection plain or under TLS).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One of two `AsyncRead + AsyncWrite` streams.
#[derive(Debug)]
pub enum Either<A, B> {
    /// The first kind (a plain connection).
    Left(A),
    /// The second kind (a TLS connection), boxed: a TLS stream is large.
    Right(Box<B>),
}

impl<A: AsyncRead + Unpin, B: AsyncRead + Unpin> AsyncRead for Either<A, B> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Either::Left(a) => Pin::new(a).poll_read(cx, buf),
            Either::Right(b) => Pin::new(b.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<A: AsyncWrite + Unpin, B: AsyncWrite + Unpin> AsyncWrite for Either<A, B> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Either::Left(a) => Pin::new(a).poll_write(cx, data),
            Either::Right(b) => Pin::new(b.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Either::Left(a) => Pin::new(a).poll_write_vectored(cx, bufs),
            Either::Right(b) => Pin::new(b.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Either::Left(a) => a.is_write_vectored(),
            Either::Right(b) => b.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Either::Left(a) => Pin::new(a).poll_flush(cx),
            Either::Right(b) => Pin::new(b.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Either::Left(a) => Pin::new(a).poll_shutdown(cx),
            Either::Right(b) => Pin::new(b.as_mut()).poll_shutdown(cx),
        }
    }
}
