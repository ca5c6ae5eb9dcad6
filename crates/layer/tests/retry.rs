//! The server-error retry policy against real servers on 127.0.0.1, and its
//! composition with the token layer. The resource server has no 5xx fault,
//! so a `Flaky` service in front of the hyper client passes each request on
//! to it and turns the first answers into 503s (or 429s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header::RETRY_AFTER};
use http_body_util::Full;
use hyper::body::Incoming;
use support::*;
use tower::{Layer, Service, ServiceBuilder, retry::budget::TpsBudget};
use tower_token_refresh::{
    ErrorKind, TokenManager, TokenRefreshLayer,
    retry::{IDEMPOTENCY_KEY, ServerErrorRetry},
};
use tower_token_refresh_test_util::{Fault, hyper_client};

/// Forwards every request to the real server and counts it; the first
/// `failures` answers are replaced by `status` (with `Retry-After` if set).
/// With `refresh` set, a failing attempt first refreshes the token, as
/// another task of the application might meanwhile.
#[derive(Clone)]
struct Flaky {
    inner: Http,
    attempts: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
    status: StatusCode,
    retry_after: Option<HeaderValue>,
    refresh: Option<TokenManager>,
}

impl Flaky {
    fn new(failures: usize) -> Self {
        Flaky {
            inner: hyper_client(),
            attempts: Arc::default(),
            failures: Arc::new(AtomicUsize::new(failures)),
            status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: None,
            refresh: None,
        }
    }

    fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Service<Request<Full<Bytes>>> for Flaky {
    type Response = Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let fail = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let future = self.inner.call(request);
        let (status, retry_after, refresh) =
            (self.status, self.retry_after.clone(), self.refresh.clone());
        Box::pin(async move {
            let mut response = future.await?;
            if fail {
                if let Some(tokens) = refresh {
                    tokens.refresh().await.unwrap();
                }
                *response.status_mut() = status;
                if let Some(after) = retry_after {
                    response.headers_mut().insert(RETRY_AFTER, after);
                }
            }
            Ok(response)
        })
    }
}

fn scoped(w: &World) -> TokenRefreshLayer {
    TokenRefreshLayer::new(w.tokens.clone()).allow_origin(origin_of(w.api.addr()))
}

fn get(w: &World, path: &str) -> Request<Full<Bytes>> {
    Request::get(w.api.url(path)).body(Full::default()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn outside_the_token_layer_a_retry_carries_the_token_refreshed_in_between() {
    let w = world(|b| b).await;
    let mut flaky = Flaky::new(1);
    flaky.refresh = Some(w.tokens.clone());
    let client = ServiceBuilder::new()
        .layer(ServerErrorRetry::new().seed(1).into_layer())
        .layer(scoped(&w))
        .service(flaky.clone());

    let response = send(&client, get(&w, "/api/data")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(flaky.attempts(), 2);
    let new = w
        .tokens
        .current()
        .unwrap()
        .access_token()
        .secret()
        .to_owned();
    assert_ne!(new, w.login.access_token);
    assert_eq!(
        w.api.requests_with(&w.login.access_token),
        1,
        "first attempt"
    );
    assert_eq!(
        w.api.requests_with(&new),
        1,
        "the retry carries the new token"
    );
    assert_eq!(w.auth.stats().refresh_grants, 1);
}

/// Why the order matters: inside the token layer the retry resends the
/// header of the first attempt.
#[tokio::test(start_paused = true)]
async fn inside_the_token_layer_a_retry_would_resend_the_stale_token() {
    let w = world(|b| b).await;
    let mut flaky = Flaky::new(1);
    flaky.refresh = Some(w.tokens.clone());
    let client = ServiceBuilder::new()
        .layer(scoped(&w))
        .layer(ServerErrorRetry::new().seed(1).into_layer())
        .service(flaky.clone());

    let response = send(&client, get(&w, "/api/data")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let new = w
        .tokens
        .current()
        .unwrap()
        .access_token()
        .secret()
        .to_owned();
    assert_eq!(w.api.requests_with(&w.login.access_token), 2);
    assert_eq!(w.api.requests_with(&new), 0);
}

#[tokio::test(start_paused = true)]
async fn at_most_three_retries_with_bounded_backoff_then_the_503_is_returned() {
    let w = world(|b| b).await;
    let flaky = Flaky::new(usize::MAX);
    let client = ServiceBuilder::new()
        .layer(ServerErrorRetry::new().seed(7).into_layer())
        .layer(scoped(&w))
        .service(flaky.clone());

    let started = tokio::time::Instant::now();
    let response = send(&client, get(&w, "/api/data")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(flaky.attempts(), 4, "one attempt and three retries");
    assert_eq!(w.api.stats().requests, 4);
    // Full jitter under 100 ms, 200 ms, 400 ms.
    assert!(
        started.elapsed() <= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
}

/// One GET to `flaky` through the default `ServerErrorRetry`, outside the
/// token layer: the answer, and how long it took in tokio's time.
async fn timed_get(w: &World, flaky: &Flaky) -> (Response<Bytes>, Duration) {
    let client = ServiceBuilder::new()
        .layer(ServerErrorRetry::new().into_layer())
        .layer(scoped(w))
        .service(flaky.clone());
    let started = tokio::time::Instant::now();
    let response = send(&client, get(w, "/api/data")).await.unwrap();
    (response, started.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_429_waits_out_retry_after_unless_it_is_too_long() {
    let w = world(|b| b).await;
    let mut flaky = Flaky::new(1);
    flaky.status = StatusCode::TOO_MANY_REQUESTS;
    flaky.retry_after = Some(HeaderValue::from_static("7"));
    let (response, waited) = timed_get(&w, &flaky).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(flaky.attempts(), 2);
    assert!(
        waited >= Duration::from_secs(7) && waited < Duration::from_secs(8),
        "{waited:?}"
    );

    let mut flaky = Flaky::new(1);
    flaky.status = StatusCode::TOO_MANY_REQUESTS;
    flaky.retry_after = Some(HeaderValue::from_static("3600"));
    let (response, waited) = timed_get(&w, &flaky).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[RETRY_AFTER], "3600");
    assert_eq!(flaky.attempts(), 1, "an hour is longer than we wait");
    assert!(waited < Duration::from_secs(1));
}

/// An HTTP-date is as good as seconds (RFC 9110 §10.2.3). It is read
/// against the wall clock, which tokio's paused clock does not stop, and to
/// the second: 30 s ahead names a moment 29 to 30 s away.
#[tokio::test(start_paused = true)]
async fn a_503_waits_until_the_http_date_of_its_retry_after() {
    let w = world(|b| b).await;
    let mut flaky = Flaky::new(1);
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
    flaky.retry_after = Some(HeaderValue::from_str(&date).unwrap());
    let (response, waited) = timed_get(&w, &flaky).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(flaky.attempts(), 2);
    assert!(
        waited > Duration::from_secs(28) && waited <= Duration::from_secs(30),
        "{waited:?} for {date}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_post_is_retried_only_with_an_idempotency_key_or_when_opted_in() {
    let w = world(|b| b).await;
    let post = |key: Option<&str>| {
        let mut r = Request::post(w.api.url("/api/echo"));
        if let Some(key) = key {
            r = r.header(IDEMPOTENCY_KEY, key);
        }
        r.body(Full::new(Bytes::from_static(b"order #1"))).unwrap()
    };
    let cases = [
        (
            ServerErrorRetry::new(),
            None,
            1,
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (ServerErrorRetry::new(), Some("k-1"), 2, StatusCode::OK),
        (
            ServerErrorRetry::new().retry_non_idempotent(true),
            None,
            2,
            StatusCode::OK,
        ),
    ];
    for (policy, key, attempts, status) in cases {
        let flaky = Flaky::new(1);
        let client = ServiceBuilder::new()
            .layer(policy.into_layer())
            .layer(scoped(&w))
            .service(flaky.clone());
        let response = send(&client, post(key)).await.unwrap();
        assert_eq!(response.status(), status, "{key:?}");
        assert_eq!(flaky.attempts(), attempts, "{key:?}");
        if status == StatusCode::OK {
            assert_eq!(response.body().as_ref(), b"order #1");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_retried_then_its_error_returned() {
    let w = world(|b| b).await;
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let flaky = Flaky::new(0);
    let client = ServiceBuilder::new()
        .layer(ServerErrorRetry::new().seed(3).into_layer())
        .layer(TokenRefreshLayer::new(w.tokens.clone()).allow_origin(origin_of(dead_addr)))
        .service(flaky.clone());
    let request = Request::get(format!("http://{dead_addr}/api/data"))
        .body(Full::default())
        .unwrap();
    let err = send(&client, request).await.unwrap_err();
    assert!(
        session_error(&err).is_none(),
        "the transport's error: {err}"
    );
    assert!(
        err.downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(|e| e.is_connect()),
        "{err:?}"
    );
    assert_eq!(flaky.attempts(), 4);
}

#[tokio::test(start_paused = true)]
async fn an_expired_session_is_not_retried() {
    let w = world(|b| b).await;
    w.auth.expire_access_tokens();
    w.auth.inject(Fault::InvalidGrant, 1);
    let flaky = Flaky::new(0);
    let client = ServiceBuilder::new()
        .layer(ServerErrorRetry::new().into_layer())
        .layer(scoped(&w))
        .service(flaky.clone());
    // The first attempt is sent with the (expired) token; the 401 refreshes,
    // the refresh ends the session, and that error is final.
    let err = send(&client, get(&w, "/api/data")).await.unwrap_err();
    assert_eq!(
        session_error(&err).unwrap().kind(),
        ErrorKind::SessionExpired
    );
    assert_eq!(flaky.attempts(), 1);
    assert_eq!(w.auth.stats().token_requests, 1);
    let err = send(&client, get(&w, "/api/data")).await.unwrap_err();
    assert!(session_error(&err).unwrap().is_session_expired());
    assert_eq!(flaky.attempts(), 1, "fails fast, nothing sent");
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_stops_a_retry_storm() {
    let w = world(|b| b).await;
    let flaky = Flaky::new(usize::MAX);
    // Three retries a second in reserve, none earned by requests.
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(1), 3, 0.0));
    let policy = ServerErrorRetry::new()
        .backoff(Duration::ZERO, Duration::ZERO)
        .budget(budget);
    let client = policy.into_layer().layer(scoped(&w).layer(flaky.clone()));
    for _ in 0..50 {
        let response = send(&client, get(&w, "/api/data")).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    // Without the budget: 50 × 4 = 200 attempts.
    assert_eq!(flaky.attempts(), 53);
}
