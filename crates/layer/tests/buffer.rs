//! `BufferBody`: bodies that cannot be copied are read into memory and
//! replayed. A proxy forwarding axum's `Body` through the layered client to
//! test-util's resource server; and, with an in-process inner service, the
//! body's own failures and what is not read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Body, extract::State, routing::post};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use tower::{Layer, ServiceExt, service_fn};
use tower_token_refresh::{
    BufferBody, Buffered, BufferedTokenRefresh, ReadBodyError, SkipAuth, TokenManager,
    TokenRefreshLayer, TokenSet, replay::Unbuffered, source,
};
use tower_token_refresh_test_util::{AuthConfig, AuthServer, ResourceServer, hyper_client};

use support::{HOUR, grant, origin_of};

type AxumRebuild = fn(Buffered<Body>) -> Body;
type Upstream = BufferedTokenRefresh<Client<HttpConnector, Body>, AxumRebuild>;

/// The proxy's one route: the request, body and all, forwarded upstream
/// through the layered client.
async fn forward(
    State((client, upstream)): State<(Upstream, String)>,
    request: Request<Body>,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let mut outbound = Request::post(upstream).body(body).unwrap();
    if let Some(kind) = parts.headers.get(header::CONTENT_TYPE) {
        outbound
            .headers_mut()
            .insert(header::CONTENT_TYPE, kind.clone());
    }
    match client.oneshot(outbound).await {
        Ok(response) => response.map(Body::new),
        Err(error) => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::from(error.to_string()))
            .unwrap(),
    }
}

#[tokio::test]
async fn an_axum_body_is_replayed_through_a_proxy() {
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(HOUR))
        .await
        .unwrap();
    let api = ResourceServer::start(&auth).await.unwrap();
    let tokens = TokenManager::builder(grant(&auth, hyper_client()))
        .initial(auth.login().token_set())
        .build();
    let http = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Body>();
    let client: Upstream = TokenRefreshLayer::new(tokens)
        .allow_origin(origin_of(api.addr()))
        .buffer(BufferBody::new(Body::new as AxumRebuild))
        .layer(http);
    let proxy = Router::new()
        .route("/forward", post(forward))
        .with_state((client, api.url("/api/echo")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}/forward", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, proxy).await });

    auth.expire_access_tokens();
    let payload = Bytes::from(vec![b'p'; 10_000]);
    let response = hyper_client()
        .request(
            Request::post(proxy_url)
                .body(Full::new(payload.clone()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echoed = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(echoed, payload, "the replay carried the whole body");
    let stats = api.stats();
    assert_eq!((stats.rejected, stats.ok), (1, 1));
    assert_eq!(auth.stats().refresh_grants, 1);
    server.abort();
}

/// A manager whose first token is "old" and whose refreshes give "new".
fn manager() -> TokenManager {
    TokenManager::builder(source::from_fn(|_| async {
        Ok(TokenSet::bearer("new").with_expires_in(Duration::from_secs(3600)))
    }))
    .initial(TokenSet::bearer("old").with_expires_in(Duration::from_secs(3600)))
    .build()
}

fn layer() -> TokenRefreshLayer {
    TokenRefreshLayer::new(manager()).allow_origin("https://api.test".parse().unwrap())
}

type Chunks = StreamBody<
    futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>,
>;

fn chunks(frames: Vec<Result<Frame<Bytes>, std::io::Error>>) -> Chunks {
    StreamBody::new(futures_util::stream::iter(frames))
}

/// What the in-process inner service saw of each request: its
/// Authorization header, its data and its trailers.
type Seen = Arc<Mutex<Vec<(String, Bytes, Option<HeaderMap>)>>>;

#[tokio::test]
async fn a_body_in_several_chunks_with_trailers_is_replayed_exactly() {
    let seen = Seen::default();
    let log = seen.clone();
    let inner = service_fn(move |request: Request<Buffered<Chunks>>| {
        let log = log.clone();
        async move {
            let token = request.headers()[header::AUTHORIZATION]
                .to_str()
                .unwrap()
                .to_owned();
            let collected = request.into_body().collect().await.unwrap();
            let trailers = collected.trailers().cloned();
            let rejected = token == "Bearer old";
            log.lock()
                .unwrap()
                .push((token, collected.to_bytes(), trailers));
            let status = if rejected {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::OK
            };
            let mut response = Response::new(());
            *response.status_mut() = status;
            Ok::<_, Infallible>(response)
        }
    });
    let client = layer().buffer(BufferBody::new(|b| b)).layer(inner);
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "abc".parse().unwrap());
    let body = chunks(vec![
        Ok(Frame::data(Bytes::from_static(b"one "))),
        Ok(Frame::data(Bytes::from_static(b"two "))),
        Ok(Frame::data(Bytes::from_static(b"three"))),
        Ok(Frame::trailers(trailers.clone())),
    ]);
    let request = Request::post("https://api.test/upload").body(body).unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, "Bearer old");
    assert_eq!(seen[1].0, "Bearer new");
    for (_, data, got) in seen.iter() {
        assert_eq!(data, "one two three");
        assert_eq!(got.as_ref(), Some(&trailers));
    }
}

/// An inner service that must not be called: it counts calls and answers
/// 200.
fn never_called(
    calls: Arc<Mutex<u32>>,
) -> impl tower::Service<
    Request<Buffered<Chunks>>,
    Response = Response<()>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<()>, Infallible>>,
> + Clone {
    service_fn(move |_: Request<Buffered<Chunks>>| {
        *calls.lock().unwrap() += 1;
        std::future::ready(Ok::<_, Infallible>(Response::new(())))
    })
}

#[tokio::test]
async fn a_body_error_fails_the_request_with_a_typed_error() {
    let calls = Arc::new(Mutex::new(0));
    let client = layer()
        .buffer(BufferBody::new(|b| b))
        .layer(never_called(calls.clone()));
    let body = chunks(vec![
        Ok(Frame::data(Bytes::from_static(b"part"))),
        Err(std::io::Error::other("upload aborted")),
    ]);
    let request = Request::post("https://api.test/upload").body(body).unwrap();
    let error = client.oneshot(request).await.unwrap_err();
    let read = error
        .downcast_ref::<ReadBodyError>()
        .expect("a ReadBodyError");
    assert!(!read.is_timeout());
    let source = std::error::Error::source(read).unwrap();
    assert_eq!(source.to_string(), "upload aborted");
    assert_eq!(*calls.lock().unwrap(), 0, "the request was not sent");
}

type Stalled = StreamBody<futures_util::stream::Pending<Result<Frame<Bytes>, std::io::Error>>>;

#[tokio::test(start_paused = true)]
async fn a_body_that_does_not_end_in_time_fails_with_a_timeout() {
    let calls = Arc::new(Mutex::new(0u32));
    let counter = calls.clone();
    let inner = service_fn(move |_: Request<Buffered<Stalled>>| {
        *counter.lock().unwrap() += 1;
        std::future::ready(Ok::<_, Infallible>(Response::new(())))
    });
    let client = layer()
        .buffer(BufferBody::new(|b| b).read_timeout(Some(Duration::from_secs(5))))
        .layer(inner);
    let stalled = StreamBody::new(futures_util::stream::pending());
    let request = Request::post("https://api.test/upload")
        .body(stalled)
        .unwrap();
    let started = tokio::time::Instant::now();
    let error = client.oneshot(request).await.unwrap_err();
    assert!(error.downcast_ref::<ReadBodyError>().unwrap().is_timeout());
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(*calls.lock().unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn requests_without_the_token_are_not_read() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let inner = service_fn(move |request: Request<Buffered<Stalled>>| {
        log.lock()
            .unwrap()
            .push(request.headers().contains_key(header::AUTHORIZATION));
        std::future::ready(Ok::<_, Infallible>(Response::new(())))
    });
    let client = layer()
        .pass_through_other_origins(true)
        .buffer(BufferBody::new(|b| b).read_timeout(Some(Duration::from_secs(5))))
        .layer(inner);
    // A body that never ends would time out if it were read.
    let stalled = || StreamBody::new(futures_util::stream::pending());
    let mut skipped = Request::post("https://api.test/upload")
        .body(stalled())
        .unwrap();
    skipped.extensions_mut().insert(SkipAuth);
    client.clone().oneshot(skipped).await.unwrap();
    let elsewhere = Request::post("https://cdn.test/upload")
        .body(stalled())
        .unwrap();
    client.oneshot(elsewhere).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![false, false]);
}

#[tokio::test(start_paused = true)]
async fn an_unbuffered_request_is_sent_with_the_token_unread() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let inner = service_fn(move |request: Request<Buffered<Stalled>>| {
        let token = request.headers().get(header::AUTHORIZATION).cloned();
        log.lock().unwrap().push(token);
        std::future::ready(Ok::<_, Infallible>(Response::new(())))
    });
    let client = layer()
        .buffer(BufferBody::new(|b| b).read_timeout(Some(Duration::from_secs(5))))
        .layer(inner);
    // A stream the caller keeps open (a bidirectional call, say).
    let mut open = Request::post("https://api.test/chat")
        .body(StreamBody::new(futures_util::stream::pending()))
        .unwrap();
    open.extensions_mut().insert(Unbuffered);
    let started = tokio::time::Instant::now();
    client.oneshot(open).await.unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO, "sent at once, not read");
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Some("Bearer old".parse().unwrap())]
    );
}
