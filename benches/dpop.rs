//! The DPoP hot path (RFC 9449): what a proof costs per request, against
//! the raw ES256 signature from ring in the same run.
//!
//! - `ring_es256_sign`: ring signing a message the size of a proof's
//!   signing input: the floor, since every proof needs one signature.
//! - `dpop_proof`: `DpopKey::proof` for a resource request: `htu` from the
//!   URI, a random `jti`, `ath` (SHA-256 of the token), the claims as JSON,
//!   base64url, the signature, and the nonce lookup.
//! - `dpop_layer`: one request through the `Dpop` service (token read from
//!   the `Authorization` header, proof, replay copy) to a trivial inner
//!   service that answers at once.

use std::{
    convert::Infallible,
    future::{Ready, ready},
    hint::black_box,
    pin::pin,
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Method, Request, Response, Uri, header::AUTHORIZATION};
use http_body_util::Full;
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair},
};
use tower::{Layer, Service};
use tower_token_refresh::dpop::{DpopKey, DpopLayer};

type Body = Full<Bytes>;

#[derive(Clone, Copy)]
struct Ok200;

impl Service<Request<Body>> for Ok200 {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<Body>) -> Self::Future {
        ready(Ok(Response::new(())))
    }
}

const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMCwiY25mIjp7ImprdCI6IjBaY09DT1JaTll5LURXcHFxMzBqWnlKR0hUTjBkMkhnbEJWM3VpZ3VBNEkifX0.c2lnbmF0dXJl";

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("dpop");

    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    // A proof's signing input: header with the JWK (~230 characters) and
    // the claims (~200), base64url-encoded.
    let message = vec![b'a'; 430];
    group.bench_function("ring_es256_sign", |b| {
        b.iter(|| black_box(pair.sign(&rng, black_box(&message)).unwrap()))
    });

    let dpop = DpopKey::generate().unwrap();
    let uri: Uri = "https://api.example.com/v1/orders/42?expand=items"
        .parse()
        .unwrap();
    group.bench_function("dpop_proof", |b| {
        b.iter(|| {
            black_box(
                dpop.proof(&Method::GET, black_box(&uri), Some(black_box(TOKEN)))
                    .unwrap(),
            )
        })
    });

    let mut service = DpopLayer::new(dpop.clone()).layer(Ok200);
    let header = HeaderValue::try_from(format!("DPoP {TOKEN}")).unwrap();
    let mut cx = Context::from_waker(Waker::noop());
    group.bench_function("dpop_layer", |b| {
        b.iter(|| {
            let mut request = Request::new(Body::default());
            *request.uri_mut() = uri.clone();
            request.headers_mut().insert(AUTHORIZATION, header.clone());
            let future = pin!(service.call(request));
            match future.poll(&mut cx) {
                Poll::Ready(Ok(response)) => black_box(response),
                _ => unreachable!("the inner service answers at once"),
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
