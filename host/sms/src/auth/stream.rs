//! A response body that ends when the token that opened it is revoked or expires: an event
//! stream or a node's assignment stream does not outlive its credential.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};

use super::Principal;
use crate::model::now_ms;

type Ended = Pin<Box<dyn Future<Output = &'static str> + Send>>;

/// `inner` until the principal's token is revoked or expires; then `trailers` (gRPC: a status)
/// and the end.
pub struct Revocable<B> {
    inner: B,
    ended: Option<Ended>,
    trailers: Option<fn(&'static str) -> http::HeaderMap>,
    done: bool,
}

/// Resolves with why the principal's token stopped working; never when it cannot.
fn ended(p: &Principal) -> Option<Ended> {
    if p.revoked.is_none() && p.expires_at_ms.is_none() {
        return None;
    }
    let mut revoked = p.revoked.clone();
    let expires = p.expires_at_ms;
    Some(Box::pin(async move {
        let revoked = async {
            match revoked.as_mut() {
                Some(rx) => {
                    // A dropped sender (SMS stopping) is not a revocation.
                    if rx.wait_for(|r| *r).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        let expired = async {
            match expires {
                Some(at) => {
                    let ms = u64::try_from(at - now_ms()).unwrap_or(0);
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = revoked => "the token was revoked",
            () = expired => "the token expired",
        }
    }))
}

impl<B> Revocable<B> {
    /// Wrap `inner` for `principal`; `trailers` makes the last frame from the reason.
    pub fn new(
        inner: B,
        principal: &Principal,
        trailers: Option<fn(&'static str) -> http::HeaderMap>,
    ) -> Self {
        Self {
            inner,
            ended: ended(principal),
            trailers,
            done: false,
        }
    }
}

impl<B: Body + Unpin> Body for Revocable<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(ended) = self.ended.as_mut()
            && let Poll::Ready(why) = ended.as_mut().poll(cx)
        {
            self.done = true;
            tracing::info!("ending a stream: {why}");
            return Poll::Ready(self.trailers.map(|t| Ok(Frame::trailers(t(why)))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
