//! `ServiceClient` against real servers on 127.0.0.1 through hyper-util's
//! client: a token endpoint that never answers (or stalls its body; test-util
//! faults) is cut off by the timeout (an outcome-unknown refresh), a refused
//! connection is `NotSent`. Time is
//! paused there, so the timeouts are exact and nothing sleeps for real.
//! Then against the AuthServer in real time: a `BoxCloneService` (not
//! `Sync`) carries a refresh, and the documented placement under a
//! `ConcurrencyLimit(1)` does not deadlock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{error::Error as _, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt, util::BoxCloneService};
use tower_token_refresh::{
    BoxError, DEFAULT_TIMEOUT, ErrorKind, ServiceClient, TimedOut, TokenManager, TokenRefreshLayer,
    TokenSet, TokenSource,
    oauth2::{ClientAuth, HttpClient, NotSent, RefreshTokenGrant, UnreadBody},
};
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer, Fault, Gate, ResourceServer, hyper_client,
};

/// How the token endpoint treats the test's one request.
#[derive(Clone, Copy)]
enum Silence {
    /// Reads the request and never answers.
    NoAnswer,
    /// Answers 200 and one byte of body, then never sends the rest.
    StalledBody,
}

/// test-util's server, silent as asked for the next token request: its
/// address and the server, which counts the token requests it received.
async fn silent_server(silence: Silence) -> (SocketAddr, AuthServer) {
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let fault = match silence {
        // A gate nobody opens.
        Silence::NoAnswer => Fault::Hold(Gate::new()),
        Silence::StalledBody => Fault::StalledBody,
    };
    auth.inject(fault, 1);
    (auth.addr(), auth)
}

fn token_request(addr: SocketAddr) -> Request<Bytes> {
    Request::post(format!("http://{addr}/token"))
        .body(Bytes::from_static(b"grant_type=client_credentials"))
        .unwrap()
}

/// Sends through `client`, failing the test (instead of hanging) if no
/// answer comes within a minute of paused time.
async fn send_bounded(
    client: &impl HttpClient,
    request: Request<Bytes>,
) -> (Result<http::Response<Bytes>, BoxError>, Duration) {
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(60), client.send(request))
        .await
        .expect("ServiceClient gave up by itself");
    (result, started.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_silent_token_endpoint_times_out_after_the_default_timeout() {
    let (addr, received) = silent_server(Silence::NoAnswer).await;
    let client = ServiceClient::new(hyper_client());
    let (result, took) = send_bounded(&client, token_request(addr)).await;
    let err = result.unwrap_err();
    let timed_out = err.downcast_ref::<TimedOut>().expect("a TimedOut error");
    assert_eq!(timed_out.after(), DEFAULT_TIMEOUT);
    assert_eq!(DEFAULT_TIMEOUT, Duration::from_secs(30));
    assert!(
        took >= DEFAULT_TIMEOUT && took < DEFAULT_TIMEOUT + Duration::from_millis(10),
        "{took:?}"
    );
    // The request had left: this is not a "not sent" failure.
    assert_eq!(received.stats().token_requests, 1);
    assert!(!err.is::<NotSent>());
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stops_coming_is_cut_off_by_the_same_timeout() {
    let (addr, received) = silent_server(Silence::StalledBody).await;
    let timeout = Duration::from_secs(3);
    let client = ServiceClient::new(hyper_client()).timeout(timeout);
    let (result, took) = send_bounded(&client, token_request(addr)).await;
    let err = result.unwrap_err();
    // The head had arrived: an answer whose body the timeout cut.
    let unread = err.downcast_ref::<UnreadBody>().expect("an UnreadBody");
    assert_eq!(unread.status(), 200);
    assert!(
        unread.source().is_some_and(|e| e.is::<TimedOut>()),
        "{err:?}"
    );
    assert!(took >= timeout && took < timeout + Duration::from_millis(10));
    assert_eq!(received.stats().token_requests, 1);
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_refresh_is_an_unknown_outcome() {
    let (addr, received) = silent_server(Silence::NoAnswer).await;
    let grant = RefreshTokenGrant::new(
        format!("http://{addr}/token").parse().unwrap(),
        ClientAuth::basic("id", "secret"),
        ServiceClient::new(hyper_client()).timeout(Duration::from_secs(2)),
    );
    let current = TokenSet::bearer("old").with_refresh_token("rt-1");
    let err = tokio::time::timeout(Duration::from_secs(60), grant.fetch(Some(&current)))
        .await
        .expect("the grant gave up by itself")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(err.is_outcome_unknown(), "{err:?}");
    let cause = std::error::Error::source(&err).expect("the transport error");
    assert!(cause.is::<TimedOut>(), "{cause:?}");
    assert_eq!(received.stats().token_requests, 1);
}

#[tokio::test]
async fn a_refused_connection_is_not_sent() {
    // A port that was just free: nothing listens there now.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = ServiceClient::new(hyper_client());
    let err = client.send(token_request(closed)).await.unwrap_err();
    assert!(err.is::<NotSent>(), "{err:?}");

    let grant = RefreshTokenGrant::new(
        format!("http://{closed}/token").parse().unwrap(),
        ClientAuth::basic("id", "secret"),
        client,
    );
    let current = TokenSet::bearer("old").with_refresh_token("rt-1");
    let err = grant.fetch(Some(&current)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(!err.is_outcome_unknown(), "{err:?}");
}

/// hyper-util's client behind a `BoxCloneService`, which is `Send` but not
/// `Sync`.
type Boxed = BoxCloneService<Request<Full<Bytes>>, Response<Incoming>, BoxError>;

fn boxed_client() -> Boxed {
    BoxCloneService::new(
        ServiceBuilder::new()
            .map_err(BoxError::from)
            .service(hyper_client()),
    )
}

#[tokio::test]
async fn a_box_clone_service_carries_a_real_refresh() {
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let login = auth.login();
    let grant = RefreshTokenGrant::new(
        auth.token_url().parse().unwrap(),
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        ServiceClient::new(boxed_client()),
    );
    let tokens = TokenManager::builder(grant)
        .initial(login.token_set())
        .build();
    tokens.refresh().await.unwrap();
    assert_eq!(auth.stats().refresh_grants, 1);
    let refreshed = tokens.current().unwrap();
    assert_ne!(refreshed.access_token().secret(), login.access_token);
    assert!(auth.is_access_token_valid(refreshed.access_token().secret()));
}

#[tokio::test]
async fn a_concurrency_limit_of_one_on_the_layered_stack_does_not_deadlock_a_refresh() {
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(Duration::from_secs(3600)))
        .await
        .unwrap();
    let api = ResourceServer::start(&auth).await.unwrap();
    let http = hyper_client();
    // The recommended placement: the token endpoint gets the plain client,
    // the limit wraps the layered stack only.
    let grant = RefreshTokenGrant::new(
        auth.token_url().parse().unwrap(),
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        ServiceClient::new(http.clone()),
    );
    let tokens = TokenManager::builder(grant)
        .initial(auth.login().token_set())
        .build();
    let layer = TokenRefreshLayer::new(tokens)
        .allow_origin(format!("http://{}", api.addr()).parse().unwrap());
    let stack = ServiceBuilder::new()
        .concurrency_limit(1)
        .layer(layer)
        .service(http);
    // The server forgets the token: the first request meets a 401 and
    // waits for the refresh holding the only permit; the others wait for
    // the permit, then go with the new token.
    auth.expire_access_tokens();
    let requests = (0..3).map(|_| {
        let request = Request::get(api.url("/api/data"))
            .body(Full::default())
            .unwrap();
        stack.clone().oneshot(request)
    });
    let responses = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::future::join_all(requests),
    )
    .await
    .expect("the refresh waited for the permit its request holds");
    for response in responses {
        assert_eq!(response.unwrap().status(), http::StatusCode::OK);
    }
    assert_eq!(auth.stats().refresh_grants, 1);
}
