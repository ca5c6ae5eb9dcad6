//! The layer's behaviours, each against real servers on 127.0.0.1 through
//! hyper-util's client, unless a unit service is clearer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    convert::Infallible,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use support::*;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_token_refresh::{
    ErrorKind, ServiceClient, TokenManager, TokenRefreshLayer,
    oauth2::{ClientAuth, RefreshTokenGrant},
};
use tower_token_refresh_test_util::{AuthConfig, AuthServer, Fault, Gate, hyper_client};

#[tokio::test]
async fn fresh_token_is_attached_and_nothing_is_refreshed() {
    let w = world(|b| b).await;
    for _ in 0..3 {
        let response = w.get("/api/data").await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(w.api.requests_with(&w.login.access_token), 3);
    assert_eq!(w.auth.stats().token_requests, 0);
    assert_eq!(w.tokens.stats().refreshes_started, 0);
}

/// Every request goes out with the same rejected token before the one
/// refresh may finish (the token endpoint holds it until then).
async fn rejected_together(n: usize) {
    let w = world(|b| b).await;
    let gate = w.auth.expire_and_hold_refresh();
    let tasks: Vec<_> = (0..n).map(|_| w.spawn_get("/api/data")).collect();
    until("every first attempt was rejected", || {
        w.api.stats().rejected == n as u64
    })
    .await;
    gate.open();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    assert_eq!(w.auth.stats().refresh_grants, 1, "{n} requests");
    assert_eq!(w.auth.stats().token_requests, 1);
    assert_eq!(w.api.requests_with(&w.login.access_token), n as u64);
    assert_eq!(w.tokens.stats().replays, n as u64);
}

#[tokio::test]
async fn three_concurrent_rejections_share_one_refresh() {
    rejected_together(3).await;
}

#[tokio::test]
async fn a_hundred_concurrent_rejections_share_one_refresh() {
    rejected_together(100).await;
}

/// 10,000 sockets would need more file descriptors than a default machine
/// gives, so the resource is an in-process service that checks tokens with
/// the real authorization server; the refresh is a real HTTP call. A
/// barrier holds every first attempt until all 10,000 were sent with the
/// expired token.
#[tokio::test]
async fn ten_thousand_concurrent_rejections_share_one_refresh() {
    const N: usize = 10_000;
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(HOUR))
        .await
        .unwrap();
    let login = auth.login();
    let tokens = TokenManager::builder(grant(&auth, hyper_client()))
        .initial(login.token_set())
        .build();
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let first_attempts = Arc::new(AtomicUsize::new(0));
    let resource = service_fn({
        let auth = auth.clone();
        let old = format!("Bearer {}", login.access_token);
        let barrier = barrier.clone();
        let first_attempts = first_attempts.clone();
        move |req: Request<Full<Bytes>>| {
            let auth = auth.clone();
            let barrier = barrier.clone();
            let sent = req.headers()[header::AUTHORIZATION]
                .to_str()
                .unwrap()
                .to_owned();
            let first = sent == old;
            if first {
                first_attempts.fetch_add(1, Ordering::SeqCst);
            }
            async move {
                if first {
                    barrier.wait().await;
                }
                let token = sent.strip_prefix("Bearer ").unwrap_or_default();
                let mut response = Response::new(());
                if !auth.is_access_token_valid(token) {
                    *response.status_mut() = StatusCode::UNAUTHORIZED;
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        http::HeaderValue::from_static(r#"Bearer error="invalid_token""#),
                    );
                }
                Ok::<_, Infallible>(response)
            }
        }
    });
    let client = TokenRefreshLayer::new(tokens.clone())
        .allow_origin("http://127.0.0.1".parse().unwrap())
        .layer(resource);
    auth.expire_access_tokens();
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .oneshot(
                        Request::get("http://127.0.0.1/")
                            .body(Full::default())
                            .unwrap(),
                    )
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    assert_eq!(first_attempts.load(Ordering::SeqCst), N);
    assert_eq!(auth.stats().refresh_grants, 1);
    assert_eq!(tokens.stats().refreshes_started, 1);
    assert_eq!(tokens.stats().replays, N as u64);
}

/// A latch: requests wait at it until it opens; it counts who arrived.
#[derive(Clone)]
struct Latch {
    open: Arc<tokio::sync::Semaphore>,
    arrived: Arc<AtomicUsize>,
}

impl Default for Latch {
    fn default() -> Self {
        Latch {
            open: Arc::new(tokio::sync::Semaphore::new(0)),
            arrived: Arc::default(),
        }
    }
}

impl Latch {
    async fn wait(&self) {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        // Closing the semaphore is the signal; it never has permits.
        let _ = self.open.acquire().await;
    }

    fn open(&self) {
        self.open.close();
    }

    fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_late_rejection_of_an_older_generation_replays_without_refreshing() {
    let w = world(|b| b).await;
    // A client whose marked request is held on its way to the server.
    let latch = Latch::default();
    let http = hyper_client();
    let held = service_fn({
        let latch = latch.clone();
        move |req: Request<Full<Bytes>>| {
            let http = http.clone();
            let latch = latch.clone();
            async move {
                if req.headers().contains_key("x-hold") {
                    latch.wait().await;
                }
                http.request(req).await
            }
        }
    });
    let client = TokenRefreshLayer::new(w.tokens.clone())
        .allow_origin(origin_of(w.api.addr()))
        .layer(held);
    let late = tokio::spawn({
        let client = client.clone();
        let url = w.api.url("/api/data");
        async move {
            let req = Request::get(url)
                .header("x-hold", "1")
                .body(Full::default())
                .unwrap();
            send(&client, req).await
        }
    });
    until("the old-token request is in flight", || {
        latch.arrived() == 1
    })
    .await;
    // Meanwhile the token is rejected elsewhere and refreshed.
    let before = w.tokens.generation();
    w.auth.expire_access_tokens();
    w.tokens.refresh().await.unwrap();
    assert_eq!(w.tokens.generation(), before + 1);
    latch.open();
    let response = late.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        w.auth.stats().refresh_grants,
        1,
        "only the refresh made above"
    );
    assert_eq!(w.tokens.stats().replays, 1);
    assert_eq!(w.api.requests_with(&w.login.access_token), 1);
}

#[tokio::test]
async fn a_rejection_while_a_refresh_is_in_flight_joins_it() {
    let w = world(|b| b).await;
    let gate = w.auth.expire_and_hold_refresh();
    let first = w.spawn_get("/api/data");
    w.until_token_requests(1).await;
    // This request is rejected while that refresh is in flight.
    let second = w.spawn_get("/api/data");
    until("the second request was rejected", || {
        w.api.stats().rejected == 2
    })
    .await;
    gate.open();
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(second.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(w.auth.stats().token_requests, 1);
    assert_eq!(w.tokens.stats().refreshes_started, 1);
    assert_eq!(w.tokens.stats().replays, 2);
}

#[tokio::test]
async fn a_token_the_resource_still_rejects_comes_back_after_one_replay() {
    let w = world(|b| b).await;
    let response = w.get("/api/always-401").await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(w.auth.stats().refresh_grants, 1);
    assert_eq!(w.tokens.stats().replays, 1);
    assert_eq!(
        w.api.stats().requests,
        2,
        "the original and one replay, no loop"
    );
}

#[tokio::test]
async fn invalid_grant_expires_the_session_for_every_waiter() {
    let hook_calls = Arc::new(AtomicUsize::new(0));
    let w = world({
        let hook_calls = hook_calls.clone();
        move |b| {
            b.on_session_expired(move || {
                hook_calls.fetch_add(1, Ordering::SeqCst);
            })
        }
    })
    .await;
    let gate = w.auth.expire_and_hold_refresh();
    w.auth.inject(Fault::InvalidGrant, 1);
    // The held request is the refresh; the InvalidGrant answers it after
    // the hold (faults queue one per request, so hold, then refuse).
    let tasks: Vec<_> = (0..20).map(|_| w.spawn_get("/api/data")).collect();
    until("all 20 were rejected", || w.api.stats().rejected == 20).await;
    gate.open();
    for t in tasks {
        let err = t.await.unwrap().unwrap_err();
        let err = session_error(&err).expect("a tower_token_refresh::Error");
        assert!(err.is_session_expired(), "{err}");
    }
    assert_eq!(hook_calls.load(Ordering::SeqCst), 1);
    assert_eq!(w.tokens.stats().sessions_expired, 1);
    // Later requests fail at once, without touching the network.
    let (api_before, auth_before) = (w.api.stats().requests, w.auth.stats().token_requests);
    for _ in 0..5 {
        let err = w.get("/api/data").await.unwrap_err();
        assert!(session_error(&err).unwrap().is_session_expired());
    }
    assert_eq!(w.api.stats().requests, api_before);
    assert_eq!(w.auth.stats().token_requests, auth_before);
    assert_eq!(hook_calls.load(Ordering::SeqCst), 1);
    // Setting new tokens recovers.
    w.tokens.set(w.auth.login().token_set()).await.unwrap();
    assert_eq!(w.get("/api/data").await.unwrap().status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn transient_refresh_failures_back_off_then_fail_then_recover() {
    let w = world(|b| {
        b.max_attempts(3)
            .backoff(Duration::from_millis(200), Duration::from_secs(2))
    })
    .await;
    w.auth.expire_access_tokens();
    w.auth.inject(Fault::TemporarilyUnavailable, 1);
    w.auth.inject(Fault::Status(503), 1);
    w.auth.inject(Fault::Html502, 1);
    let started = tokio::time::Instant::now();
    let err = w.get("/api/data").await.unwrap_err();
    let err = session_error(&err).expect("a typed refresh error");
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert_eq!(w.auth.stats().token_requests, 3, "bounded by max_attempts");
    // Two backoffs, each at most 200 ms then 400 ms (full jitter).
    assert!(
        started.elapsed() <= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    // The server is back: the next request refreshes and succeeds.
    let response = w.get("/api/data").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(w.auth.stats().refresh_grants, 1);
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_to_the_token_endpoint_is_a_transient_error() {
    // A port nothing listens on.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/token", dead.local_addr().unwrap());
    drop(dead);
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(HOUR))
        .await
        .unwrap();
    let api = tower_token_refresh_test_util::ResourceServer::start(&auth)
        .await
        .unwrap();
    let grant = RefreshTokenGrant::new(
        dead_url.parse().unwrap(),
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        ServiceClient::new(hyper_client()),
    );
    let tokens = TokenManager::builder(grant)
        .initial(auth.login().token_set())
        .max_attempts(4)
        .build();
    let client = TokenRefreshLayer::new(tokens.clone())
        .allow_origin(origin_of(api.addr()))
        .layer(hyper_client());
    auth.expire_access_tokens();
    let err = send(
        &client,
        Request::get(api.url("/api/data"))
            .body(Full::default())
            .unwrap(),
    )
    .await
    .unwrap_err();
    let err = session_error(&err).unwrap();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(err.message().contains("4 attempts"), "{err}");
    assert!(
        std::error::Error::source(err).is_some(),
        "the cause is kept"
    );
    assert_eq!(tokens.stats().attempts, 4);
    // Not stuck: new credentials work at once.
    tokens.set(auth.login().token_set()).await.unwrap();
    let ok = send(
        &client,
        Request::get(api.url("/api/data"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(ok.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn a_dropped_caller_does_not_abandon_a_rotating_refresh() {
    let w = world(|b| b).await;
    let gate = w.auth.expire_and_hold_refresh();
    let caller = w.spawn_get("/api/data");
    w.until_token_requests(1).await;
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    gate.open();
    until("the refresh finished", || {
        w.tokens.stats().refreshes_succeeded == 1
    })
    .await;
    let rotated = w.tokens.current().unwrap();
    assert_ne!(
        rotated.refresh_token().unwrap().secret(),
        w.login.refresh_token
    );
    // The next request uses the new token; the next refresh the rotated
    // refresh token, which the server accepts (no reuse).
    assert_eq!(w.get("/api/data").await.unwrap().status(), StatusCode::OK);
    w.tokens.refresh().await.unwrap();
    let stats = w.auth.stats();
    assert_eq!(stats.refresh_grants, 2);
    assert_eq!(stats.reuse_detected, 0);
    assert_eq!(stats.invalid_grant, 0);
}

#[tokio::test(start_paused = true)]
async fn inside_the_refresh_ahead_window_requests_go_at_once_while_one_refresh_runs() {
    let w = world_with(
        AuthConfig::default().access_lifetime(Duration::from_secs(100)),
        |b| {
            b.refresh_ahead(Duration::from_secs(20))
                .expiry_leeway(Duration::from_secs(5))
                .refresh_jitter(0.0)
        },
    )
    .await;
    let gate = Gate::new();
    w.auth.inject(Fault::Hold(gate.clone()), 1);
    tokio::time::advance(Duration::from_secs(81)).await;
    for _ in 0..10 {
        assert_eq!(w.get("/api/data").await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(
        w.api.requests_with(&w.login.access_token),
        10,
        "old token, no waiting"
    );
    assert_eq!(w.auth.stats().token_requests, 1, "one background refresh");
    gate.open();
    until("the background refresh finished", || {
        w.tokens.stats().refreshes_succeeded == 1
    })
    .await;
    assert_eq!(w.get("/api/data").await.unwrap().status(), StatusCode::OK);
    assert_eq!(w.api.requests_with(&w.login.access_token), 10);
    assert_eq!(w.auth.stats().refresh_grants, 1);
}

#[tokio::test(start_paused = true)]
async fn past_expiry_requests_wait_for_the_refresh() {
    let w = world_with(
        AuthConfig::default().access_lifetime(Duration::from_secs(100)),
        |b| {
            b.refresh_ahead(Duration::ZERO)
                .expiry_leeway(Duration::from_secs(5))
        },
    )
    .await;
    let gate = Gate::new();
    w.auth.inject(Fault::Hold(gate.clone()), 1);
    tokio::time::advance(Duration::from_secs(96)).await;
    let waiting = w.spawn_get("/api/data");
    w.until_token_requests(1).await;
    assert_eq!(
        w.api.stats().requests,
        0,
        "nothing sent with the expiring token"
    );
    gate.open();
    assert_eq!(waiting.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(w.api.stats().rejected, 0);
    assert_eq!(w.api.requests_with(&w.login.access_token), 0);
}

#[tokio::test]
async fn a_post_body_is_replayed_byte_identical() {
    let w = world(|b| b).await;
    w.auth.expire_access_tokens();
    let body: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let request = Request::post(w.api.url("/api/echo"))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let response = send(&w.client, request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body().as_ref(), &body[..]);
    assert_eq!(w.tokens.stats().replays, 1);
    assert_eq!(w.api.stats().requests, 2);
}

#[tokio::test]
async fn a_streaming_body_is_sent_once_and_its_401_returned() {
    type Stream = http_body_util::StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<http_body::Frame<Bytes>, Infallible>>>,
    >;
    type Body = http_body_util::Either<Full<Bytes>, Stream>;
    let w = world(|b| b).await;
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Body>();
    let mut client = TokenRefreshLayer::new(w.tokens.clone())
        .allow_origin(origin_of(w.api.addr()))
        .layer(http);
    w.auth.expire_access_tokens();
    let frames = vec![Ok(http_body::Frame::data(Bytes::from_static(b"chunk")))];
    let streaming = Request::post(w.api.url("/api/echo"))
        .body(http_body_util::Either::Right(
            http_body_util::StreamBody::new(futures_util::stream::iter(frames)),
        ))
        .unwrap();
    let response = client.ready().await.unwrap().call(streaming).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(w.api.stats().requests, 1, "sent once");
    assert_eq!(w.tokens.stats().replays, 0);
    // The 401 still started a refresh, so the next request goes out fresh.
    until("the refresh finished", || {
        w.tokens.stats().refreshes_succeeded == 1
    })
    .await;
    let full = Request::post(w.api.url("/api/echo"))
        .body(http_body_util::Either::Left(Full::new(Bytes::from_static(
            b"x",
        ))))
        .unwrap();
    let response = client.ready().await.unwrap().call(full).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "x"
    );
    assert_eq!(w.auth.stats().refresh_grants, 1);
}

#[tokio::test]
async fn insufficient_scope_does_not_refresh() {
    let w = world(|b| b).await;
    let response = w.get("/api/admin").await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(w.auth.stats().token_requests, 0);
    assert_eq!(w.tokens.stats().replays, 0);
    assert_eq!(w.api.stats().requests, 1);
}

#[tokio::test]
async fn the_token_endpoint_called_through_the_same_layered_client_neither_deadlocks_nor_loops() {
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(HOUR))
        .await
        .unwrap();
    let api = tower_token_refresh_test_util::ResourceServer::start(&auth)
        .await
        .unwrap();
    // The grant sends through the very client the layer wraps, with no
    // scope set: only SkipAuth keeps the token request from being
    // intercepted (it would then carry a Bearer header, not the client's
    // Basic credentials, and be refused).
    let layered: Arc<
        OnceLock<
            tower_token_refresh::TokenRefresh<
                Http,
                tower_token_refresh::CloneBody,
                tower_token_refresh::RejectedToken,
            >,
        >,
    > = Arc::new(OnceLock::new());
    let through_layer = {
        let layered = layered.clone();
        move |req: Request<Bytes>| {
            let client = layered.get().cloned();
            async move {
                let client = client.ok_or("client not built yet")?;
                tower_token_refresh::oauth2::HttpClient::send(&ServiceClient::new(client), req)
                    .await
            }
        }
    };
    let grant = RefreshTokenGrant::new(
        auth.token_url().parse().unwrap(),
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        through_layer,
    );
    let tokens = TokenManager::builder(grant)
        .initial(auth.login().token_set())
        .build();
    let client = TokenRefreshLayer::new(tokens.clone())
        .allow_origin(origin_of(api.addr()))
        .layer(hyper_client());
    assert!(layered.set(client.clone()).is_ok());
    auth.expire_access_tokens();
    let response = tokio::time::timeout(
        Duration::from_secs(30),
        send(
            &client,
            Request::get(api.url("/api/data"))
                .body(Full::default())
                .unwrap(),
        ),
    )
    .await
    .expect("no deadlock")
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(auth.stats().token_requests, 1);
    assert_eq!(auth.stats().invalid_client, 0);
    assert_eq!(auth.stats().refresh_grants, 1);
}

#[tokio::test]
async fn a_request_to_an_origin_not_allowed_is_refused_and_never_sent() {
    let w = world(|b| b).await;
    // A second resource on another port: another origin.
    let other = tower_token_refresh_test_util::ResourceServer::start(&w.auth)
        .await
        .unwrap();
    let err = send(
        &w.client,
        Request::get(other.url("/api/data"))
            .body(Full::default())
            .unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(session_error(&err).unwrap().kind(), ErrorKind::Policy);
    assert!(err.to_string().contains("not an allowed origin"), "{err}");
    assert_eq!(other.stats().requests, 0, "never sent");
    assert_eq!(w.auth.stats().token_requests, 0);
}

#[tokio::test]
async fn with_pass_through_requests_to_other_origins_go_without_the_token() {
    let w = world(|b| b).await;
    let other = tower_token_refresh_test_util::ResourceServer::start(&w.auth)
        .await
        .unwrap();
    let client = TokenRefreshLayer::new(w.tokens.clone())
        .allow_origin(origin_of(w.api.addr()))
        .pass_through_other_origins(true)
        .layer(hyper_client());
    let response = send(
        &client,
        Request::get(other.url("/api/data"))
            .body(Full::default())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(other.stats().missing_credentials, 1, "no token sent there");
    assert_eq!(
        w.auth.stats().token_requests,
        0,
        "its 401 is not ours to act on"
    );
}

#[tokio::test]
async fn a_token_over_cleartext_to_a_remote_host_is_refused() {
    let w = world(|b| b).await;
    // Allowed as an origin, and still refused: cleartext to a remote host.
    let mut client = TokenRefreshLayer::new(w.tokens.clone())
        .allow_origin("http://api.example.com".parse().unwrap())
        .layer(service_fn(|_: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(()))
        }));
    let err = client
        .ready()
        .await
        .unwrap()
        .call(
            Request::get("http://api.example.com/")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(session_error(&err).unwrap().kind(), ErrorKind::Policy);
    assert!(err.to_string().contains("cleartext"), "{err}");
}

/// The same single flight on a multi-thread runtime, round after round:
/// each round the server revokes the token and 200 requests from worker
/// threads are all rejected before the one refresh may finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_refresh_per_revocation_on_a_multi_thread_runtime() {
    const ROUNDS: u64 = 10;
    const N: usize = 200;
    let w = world(|b| b.min_refresh_interval(Duration::ZERO)).await;
    for round in 1..=ROUNDS {
        let rejected_before = w.api.stats().rejected;
        let gate = w.auth.expire_and_hold_refresh();
        let tasks: Vec<_> = (0..N).map(|_| w.spawn_get("/api/data")).collect();
        until("every first attempt of the round was rejected", || {
            w.api.stats().rejected - rejected_before == N as u64
        })
        .await;
        gate.open();
        for t in tasks {
            // Once the gate opens, no request may wait past the refresh
            // deadline (20 s by default); in practice they finish at once.
            let response = tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("no request waits past the bound");
            assert_eq!(response.unwrap().unwrap().status(), StatusCode::OK);
        }
        assert_eq!(
            w.auth.stats().refresh_grants,
            round,
            "one refresh per round"
        );
    }
    assert_eq!(w.auth.stats().reuse_detected, 0);
    assert_eq!(w.tokens.stats().replays, ROUNDS * N as u64);
}

/// A token request slower than the attempt timeout is not sent again: with
/// rotation, a second request with the same refresh token would be reuse,
/// and the server would end the session. The client ends it itself, saying
/// why, and never presents the refresh token again.
#[tokio::test(start_paused = true)]
async fn a_slow_rotating_refresh_is_not_sent_twice() {
    let w = world(|b| {
        b.attempt_timeout(Duration::from_secs(1))
            .max_attempts(5)
            .backoff(Duration::from_millis(100), Duration::from_millis(200))
    })
    .await;
    w.auth.expire_access_tokens();
    w.auth.inject(Fault::Delay(Duration::from_secs(3)), 1);
    let err = w.get("/api/data").await.unwrap_err();
    let err = session_error(&err).expect("a typed error");
    assert!(
        err.is_session_expired() && err.is_outcome_unknown(),
        "{err}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(w.get("/api/data").await.is_err());
    let stats = w.auth.stats();
    assert_eq!(stats.token_requests, 1, "presented once");
    assert_eq!(stats.reuse_detected, 0);
}
