//! A deadline on reading a request body: a client that sends its body too slowly gets
//! [`BodyTimeout`] from the body instead of holding the handler for ever.

use std::pin::Pin;
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
}

impl<B> TimedBody<B> {
    /// `inner`, which must be read within `limit` from now.
    pub fn new(inner: B, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
            done: false,
        }
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
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                this.done = true;
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
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "part");
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(BodyTimeout::is_in(err.as_ref()), "{err}");
        assert!(body.frame().await.is_none());

        let whole = TimedBody::new(
            http_body_util::Full::new(Bytes::from_static(b"all")),
            Duration::from_secs(3),
        );
        assert_eq!(whole.collect().await.unwrap().to_bytes(), "all");
    }
}
