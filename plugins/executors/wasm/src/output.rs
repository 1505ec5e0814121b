//! Captured standard output and error: kept up to a cap, the rest dropped and flagged.
//!
//! Unlike wasmtime-wasi's `MemoryOutputPipe`, a full [`Capture`] never fails the guest: writes past
//! the cap succeed and are discarded, so a program printing 100 MB under a 1 MiB cap still runs to
//! its end (and its exit code is reported) with the first MiB kept and `*_truncated` set.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes a guest may write in one call (the stream's write permit).
const PERMIT: usize = 1 << 20;

struct Buffer {
    data: Vec<u8>,
    cap: usize,
    truncated: bool,
}

/// A capped, shareable capture of one output stream.
#[derive(Clone)]
pub struct Capture(Arc<Mutex<Buffer>>);

impl Capture {
    /// An empty capture keeping at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self(Arc::new(Mutex::new(Buffer {
            data: Vec::new(),
            cap,
            truncated: false,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Buffer> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep what fits under the cap; flag the rest as dropped.
    pub fn push(&self, bytes: &[u8]) {
        let mut b = self.lock();
        let room = b.cap.saturating_sub(b.data.len());
        if bytes.len() > room {
            b.truncated = true;
        }
        b.data.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// Take the kept bytes and whether any were dropped, leaving the capture empty.
    pub fn take(&self) -> (Vec<u8>, bool) {
        let mut b = self.lock();
        (std::mem::take(&mut b.data), b.truncated)
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(PERMIT)
    }
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_the_cap_and_flags_the_rest() {
        let c = Capture::new(5);
        c.push(b"abc");
        assert_eq!(c.take(), (b"abc".to_vec(), false));
        let c = Capture::new(5);
        c.clone().push(b"abc");
        c.push(b"defg");
        c.push(b"h");
        assert_eq!(c.take(), (b"abcde".to_vec(), true));
    }
}
