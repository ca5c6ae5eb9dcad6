//! The gRPC and 403 rules through the layer: an in-process inner service
//! (the workspace's hyper client is HTTP/1 only, so no real gRPC server)
//! rejects the first token with a trailers-only `UNAUTHENTICATED` or a 403,
//! and the layer refreshes once and replays once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use tower::{Layer, ServiceExt, service_fn};
use tower_token_refresh::{
    Classify, RejectedToken, TokenManager, TokenRefreshLayer, TokenSet, source,
};

/// What the inner service answers to the first ("old") token.
type Rejection = fn() -> Response<Full<Bytes>>;

fn grpc_unauthenticated() -> Response<Full<Bytes>> {
    // Trailers-only: HTTP 200, no message, the status in the headers.
    Response::builder()
        .header(header::CONTENT_TYPE, "application/grpc")
        .header("grpc-status", "16")
        .header("grpc-message", "invalid%20token")
        .body(Full::default())
        .unwrap()
}

fn forbidden_invalid_token() -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::FORBIDDEN)
        .header(header::WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#)
        .body(Full::default())
        .unwrap()
}

fn forbidden_insufficient_scope() -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::FORBIDDEN)
        .header(
            header::WWW_AUTHENTICATE,
            r#"Bearer error="insufficient_scope", scope="admin""#,
        )
        .body(Full::default())
        .unwrap()
}

struct Outcome {
    status: StatusCode,
    grpc_status: Option<HeaderValue>,
    /// The Authorization header of each request the inner service saw.
    sent: Vec<String>,
    /// Calls to the token source (the first token is seeded, not fetched).
    fetches: usize,
    replays: u64,
}

async fn run<C>(classifier: C, reject: Rejection) -> Outcome
where
    C: Classify + Send + Sync + 'static,
{
    let fetches = Arc::new(AtomicUsize::new(0));
    let tokens = TokenManager::builder(source::from_fn({
        let fetches = fetches.clone();
        move |_| {
            fetches.fetch_add(1, Ordering::SeqCst);
            async { Ok(TokenSet::bearer("new")) }
        }
    }))
    .initial(TokenSet::bearer("old"))
    .build();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let inner = service_fn({
        let sent = sent.clone();
        move |req: Request<Full<Bytes>>| {
            let auth = req.headers()[header::AUTHORIZATION]
                .to_str()
                .unwrap()
                .to_owned();
            sent.lock().unwrap().push(auth.clone());
            async move {
                Ok::<_, Infallible>(if auth == "Bearer old" {
                    reject()
                } else {
                    Response::builder()
                        .header(header::CONTENT_TYPE, "application/grpc")
                        .header("grpc-status", "0")
                        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
                        .unwrap()
                })
            }
        }
    });
    let client = TokenRefreshLayer::new(tokens.clone())
        .allow_origin("http://127.0.0.1".parse().unwrap())
        .classify(classifier)
        .layer(inner);
    let response = client
        .oneshot(
            Request::post("http://127.0.0.1/echo.Echo/Say")
                .header(header::CONTENT_TYPE, "application/grpc")
                .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
                .unwrap(),
        )
        .await
        .unwrap();
    let sent = sent.lock().unwrap().clone();
    Outcome {
        status: response.status(),
        grpc_status: response.headers().get("grpc-status").cloned(),
        sent,
        fetches: fetches.load(Ordering::SeqCst),
        replays: tokens.stats().replays,
    }
}

fn assert_refreshed_and_replayed(o: &Outcome) {
    assert_eq!(o.fetches, 1, "one refresh");
    assert_eq!(o.replays, 1, "one replay");
    assert_eq!(o.sent, ["Bearer old", "Bearer new"]);
    assert_eq!(o.status, StatusCode::OK);
    assert_eq!(
        o.grpc_status.as_ref().map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
}

fn assert_returned_as_is(o: &Outcome) {
    assert_eq!(o.fetches, 0, "no refresh");
    assert_eq!(o.replays, 0, "no replay");
    assert_eq!(o.sent, ["Bearer old"]);
}

#[tokio::test]
async fn grpc_unauthenticated_is_refreshed_and_replayed_once() {
    let o = run(RejectedToken.also_grpc(), grpc_unauthenticated).await;
    assert_refreshed_and_replayed(&o);
}

#[tokio::test]
async fn grpc_unauthenticated_is_returned_as_is_by_the_default_classifier() {
    let o = run(RejectedToken, grpc_unauthenticated).await;
    assert_returned_as_is(&o);
    assert_eq!(o.status, StatusCode::OK);
    assert_eq!(o.grpc_status.unwrap(), "16");
}

#[tokio::test]
async fn grpc_classifier_still_refreshes_on_a_proxys_401() {
    fn proxy_401() -> Response<Full<Bytes>> {
        Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body(Full::default())
            .unwrap()
    }
    let o = run(RejectedToken.also_grpc(), proxy_401).await;
    assert_refreshed_and_replayed(&o);
}

#[tokio::test]
async fn a_403_naming_an_invalid_token_is_refreshed_and_replayed_once() {
    let o = run(RejectedToken.also_forbidden(), forbidden_invalid_token).await;
    assert_refreshed_and_replayed(&o);
}

#[tokio::test]
async fn a_403_for_insufficient_scope_is_returned_as_is() {
    let o = run(
        RejectedToken.also_forbidden().also_grpc(),
        forbidden_insufficient_scope,
    )
    .await;
    assert_returned_as_is(&o);
    assert_eq!(o.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_403_naming_an_invalid_token_is_returned_as_is_by_the_default_classifier() {
    let o = run(RejectedToken, forbidden_invalid_token).await;
    assert_returned_as_is(&o);
    assert_eq!(o.status, StatusCode::FORBIDDEN);
}
