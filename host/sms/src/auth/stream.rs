//! A response body that ends when the token that opened it is revoked or expires: an event
//! stream or a node's assignment stream does not outlive its credential.
//!
//! Most answers are one message, sent at once (every unary gRPC call, most REST answers); they
//! pay for no watch. Each frame checks the revocation flag and the expiry (a lock-free read and
//! a clock read); only when the body has to wait for its next frame, which a stream does and a
//! single message does not, is a waiter armed that wakes the stream when its token stops working.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tokio::sync::watch;

use super::Principal;
use crate::model::now_ms;

type Ended = Pin<Box<dyn Future<Output = &'static str> + Send>>;

/// What ends a body: its principal's revocation flag and expiry.
#[derive(Debug, Clone)]
pub struct Lifetime {
    revoked: Option<watch::Receiver<bool>>,
    expires_at_ms: Option<i64>,
}

impl Lifetime {
    /// The lifetime of `p`'s credential; None when it cannot end (a bootstrap token).
    pub fn of(p: &Principal) -> Option<Self> {
        (p.revoked.is_some() || p.expires_at_ms.is_some()).then(|| Self {
            revoked: p.revoked.clone(),
            expires_at_ms: p.expires_at_ms,
        })
    }

    /// Why the credential has stopped working, if it has.
    fn over(&self) -> Option<&'static str> {
        if self.revoked.as_ref().is_some_and(|rx| *rx.borrow()) {
            return Some("the token was revoked");
        }
        if self.expires_at_ms.is_some_and(|at| at <= now_ms()) {
            return Some("the token expired");
        }
        None
    }

    /// Resolves with why the credential stopped working; never when it cannot.
    fn ended(&self) -> Ended {
        let mut revoked = self.revoked.clone();
        let expires = self.expires_at_ms;
        Box::pin(async move {
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
        })
    }
}

/// `inner` until the principal's token is revoked or expires; then `trailers` (gRPC: a status)
/// and the end.
pub struct Revocable<B> {
    inner: B,
    lifetime: Lifetime,
    /// Armed the first time the body waits.
    ended: Option<Ended>,
    trailers: Option<fn(&'static str) -> http::HeaderMap>,
    done: bool,
}

impl<B> Revocable<B> {
    /// Wrap `inner` for a credential of `lifetime`; `trailers` makes the last frame from the
    /// reason.
    pub fn new(
        inner: B,
        lifetime: Lifetime,
        trailers: Option<fn(&'static str) -> http::HeaderMap>,
    ) -> Self {
        Self {
            inner,
            lifetime,
            ended: None,
            trailers,
            done: false,
        }
    }

    /// The last frame, for `why`.
    fn end<D, E>(&mut self, why: &'static str) -> Poll<Option<Result<Frame<D>, E>>> {
        self.done = true;
        tracing::info!("ending a stream: {why}");
        Poll::Ready(self.trailers.map(|t| Ok(Frame::trailers(t(why)))))
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
        if let Some(why) = self.lifetime.over() {
            return self.end(why);
        }
        if let Some(ended) = self.ended.as_mut()
            && let Poll::Ready(why) = ended.as_mut().poll(cx)
        {
            return self.end(why);
        }
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if frame.is_pending() && self.ended.is_none() {
            // A stream waiting for its next frame: from now on its credential's end wakes it.
            let mut ended = self.lifetime.ended();
            if let Poll::Ready(why) = ended.as_mut().poll(cx) {
                return self.end(why);
            }
            self.ended = Some(ended);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
