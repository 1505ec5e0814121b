//! A deadline on reading a request body: a client that sends its body too slowly gets
//! [`BodyTimeout`] from the body instead of holding the handler for ever.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// A request body that did not arrive within the body timeout.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the request body did not arrive within {} s", .0.as_secs())]
pub struct BodyTimeout(pub Duration);

impl BodyTimeout {
    /// Whether `err` (or an error it wraps) is a [`BodyTimeout`].
    pub fn is_in(err: &(dyn std::error::Error + 'static)) -> bool {
        let mut cur = Some(err);
        while let Some(e) = cur {
            if e.is::<BodyTimeout>() {
                return true;
            }
            cur = e.source();
        }
        false
    }
}

/// A body that fails with [`BodyTimeout`] once its deadline passes.
#[derive(Debug)]
pub struct TimedBody<B> {
    inner: B,
    limit: Duration,
    deadline: Pin<Box<Sleep>>,
    done: bool,
    /// Set once the body has been read to its end (not when it failed or timed out).
    ended: Arc<AtomicBool>,
}

impl<B: Body> TimedBody<B> {
    /// `inner`, which must be read within `limit` from now.
    pub fn new(inner: B, limit: Duration) -> Self {
        let ended = Arc::new(AtomicBool::new(inner.is_end_stream()));
        Self {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
            done: false,
            ended,
        }
    }

    /// A flag that turns true once the body has been read to its end (at once for an empty
    /// body); it stays false for a body left unread, failed or timed out.
    pub fn ended(&self) -> Arc<AtomicBool> {
        self.ended.clone()
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        // The deadline first: a body that always has a frame ready is timed out too.
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.done = true;
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit)))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if this.inner.is_end_stream() {
                    this.ended.store(true, Ordering::Release);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                this.done = true;
                this.ended.store(true, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_ends_times_out_and_a_whole_one_does_not() {
        let (mut tx, rx) = http_body_util::channel::Channel::<Bytes, BoxError>::new(4);
        tx.send_data(Bytes::from_static(b"part")).await.unwrap();
        let mut body = TimedBody::new(rx, Duration::from_secs(3));
        let ended = body.ended();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "part");
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(BodyTimeout::is_in(err.as_ref()), "{err}");
        assert!(body.frame().await.is_none());
        assert!(
            !ended.load(Ordering::Acquire),
            "a timed-out body did not end"
        );

        let whole = TimedBody::new(
            http_body_util::Full::new(Bytes::from_static(b"all")),
            Duration::from_secs(3),
        );
        let ended = whole.ended();
        assert!(!ended.load(Ordering::Acquire));
        assert_eq!(whole.collect().await.unwrap().to_bytes(), "all");
        assert!(ended.load(Ordering::Acquire));

        let empty = TimedBody::new(
            http_body_util::Empty::<Bytes>::new(),
            Duration::from_secs(3),
        );
        assert!(
            empty.ended().load(Ordering::Acquire),
            "an empty body is read"
        );
    }
}
