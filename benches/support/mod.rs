//! What the request-path benches share: the trivial inner service, the
//! request they send, and one send (ready, call, one poll). Each bench uses
//! part of it.
#![allow(dead_code)]

use std::{
    convert::Infallible,
    future::{Future, Ready, ready},
    hint::black_box,
    pin::pin,
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::Full;
use tower::Service;

pub type Body = Full<Bytes>;

/// The trivial inner service: answers 200 at once.
#[derive(Clone, Copy)]
pub struct Ok200;

impl Service<Request<Body>> for Ok200 {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        black_box(&req);
        ready(Ok(Response::new(())))
    }
}

/// A small JSON `GET`-shaped request to `uri`.
pub fn request(uri: &Uri) -> Request<Body> {
    let mut req = Request::new(Full::new(Bytes::from_static(b"{\"q\":1}")));
    *req.uri_mut() = uri.clone();
    req
}

/// Sends one request: ready, call, and poll the future once.
pub fn send<S>(svc: &mut S, req: Request<Body>)
where
    S: Service<Request<Body>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let fut = pin!(svc.call(req));
    match fut.poll(&mut cx) {
        Poll::Ready(Ok(res)) => {
            black_box(res);
        }
        other => panic!(
            "the bench services answer at once: {:?}",
            other.map(|r| r.err())
        ),
    }
}
