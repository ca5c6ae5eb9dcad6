//! Against a real rotating authorization server (reuse detection on, as
//! RFC 9700 §4.14.2 asks): slow, hung and odd token answers never make the
//! client present a spent refresh token, and never wedge it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use http::StatusCode;
use support::{HOUR, session_error, world, world_with};
use tower_token_refresh::{
    Rotation, TokenManager, TokenManagerBuilder, TokenSet, TokenSource, source,
};
use tower_token_refresh_test_util::{AuthConfig, AuthServer, Fault, Gate, hyper_client};

fn defaults(b: TokenManagerBuilder) -> TokenManagerBuilder {
    b
}

#[tokio::test(start_paused = true)]
async fn a_token_answer_slower_than_the_attempt_ends_the_session_without_reuse() {
    let w = world(defaults).await;
    // Answers after 45 s: past the attempt (30 s).
    w.auth.inject(Fault::Delay(Duration::from_secs(45)), 1);
    let err = w.tokens.refresh().await.unwrap_err();
    assert!(
        err.is_session_expired() && err.is_outcome_unknown(),
        "{err}"
    );
    // Later requests fail fast, typed, and never go to the token endpoint.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let err = w.get("/products").await.unwrap_err();
    assert!(session_error(&err).is_some_and(|e| e.is_session_expired()));
    let stats = w.auth.stats();
    assert_eq!(stats.token_requests, 1);
    assert_eq!(stats.reuse_detected, 0);
}

#[tokio::test(start_paused = true)]
async fn a_token_endpoint_that_never_answers_does_not_wedge_a_client_of_a_non_rotating_server() {
    let w = world_with(
        AuthConfig::default().access_lifetime(HOUR).rotation(false),
        |b| b.rotation(Rotation::Never),
    )
    .await;
    let _never_opened = Gate::new();
    w.auth.inject(Fault::Hold(_never_opened.clone()), 1);
    let auth = w.tokens.refresh().await.unwrap();
    assert!(auth.generation() > 1);
    let stats = w.auth.stats();
    assert_eq!(stats.token_requests, 2, "the held request, then a new one");
    assert_eq!(stats.refresh_grants, 1);
    assert_eq!(stats.reuse_detected, 0);
    assert_eq!(w.get("/api/data").await.unwrap().status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn writing_back_the_current_set_during_a_refresh_keeps_the_rotated_refresh_token() {
    let w = world(|b| b.min_refresh_interval(Duration::ZERO)).await;
    w.auth.inject(Fault::Delay(Duration::from_secs(1)), 1);
    let refresh = w.tokens.refresh();
    tokio::time::sleep(Duration::from_millis(100)).await;
    w.tokens.set(w.tokens.current().unwrap()).await.unwrap();
    refresh.await.unwrap();
    // Three more refreshes, each with the refresh token the last one got.
    for _ in 0..3 {
        w.tokens.refresh().await.unwrap();
    }
    let stats = w.auth.stats();
    assert_eq!(stats.refresh_grants, 4);
    assert_eq!(stats.reuse_detected, 0);
    assert!(!w.tokens.is_session_expired());
}

#[tokio::test(start_paused = true)]
async fn expired_access_tokens_beside_rotated_refresh_tokens_do_not_lose_the_session() {
    // The real server rotates; the first two answers reach the manager
    // already expired (a clock far off, a slow proxy).
    let auth = AuthServer::start(AuthConfig::default().access_lifetime(HOUR))
        .await
        .unwrap();
    let grant = Arc::new(support::grant(&auth, hyper_client()));
    let calls = Arc::new(AtomicUsize::new(0));
    let source = source::from_fn(move |current: Option<TokenSet>| {
        let (grant, calls) = (grant.clone(), calls.clone());
        async move {
            let set = grant.fetch(current.as_ref()).await?;
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                let past = tokio::time::Instant::now() - Duration::from_secs(1);
                return Ok(set.with_expires_at(Some(past)));
            }
            Ok(set)
        }
    });
    let tokens = TokenManager::builder(source)
        .initial(auth.login().token_set())
        .backoff(Duration::ZERO, Duration::ZERO)
        .build();
    let fresh = tokens.refresh().await.unwrap();
    let header = fresh.header().to_str().unwrap().to_owned();
    let stats = auth.stats();
    assert_eq!(stats.refresh_grants, 3, "each presenting the newest token");
    assert_eq!(stats.reuse_detected, 0);
    assert!(auth.is_access_token_valid(header.trim_start_matches("Bearer ")));
    tokens.refresh().await.unwrap();
    assert_eq!(auth.stats().reuse_detected, 0);
}
