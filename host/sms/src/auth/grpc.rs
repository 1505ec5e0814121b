//! The gRPC side: a tower layer around every service that checks the `authorization` metadata
//! against the method's rule ([`rules::grpc`]) and hands the [`Principal`] to the handler (a
//! request extension, `request.extensions().get::<Principal>()`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::{Principal, rules};
use crate::service::Sms;

/// The layer; see the module docs.
#[derive(Clone)]
pub struct AuthLayer(pub Arc<Sms>);

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            sms: self.0.clone(),
        }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    sms: Arc<Sms>,
}

type Reply<E> = Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, E>> + Send>>;

/// The trailers that end a stream whose token stopped working.
fn revoked_trailers(why: &'static str) -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    let status = tonic::Status::unauthenticated(why);
    let _ = status.add_header(&mut trailers);
    trailers
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Reply<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The service polled ready is the one that takes the call; a fresh clone waits.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if !self.sms.auth.config.enabled {
            return Box::pin(inner.call(req));
        }
        // An unknown method (answered UNIMPLEMENTED), or a rule missing: admin only.
        let need = rules::grpc(req.uri().path()).unwrap_or(super::Need::Admin);
        let cert = req
            .extensions()
            .get::<spear_edge::grpc::GrpcPeer>()
            .and_then(|peer| peer.client_cert.as_ref());
        let checked = super::http::authorize(&self.sms, need, req.headers(), cert);
        let principal: Option<Principal> = match checked {
            Ok(p) => p,
            Err(e) => {
                let status: tonic::Status = e.into();
                return Box::pin(async move { Ok(status.into_http()) });
            }
        };
        let Some(principal) = principal else {
            return Box::pin(inner.call(req));
        };
        let label = principal.label.clone();
        let lifetime = super::stream::Lifetime::of(&principal);
        req.extensions_mut().insert(principal);
        Box::pin(async move {
            let response = super::audit::scope(label, inner.call(req)).await?;
            // A stream ends when its token stops working (a unary answer is sent before it
            // could matter, and arms nothing).
            Ok(match lifetime {
                Some(lifetime) => response.map(|body| {
                    tonic::body::Body::new(super::stream::Revocable::new(
                        body,
                        lifetime,
                        Some(revoked_trailers),
                    ))
                }),
                None => response,
            })
        })
    }
}
