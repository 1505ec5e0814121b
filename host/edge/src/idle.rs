//! Idle detection for one connection. [`IdleIo`] wraps the connection's stream; once the
//! connection has been idle for the idle timeout while no request is being handled
//! ([`Activity::begin`]), its reads and writes fail with `TimedOut` and the server drops the
//! connection. A request being handled never times out here (a slow handler is not an idle
//! client), but a write that makes no progress for the idle timeout does (a client that stopped
//! reading its answer).
//!
//! What counts as activity depends on the listener. For REST ([`Activity::by_requests`]) only
//! requests do: HTTP/2 pings and other control frames keep no connection alive, so quiet HTTP/2
//! clients cannot hold the connection cap. For gRPC ([`Activity::by_bytes`]) any byte does, and SMS
//! pings its clients, so that a node's quiet assignment stream keeps its connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// When a connection was last active, and how many of its requests are being handled.
#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    /// Milliseconds from `origin` to the last activity.
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// Whether bytes moving count as activity (else only requests do).
    bytes: bool,
}

impl Activity {
    fn with(bytes: bool) -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            bytes,
        })
    }

    /// A connection that has just started, active while bytes move or a request is handled.
    pub fn by_bytes() -> Arc<Self> {
        Self::with(true)
    }

    /// A connection that has just started, active only while a request is handled (or within
    /// the idle timeout of the last one).
    pub fn by_requests() -> Arc<Self> {
        Self::with(false)
    }

    /// Bytes moved now.
    fn moved(&self) {
        if self.bytes {
            self.touch();
        }
    }

    /// Active now.
    pub fn touch(&self) {
        let ms = self.origin.elapsed().as_millis();
        self.last_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// A request is being handled until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// How long nothing has moved, or `None` while a request is being handled.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(self.origin.elapsed().saturating_sub(last))
    }
}

/// A request being handled; see [`Activity::begin`].
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bytes a closing connection reads and drops at most before it closes.
const LINGER_BYTES: usize = 8 << 20;
/// Time a closing connection waits at most for the client to stop sending.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// A stream whose reads and writes fail with `TimedOut` after the idle timeout, and whose close
/// lingers: after sending its FIN it reads and drops what the client still sends (up to 8 MiB or
/// 2 s), so that a client still sending a body the server refused (a 413 answered from the
/// headers) reads the answer instead of a reset.
#[derive(Debug)]
pub struct IdleIo<S> {
    inner: S,
    activity: Arc<Activity>,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    /// While closing: the deadline and the bytes still to drop.
    linger: Option<(Pin<Box<Sleep>>, usize)>,
    /// Since when writes have made no progress.
    write_stuck: Option<Instant>,
}

impl<S> IdleIo<S> {
    /// Wrap `inner`, recording into `activity`.
    pub fn new(inner: S, activity: Arc<Activity>, timeout: Duration) -> Self {
        activity.touch();
        Self {
            inner,
            activity,
            timer: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            linger: None,
            write_stuck: None,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Called when the inner stream is not ready: fail once idle too long, else arm the timer so
    /// that the task is woken to look again when the timeout would pass.
    fn check_idle(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        loop {
            let stuck = self.write_stuck.map(|t| t.elapsed());
            if stuck.is_some_and(|s| s >= self.timeout) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client read nothing for {} s", self.timeout.as_secs()),
                ));
            }
            let wait = match self.activity.idle_for() {
                None => self.timeout - stuck.unwrap_or_default(),
                Some(idle) if idle >= self.timeout => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connection idle for {} s", self.timeout.as_secs()),
                    ));
                }
                Some(idle) => self.timeout - idle,
            };
            self.timer.as_mut().reset(Instant::now() + wait);
            if self.timer.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
        }
    }
}

impl<S> IdleIo<S> {
    /// After a write of the inner stream: note the bytes that moved, or look at the idle time.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.write_stuck = None;
                    self.activity.moved();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                self.write_stuck.get_or_insert_with(Instant::now);
                match self.check_idle(cx) {
                    Ok(()) => Poll::Pending,
                    Err(e) => Poll::Ready(Err(e)),
                }
            }
            other => other,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.activity.moved();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.check_idle(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            other => other,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for IdleIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        this.wrote(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.linger.is_none() {
            match Pin::new(&mut this.inner).poll_shutdown(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            this.linger = Some((Box::pin(tokio::time::sleep(LINGER_TIME)), LINGER_BYTES));
        }
        let Some((deadline, left)) = this.linger.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let mut scratch = [0u8; 8192];
        while *left > 0 {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    *left = left.saturating_sub(buf.filled().len());
                }
                // The client closed too (or reset): done.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    return if deadline.as_mut().poll(cx).is_ready() {
                        Poll::Ready(Ok(()))
                    } else {
                        Poll::Pending
                    };
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_counts_only_while_no_request_is_in_flight() {
        let a = Activity::by_requests();
        a.touch();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(a.idle_for().unwrap() >= Duration::from_secs(5));
        let guard = a.begin();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(a.idle_for(), None);
        drop(guard);
        assert!(a.idle_for().unwrap() < Duration::from_secs(1));
    }
}
