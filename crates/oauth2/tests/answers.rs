//! An HTTP status is an answer whatever its body: a token endpoint answer
//! whose body is too large to read (`Fault::OversizedBody`, past
//! `ServiceClient`'s 64 KiB) still tells by its status whether the server
//! spent the refresh token, through the real `RefreshTokenGrant`,
//! `ServiceClient` and `TokenManager` over 127.0.0.1.

// A failed unwrap is a failed test, with the value in the message.
#![allow(clippy::unwrap_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tower_token_refresh::{
    Error, ErrorKind, ServiceClient, TokenManager, TokenSource,
    oauth2::{ClientAuth, ClientCredentialsGrant, RefreshTokenGrant},
};
use tower_token_refresh_test_util::{AuthConfig, AuthServer, Fault, IssuedTokens, hyper_client};

type Http = ServiceClient<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
>;

async fn server() -> (AuthServer, IssuedTokens) {
    // Long-lived access tokens: no background refresh joins in.
    let config = AuthConfig::default().access_lifetime(Duration::from_secs(3600));
    let auth = AuthServer::start(config).await.unwrap();
    let login = auth.login();
    (auth, login)
}

fn grant(auth: &AuthServer) -> RefreshTokenGrant<Http> {
    RefreshTokenGrant::new(
        auth.token_url().parse().unwrap(),
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        ServiceClient::new(hyper_client()),
    )
}

/// A manager of `login` refreshing at `auth` in at most two attempts, and
/// how often its session expired.
fn manager(auth: &AuthServer, login: &IssuedTokens) -> (TokenManager, Arc<AtomicUsize>) {
    let expired = Arc::new(AtomicUsize::new(0));
    let hook = expired.clone();
    let tokens = TokenManager::builder(grant(auth))
        .initial(login.token_set())
        .max_attempts(2)
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .min_refresh_interval(Duration::ZERO)
        .on_session_expired(move || {
            hook.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    (tokens, expired)
}

/// `err` and the errors it wraps.
fn chain(err: &Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err as &(dyn std::error::Error + 'static)), |&e| {
        e.source()
    })
}

#[tokio::test]
async fn a_400_with_a_body_too_large_to_read_does_not_end_the_session() {
    let (auth, login) = server().await;
    let (tokens, expired) = manager(&auth, &login);
    auth.inject(Fault::OversizedBody(400), 2);

    let err = tokens.refresh().await.unwrap_err();
    // As a 400 whose body is no OAuth2 error: the server refused and spent
    // nothing, so the manager tried again (an invalid response is retried).
    assert_eq!(auth.stats().token_requests, 2);
    assert_eq!(err.kind(), ErrorKind::Transient, "{err:?}");
    assert!(
        chain(&err).any(|e| e
            .downcast_ref::<Error>()
            .is_some_and(|e| e.kind() == ErrorKind::InvalidResponse)),
        "{err:?}"
    );
    assert!(!err.is_outcome_unknown(), "{err:?}");
    assert!(!tokens.is_session_expired());
    assert!(auth.is_refresh_token_active(&login.refresh_token));

    // The session goes on: the next answer is read as usual.
    tokens.refresh().await.unwrap();
    assert!(!auth.is_refresh_token_active(&login.refresh_token));
    assert_eq!(expired.load(Ordering::SeqCst), 0);
    assert_eq!(tokens.stats().unanswered_requests, 0);
    assert_eq!(auth.stats().refresh_grants, 1);
}

#[tokio::test]
async fn the_grant_reads_a_400_it_could_not_read_as_an_answer_not_a_lost_request() {
    let (auth, login) = server().await;
    auth.inject(Fault::OversizedBody(400), 1);
    let err = grant(&auth)
        .fetch(Some(&login.token_set()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{err:?}");
    assert!(!err.is_outcome_unknown(), "{err:?}");
    assert!(auth.is_refresh_token_active(&login.refresh_token));
}

#[tokio::test]
async fn a_503_with_a_body_too_large_to_read_is_transient_and_retried() {
    let (auth, login) = server().await;
    let (tokens, expired) = manager(&auth, &login);
    auth.inject(Fault::OversizedBody(503), 1);

    tokens.refresh().await.unwrap();
    let stats = auth.stats();
    assert_eq!((stats.token_requests, stats.refresh_grants), (2, 1));
    assert_eq!(tokens.stats().unanswered_requests, 0);
    assert_eq!(expired.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_grant_calls_a_503_it_could_not_read_transient_not_outcome_unknown() {
    let (auth, login) = server().await;
    auth.inject(Fault::OversizedBody(503), 1);
    let err = grant(&auth)
        .fetch(Some(&login.token_set()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err:?}");
    assert!(!err.is_outcome_unknown(), "{err:?}");
}

#[tokio::test]
async fn a_200_with_a_body_too_large_to_read_leaves_the_outcome_unknown() {
    let (auth, login) = server().await;
    let (tokens, expired) = manager(&auth, &login);
    auth.inject(Fault::OversizedBody(200), 1);

    let err = tokens.refresh().await.unwrap_err();
    // The server rotated the refresh token in an answer we could not read.
    assert!(err.is_outcome_unknown(), "{err:?}");
    assert!(!auth.is_refresh_token_active(&login.refresh_token));
    assert_eq!(auth.stats().refresh_grants, 1);
    // A rotating server may have spent it: the session ends rather than
    // present it again.
    assert!(tokens.is_session_expired());
    assert_eq!(expired.load(Ordering::SeqCst), 1);
    assert_eq!(tokens.stats().unanswered_requests, 1);
    assert!(
        chain(&err).any(|e| e
            .downcast_ref::<Error>()
            .is_some_and(|e| e.kind() == ErrorKind::InvalidResponse)),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_grant_says_a_200_it_could_not_read_may_have_rotated_the_refresh_token() {
    let (auth, login) = server().await;
    auth.inject(Fault::OversizedBody(200), 1);
    let err = grant(&auth)
        .fetch(Some(&login.token_set()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{err:?}");
    assert!(err.is_outcome_unknown(), "{err:?}");
    assert!(err.message().contains("refresh token"), "{err}");
}

#[tokio::test]
async fn a_200_too_large_to_read_without_a_refresh_token_is_not_outcome_unknown() {
    let (auth, _) = server().await;
    auth.inject(Fault::OversizedBody(200), 1);
    let grant = ClientCredentialsGrant::new(
        auth.token_url().parse().unwrap(),
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        ServiceClient::new(hyper_client()),
    );
    let err = grant.fetch(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{err:?}");
    assert!(!err.is_outcome_unknown(), "{err:?}");
}

#[tokio::test]
async fn a_client_that_reads_more_reads_the_padded_token_response() {
    let (auth, login) = server().await;
    auth.inject(Fault::OversizedBody(200), 1);
    let grant = RefreshTokenGrant::new(
        auth.token_url().parse().unwrap(),
        ClientAuth::basic(auth.client_id(), auth.client_secret()),
        ServiceClient::new(hyper_client()).max_body(128 * 1024),
    );
    let tokens = grant.fetch(Some(&login.token_set())).await.unwrap();
    let rotated = tokens.refresh_token().unwrap().secret().to_owned();
    assert!(auth.is_refresh_token_active(&rotated));
}
